"""Seeded client faults of the synchronous loop: dropouts, stragglers, broken uploads, diverged LoRA.

Each sampled client of each round draws its fault from ``np.random.default_rng([seed, round,
client, 0xFA])``: the same run gets the same faults whatever else draws random numbers, and a
resumed run gets the faults the uninterrupted run got (nothing to checkpoint). With probabilities
``faults.dropout``, ``faults.straggler``, ``faults.upload_failure`` and ``faults.nonfinite``
(independent draws, checked in this order, so a client has at most one fault):

* ``dropout``: the client received the round's message and ran its local round (its persistent
  state advances, as a client whose connection died after training), but never replies: no upload
  bytes; listed in the round's ``dropped``.
* ``straggler``: the reply arrives after the round's deadline. Its bytes crossed the network and
  are in the ledger (it is what a link carried), but the server discards it unread; ``dropped``.
* ``upload_failure``: the connection breaks mid-upload: only the first ``floor(u * len)`` bytes of
  the codec payload arrive (u uniform in [0, 1)), after the JSON header. The ledger counts the
  bytes that arrived (0 values); the server's ``unpack`` raises :class:`~ecolora.codec.CodecError`
  and the reply is ``rejected`` with reason ``payload: ...`` and the codec's message.

* ``nonfinite``: local training ends with NaN and +inf in the client's LoRA (a diverged run, an
  fp16 overflow). The client checks its LoRA before compressing it and replies without tensors,
  declaring ``non_finite: ...``; the server rejects the reply with that reason
  (:func:`~ecolora.strategies.validation.nonfinite_reason`); nothing of it enters any state.

Every message still goes through the codec, so these faults exercise the same paths a network
would: nothing is skipped by a flag the server can read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from ecolora.config import FaultConfig
from ecolora.sim.executor import Reply
from ecolora.sim.transport import WireMessage
from ecolora.strategies.base import ClientRuntime, LowRank, TrainResult, adapter_runtime

__all__ = ["FAULT_KINDS", "ClientFault", "NonFiniteLoRA", "draw_fault", "fault_reply", "faulty_runtime", "runtime_fault"]

FAULT_KINDS = ("dropout", "straggler", "upload_failure", "nonfinite")
_STREAM = 0xFA  # keeps these draws apart from any other seeded stream


@dataclass(frozen=True)
class ClientFault:
    kind: str  # one of FAULT_KINDS
    cut_fraction: float = 0.0  # upload_failure: fraction of the payload that arrives, in [0, 1)


def draw_fault(faults: FaultConfig, seed: int, server_round: int, client_id: int) -> ClientFault | None:
    """The fault of ``client_id`` in ``server_round`` (None: none); deterministic in its inputs."""
    if not (faults.dropout or faults.straggler or faults.upload_failure or faults.nonfinite):
        return None
    u = np.random.default_rng([seed % 2**32, server_round, client_id, _STREAM]).random(5)
    if u[0] < faults.dropout:
        return ClientFault("dropout")
    if u[1] < faults.straggler:
        return ClientFault("straggler")
    if u[2] < faults.upload_failure:
        return ClientFault("upload_failure", float(u[3]))
    if u[4] < faults.nonfinite:
        return ClientFault("nonfinite")
    return None


class NonFiniteLoRA:
    """A client whose LoRA tensors hold NaN (first entry) and +inf (last entry) once it has trained."""

    def __init__(self, client: ClientRuntime) -> None:
        self.client = client
        self.client_id, self.num_examples, self.state = client.client_id, client.num_examples, client.state
        self.trained = False

    def get_lora(self) -> dict[str, torch.Tensor]:
        lora = self.client.get_lora()
        if not self.trained:
            return lora
        out = {}
        for name, tensor in lora.items():
            flat = tensor.detach().clone().reshape(-1)
            flat[0], flat[-1] = float("nan"), float("inf")
            out[name] = flat.reshape(tensor.shape)
        return out

    def set_lora(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self.client.set_lora(tensors)

    def train(self, server_round: int, config: Mapping[str, Any]) -> TrainResult:
        result = self.client.train(server_round, config)
        self.trained = True
        return result

    def freeze(self, predicate: Callable[[str], bool]) -> None:
        self.client.freeze(predicate)

    def use_rank(self, rank: int) -> None:
        adapter_runtime(self.client).use_rank(rank)

    def merge_into_base(self, tag: str, factors: Mapping[str, LowRank]) -> None:
        adapter_runtime(self.client).merge_into_base(tag, factors)


def faulty_runtime(client: ClientRuntime, fault: ClientFault | None) -> ClientRuntime:
    """The client as its local round sees it under ``fault`` (only ``nonfinite`` acts there)."""
    return NonFiniteLoRA(client) if fault is not None and fault.kind == "nonfinite" else client


def runtime_fault(fault: ClientFault | None) -> Callable[[ClientRuntime], ClientRuntime] | None:
    """What ``fault`` does to the client's local round (:attr:`ecolora.sim.executor.Job.as_seen`):
    only ``nonfinite`` acts there; None for the others."""
    return NonFiniteLoRA if fault is not None and fault.kind == "nonfinite" else None


def fault_reply(reply: Reply, fault: ClientFault | None) -> tuple[Reply, str | None]:
    """``reply`` as the server gets it under ``fault``, and why it is dropped (None: it is received).

    A dropped straggler's reply still crosses the link (the loop records its bytes, then discards
    it); a dropout's never does; a broken upload keeps its header and the first
    ``floor(u * len)`` bytes of its payload, and is received (and rejected when it does not decode).
    ``nonfinite`` acted during the local round (:func:`faulty_runtime`): its reply is sent as is.
    """
    if fault is None or fault.kind == "nonfinite" or reply.wire is None:
        return reply, None
    if fault.kind == "dropout":
        return replace(reply, wire=None, message=None), "dropout: the client never replied"
    if fault.kind == "straggler":
        return reply, "straggler: the reply arrived after the round deadline"
    payload = reply.wire.payload
    arrived = WireMessage(payload=payload[: int(fault.cut_fraction * len(payload))], header=reply.wire.header)
    return replace(reply, wire=arrived), None
