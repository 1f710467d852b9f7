"""The in-process transport: every message is packed to bytes, measured, and parsed back.

Nothing passes between server and client objects except these bytes, so the ledger measures
what a network would carry (style point 6: byte accounting wraps the transport). A message's
size is its codec payload plus its JSON config (round, segment id, densities, metrics).
"""

from __future__ import annotations

import json
import math

from ecolora import codec
from ecolora.network.ledger import ByteLedger, Direction
from ecolora.strategies.base import Message, Strategy

__all__ = ["InProcessTransport", "count_params"]


def count_params(payload: bytes) -> int:
    """Values actually sent: all elements of densely coded tensors, non-zeros of sparse ones."""
    return sum(math.prod(t["shape"]) if t["encoding"] == "dense" else int(t["nnz"]) for t in codec.describe(payload))


class InProcessTransport:
    def __init__(self, strategy: Strategy, ledger: ByteLedger) -> None:
        self.strategy = strategy
        self.ledger = ledger

    def send(self, server_round: int, client: int, direction: Direction, message: Message, channel: str = "global") -> Message:
        """Serialize ``message``, record its size, and return what the receiver parses."""
        payload = self.strategy.pack(message, direction)
        header = Strategy.pack_config(message.config, message.num_examples, message.metrics)
        self.ledger.record(server_round, client, direction, len(payload) + len(header), count_params(payload), channel)
        body = json.loads(header)
        return Message(
            config=body["config"],
            tensors=self.strategy.unpack(payload),
            num_examples=int(body["num_examples"]),
            metrics={k: float(v) for k, v in body["metrics"].items()},
        )
