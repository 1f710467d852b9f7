"""FedBuff (Nguyen, Malik, Zhao, Rabbat, Sanjabi, Huba, "Federated Learning with Buffered
Asynchronous Aggregation", AISTATS 2022) over LoRA, alone and with EcoLoRA.

The server never waits for a round: ``concurrency`` clients train at any time, each from the
model version v it downloaded; their updates arrive whenever they finish (the simulated-time loop
is :mod:`ecolora.sim.async_runner`). With the server at version V:

1. Dispatch: an idle client gets the current global LoRA P^V (config ``round = version = V``).
2. Client i trains from it and uploads its update U_i = P_i - P^{v_i} (a delta, since by the time
   it arrives the global has moved on).
3. Buffer: updates are folded into a running sum as they arrive; once M = ``buffer_size`` updates
   are in, the server takes one step (Algorithm 1 of the paper, with sample weights):

       P^{V+1} = P^V + eta_g * sum_{i in buffer} p_i w(s_i) U_i,   p_i = n_i / sum_{j in buffer} n_j,
       s_i = V - v_i  (staleness: server steps since the client's download),
       w(s) = (1 + s)^{-a},  a = ``staleness_exponent`` (the paper's choice a = 1/2: 1/sqrt(1 + s)).

   The normaliser is sum_j n_j, not sum_j n_j w(s_j): a buffer of stale updates moves the model
   less than a fresh one, which is the point of the down-weighting.

``fedbuff+ecolora`` (:class:`FedBuffEcoLoRA`): the EcoLoRA wrapper drives the client side and the
segment aggregation unchanged; what changes is the clock:

* the segment of a dispatch is its dispatch index mod N_s (eq. 2 with the dispatch order as
  the position), so consecutive dispatches cover all segments;
* staleness mixing (eq. 3) uses model versions: a client last seen at version tau that downloads
  version V mixes with weight e^{-beta (V - tau)};
* the download replica (``aggregate: delta``) moves at most once per version, however many
  clients are dispatched at it; every dispatch gets fp16(Q_V - V_c), V_c the client's copy;
* each buffered update enters EcoLoRA's per-segment mean scaled by eta_g w(s_i).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ecolora.config import RunConfig
from ecolora.strategies.base import (
    ClientRuntime,
    Message,
    clip_delta_reply,
    train_metrics,
)
from ecolora.strategies.ecolora import EcoLoRA
from ecolora.strategies.fedit import FedIT

__all__ = ["FedBuff", "FedBuffEcoLoRA", "staleness_weight"]


def staleness_weight(staleness: int, exponent: float = 0.5) -> float:
    """w(s) = (1 + s)^-a; a = 0.5 gives FedBuff's 1/sqrt(1 + s)."""
    if staleness < 0:
        raise ValueError(f"staleness must be >= 0 (server steps since the download), got {staleness}.")
    return float((1.0 + staleness) ** -exponent)


class _Versioned:
    """Model-version bookkeeping shared by both FedBuff variants (mixed into a Strategy)."""

    config: RunConfig
    version: int

    def _stamp(self, server_step: int, replies: Mapping[int, Message]) -> tuple[dict[int, Message], list[int]]:
        """Replies re-stamped with the step being aggregated (so the base validation accepts an
        update answering an older version) and each reply's staleness. A reply claiming a version
        the server never had keeps its own ``round`` and is rejected by the validation."""
        out, staleness = {}, []
        for job, reply in replies.items():
            version = reply.config.get("version")
            if isinstance(version, int) and not isinstance(version, bool) and 0 <= version <= self.version:
                staleness.append(self.version - version)
                reply = Message(config={**reply.config, "round": server_step}, tensors=reply.tensors,
                                num_examples=reply.num_examples, metrics=reply.metrics)
            out[job] = reply
        return out, staleness

    def _staleness_weight(self, reply: Message) -> float:
        fb = self.config.fedbuff
        return fb.server_lr * staleness_weight(self.version - int(reply.config["version"]), fb.staleness_exponent)


class FedBuff(_Versioned, FedIT):
    """Buffered asynchronous FedAvg of LoRA deltas with staleness weights (module docstring)."""

    name = "fedbuff"

    def __init__(self, config: RunConfig, initial_lora: Mapping[str, torch.Tensor]) -> None:
        super().__init__(config, initial_lora)
        self.version = 0

    # ---- server ------------------------------------------------------------------------------
    def configure_round(self, server_round: int, client_ids: list[int]) -> dict[int, Message]:
        """Dispatch ``client_ids`` at the current version (``server_round`` is ignored: the version rules)."""
        snapshot = {k: v.clone() for k, v in self.global_state.items()}
        config = {"round": self.version, "version": self.version}
        return {cid: Message(config=dict(config), tensors=dict(snapshot)) for cid in client_ids}

    def aggregate_round(self, server_round: int, replies: Mapping[int, Message]) -> dict[str, Any]:
        """One server step over a full buffer; ``replies`` are keyed by job (a client may appear twice)."""
        stamped, staleness = self._stamp(server_round, replies)
        metrics = super().aggregate_round(server_round, stamped)
        return {**metrics, "staleness": staleness, "model_version": self.version}

    def fold_begin(self, server_round: int) -> None:
        self._sum = {k: torch.zeros_like(v) for k, v in self.global_state.items()}
        self._weight_sum = 0.0

    def fold(self, client_id: int, reply: Message) -> None:
        w = self._staleness_weight(reply)
        for k, acc in self._sum.items():
            acc.add_(reply.tensors[k].float(), alpha=float(reply.num_examples) * w)
        self._weight_sum += float(reply.num_examples)

    def fold_end(self, server_round: int) -> dict[str, Any]:
        self.global_state = {k: v + self._sum[k] / self._weight_sum for k, v in self.global_state.items()}
        self._sum = {}
        self.version += 1
        return {}

    def clip_reply(self, reply: Message, max_norm: float) -> tuple[Message, float]:
        """Clip the delta U_i itself."""
        return clip_delta_reply(reply, max_norm)

    # ---- client ------------------------------------------------------------------------------
    def client_round(self, runtime: ClientRuntime, message: Message) -> Message:
        start = self._complete(message.tensors)
        runtime.set_lora(start)
        self.before_training(runtime)
        result = runtime.train(int(message.config["round"]), message.config)
        local = runtime.get_lora()
        version = int(message.config["version"])
        return Message(
            config={"round": version, "version": version},
            tensors={k: local[k].float() - start[k].float() for k in self.global_state},
            num_examples=result.num_examples, metrics=train_metrics(result),
        )

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "version": self.version}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.version = int(state["version"])


class FedBuffEcoLoRA(_Versioned, EcoLoRA):
    """EcoLoRA's segments, mixing and sparsification driven by FedBuff's asynchronous clock."""

    def __init__(self, config: RunConfig, initial_lora: Mapping[str, torch.Tensor]) -> None:
        super().__init__(FedIT(config, initial_lora), config, initial_lora)
        self.name = "fedbuff+ecolora"
        self.version = 0
        self.num_dispatched = 0
        self._prepared_version: int | None = None

    # ---- server ------------------------------------------------------------------------------
    def configure_round(self, server_round: int, client_ids: list[int]) -> dict[int, Message]:
        """Dispatch at the current version; segments follow the dispatch order."""
        version = self.version
        if self._prepared_version != version:  # first dispatch at this version: move the replica once
            messages = super().configure_round(version, client_ids)
            self._prepared_version = version
        else:
            messages = {cid: self._message_at_prepared_version(version, cid) for cid in client_ids}
        for cid in client_ids:
            # eq. 2 with the dispatch index as the position (and no round offset)
            messages[cid].config.update(segment=self.compressor.segment(self.num_dispatched, 0), version=version)
            self.num_dispatched += 1
        return messages

    def _message_at_prepared_version(self, version: int, cid: int) -> Message:
        density_a, density_b = self.densities()
        config = {"round": version, "density_a": density_a, "density_b": density_b, "download": "dense"}
        if not self.compressor.sparse_download:
            return Message(config=config, tensors={k: v.clone() for k, v in self.global_state.items()})
        config["download"] = "delta"
        return Message(config=config, tensors=self.compressor.require_replica().delta_for(cid))

    def aggregate_round(self, server_round: int, replies: Mapping[int, Message]) -> dict[str, Any]:
        """Scale each buffered update by eta_g w(s_i), then EcoLoRA's per-segment aggregation."""
        stamped, staleness = self._stamp(server_round, replies)
        scaled = {}
        for job, reply in stamped.items():
            if reply.config.get("round") == server_round:
                w = self._staleness_weight(reply)
                reply = Message(config=reply.config, tensors={k: v.float() * w for k, v in reply.tensors.items()},
                                num_examples=reply.num_examples, metrics=reply.metrics)
            scaled[job] = reply
        metrics = super().aggregate_round(server_round, scaled)
        if not metrics.get("no_update", False):
            self.version += 1
        return {**metrics, "staleness": staleness, "model_version": self.version}

    # ---- client ------------------------------------------------------------------------------
    def client_round(self, runtime: ClientRuntime, message: Message) -> Message:
        reply = super().client_round(runtime, message)
        reply.config["version"] = int(message.config["version"])
        return reply

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "version": self.version, "num_dispatched": self.num_dispatched,
                "prepared_version": self._prepared_version}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.version, self.num_dispatched = int(state["version"]), int(state["num_dispatched"])
        self._prepared_version = state["prepared_version"]
