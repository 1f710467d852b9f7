"""The in-process transport: every message is packed to bytes, measured, and parsed back.

Nothing passes between server and client objects except these bytes, so the ledger measures
what a network would carry (style point 6: byte accounting wraps the transport). A message's
size is its codec payload plus its JSON config (round, segment id, densities, metrics):
:class:`WireMessage`, the same two byte strings the Flower apps carry (:mod:`ecolora.flower.records`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import torch

from ecolora import codec
from ecolora.network.ledger import ByteLedger, Direction
from ecolora.strategies.base import Message, Strategy

__all__ = [
    "InProcessTransport",
    "PayloadError",
    "WireMessage",
    "count_params",
    "decode_message",
    "encode_message",
    "safe_count_params",
]


class PayloadError(ValueError):
    """A message does not carry a well-formed ecolora payload and header."""


@dataclass(frozen=True)
class WireMessage:
    """One ecolora message as bytes: the codec payload and the JSON header."""

    payload: bytes
    header: bytes

    @property
    def num_bytes(self) -> int:
        """What the byte ledger records (the same convention on every engine)."""
        return len(self.payload) + len(self.header)


def count_params(payload: bytes) -> int:
    """Values actually sent: all elements of densely coded tensors, non-zeros of sparse ones."""
    return sum(math.prod(t["shape"]) if t["encoding"] == "dense" else int(t["nnz"]) for t in codec.describe(payload))


def safe_count_params(payload: bytes) -> int:
    """:func:`count_params` of a payload that may be damaged (a reply): 0 when its manifest cannot be read."""
    try:
        return count_params(payload)
    except (codec.CodecError, ValueError, KeyError, TypeError, IndexError):
        return 0


def encode_message(strategy: Strategy, message: Message, direction: str, exact: bool = False) -> WireMessage:
    """Serialize with the strategy's own codec settings (``Strategy.pack`` / ``pack_config``).

    ``exact=True``: every tensor in its own dtype and metrics as full-precision JSON numbers, for a
    message that is no network traffic of the algorithm (HierFedLoRA's leader talking to its own
    trainer when the two run in different processes, :mod:`ecolora.sim.executor`).
    """
    if exact:
        payload = codec.pack(message.tensors, value_dtype=torch.float64, encoding="dense")
        body = {"config": dict(message.config), "num_examples": message.num_examples,
                "metrics": {k: float(v) for k, v in message.metrics.items()}}  # fmt: skip
        return WireMessage(payload, json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    return WireMessage(
        payload=strategy.pack(message, direction),
        header=Strategy.pack_config(message.config, message.num_examples, message.metrics),
    )


def decode_message(strategy: Strategy, wire: WireMessage) -> Message:
    """Parse a :class:`WireMessage` back into a Message; any defect raises :class:`PayloadError`."""
    try:
        body = json.loads(wire.header)
        config, num_examples, metrics = body["config"], body["num_examples"], body["metrics"]
        if not isinstance(config, dict) or not isinstance(metrics, dict):
            raise TypeError("config and metrics must be JSON objects")
        metrics = {str(k): float(v) for k, v in metrics.items()}
        num_examples = int(num_examples)
    except (ValueError, KeyError, TypeError) as exc:
        raise PayloadError(f"Message header is not an ecolora JSON header ({exc}).") from exc
    try:
        tensors = strategy.unpack(wire.payload)
    except (ValueError, TypeError, IndexError, OverflowError) as exc:  # CodecError is a ValueError
        raise PayloadError(f"Payload of {len(wire.payload)} bytes does not decode: {exc}") from exc
    return Message(config=config, tensors=tensors, num_examples=num_examples, metrics=metrics)


class InProcessTransport:
    def __init__(self, strategy: Strategy, ledger: ByteLedger) -> None:
        self.strategy = strategy
        self.ledger = ledger

    def send(self, server_round: int, client: int, direction: Direction, message: Message, channel: str = "global") -> Message:
        """Serialize ``message``, record its size, and return what the receiver parses."""
        return self.deliver(server_round, client, direction, encode_message(self.strategy, message, direction), channel)

    def deliver(self, server_round: int, client: int, direction: Direction, wire: WireMessage,
                channel: str = "global") -> Message:
        """Record the size of bytes already packed and return what the receiver parses."""
        self.ledger.record(server_round, client, direction, wire.num_bytes, count_params(wire.payload), channel)
        body = json.loads(wire.header)
        return Message(
            config=body["config"],
            tensors=self.strategy.unpack(wire.payload),
            num_examples=int(body["num_examples"]),
            metrics={k: float(v) for k, v in body["metrics"].items()},
        )
