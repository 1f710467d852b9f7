"""Seeded client faults for the in-process runner: dropouts, stragglers and broken uploads.

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
  and the reply is ``rejected`` with reason ``payload: <the codec's message>``.

* ``nonfinite``: local training ends with NaN and +inf in the client's LoRA (a diverged run, an
  fp16 overflow). The client checks its LoRA before compressing it and replies without tensors,
  declaring ``non_finite: ...``; the server rejects the reply with that reason
  (:func:`~ecolora.strategies.validation.nonfinite_reason`); nothing of it enters any state.

Every message still goes through the codec, so these faults exercise the same paths a network
would: nothing is skipped by a flag the server can read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ecolora.codec import CodecError
from ecolora.config import FaultConfig
from ecolora.sim.transport import InProcessTransport, count_params
from ecolora.strategies.base import ClientRuntime, Message, Strategy, TrainResult

__all__ = ["FAULT_KINDS", "ClientFault", "NonFiniteLoRA", "UploadOutcome", "draw_fault", "faulty_runtime", "upload"]

FAULT_KINDS = ("dropout", "straggler", "upload_failure", "nonfinite")
_STREAM = 0xFA  # keeps these draws apart from any other seeded stream


@dataclass(frozen=True)
class ClientFault:
    kind: str  # one of FAULT_KINDS
    cut_fraction: float = 0.0  # upload_failure: fraction of the payload that arrives, in [0, 1)


@dataclass
class UploadOutcome:
    """What the server got: a decoded reply, or why not (``dropped`` or ``rejected``)."""

    message: Message | None = None
    dropped: str | None = None  # dropout / straggler: the reply never entered aggregation
    rejected: str | None = None  # the bytes arrived but could not be decoded


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
        self.client.use_rank(rank)

    def merge_into_base(self, tag: str, deltas: Mapping[str, torch.Tensor]) -> None:
        self.client.merge_into_base(tag, deltas)


def faulty_runtime(client: ClientRuntime, fault: ClientFault | None) -> ClientRuntime:
    """The client as its local round sees it under ``fault`` (only ``nonfinite`` acts there)."""
    return NonFiniteLoRA(client) if fault is not None and fault.kind == "nonfinite" else client


def upload(
    transport: InProcessTransport, server_round: int, client_id: int, reply: Message, fault: ClientFault | None
) -> UploadOutcome:
    """Send ``reply`` to the server under ``fault``, recording the bytes that crossed."""
    if fault is not None and fault.kind == "dropout":
        return UploadOutcome(dropped="dropout: the client never replied")
    if fault is None or fault.kind == "nonfinite":  # a regular upload of what the client sends
        try:
            return UploadOutcome(message=transport.send(server_round, client_id, "up", reply))
        except CodecError as exc:
            return UploadOutcome(rejected=f"payload: {exc}")
    strategy: Strategy = transport.strategy
    payload = strategy.pack(reply, "up")
    header = Strategy.pack_config(reply.config, reply.num_examples, reply.metrics)
    if fault.kind == "straggler":
        transport.ledger.record(server_round, client_id, "up", len(payload) + len(header), count_params(payload))
        return UploadOutcome(dropped="straggler: the reply arrived after the round deadline")
    arrived = payload[: int(fault.cut_fraction * len(payload))]
    transport.ledger.record(server_round, client_id, "up", len(arrived) + len(header), 0)
    try:
        tensors = strategy.unpack(arrived)
    except CodecError as exc:
        return UploadOutcome(rejected=f"payload: {exc}")
    body = json.loads(header)  # a prefix that still decodes is judged like any reply
    return UploadOutcome(message=Message(config=body["config"], tensors=tensors,
                                         num_examples=int(body["num_examples"]), metrics=body["metrics"]))
