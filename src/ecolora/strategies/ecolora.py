"""EcoLoRA (Liu et al., "EcoLoRA: Communication-Efficient Federated Fine-Tuning of Large Language
Models", arXiv 2506.02001, EMNLP 2025) as a wrapper over FedIT and FFA-LoRA.

Per round t, with the base method deciding which LoRA tensors are trained and exchanged (the
compression state lives in :class:`~ecolora.compress.EcoLoRACompressor`):

1. Server: densities k_t^A, k_t^B from the loss schedule (eq. 4)
       k_t = k_min + (k_max - k_min) * exp(-gamma * (L_0 - L_{t-1})).
2. Download (server -> client), sparsified with error feedback (eqs. 5-6); the server records
   every client's copy as it sent it (:class:`~ecolora.compress.DownloadReplica`), so the copies
   stay bit-identical and a returning client gets what it missed. ``ecolora.aggregate``:
   - ``delta`` (default): the server keeps Q, the replica clients hold, and moves it by
     D_t = fp16(SC_k(P^t - Q_{t-1})); client c receives fp16(Q_t - V_c) and adds it.
   - ``paper``: parameter values with explicit masks: the values of P^t at the top-k of
     |P^t - V_c| (the residual R_c = P^t - V_c, eq. 6); the client overwrites those entries.
3. Client: staleness-decayed mixing (eq. 3) of the received global G with its own last local LoRA
       start = (1 - e^{-beta (t - tau)}) G + e^{-beta (t - tau)} P_i^tau,
   a first-time client starts from G; then local training. A LoRA with NaN/Inf is not compressed:
   the reply declares ``non_finite`` and the server rejects it.
4. Upload (client -> server): only segment s = (j + t) mod N_s of the flattened exchanged LoRA
   (eq. 2). ``delta``: the update U_i = local - start, top-k with the client's residual, rounded
   to fp16 with the rounding error kept in the residual. ``paper``: the parameter values of the
   segment at the top-k of |P_i[s] - G_i[s]| with their mask (G_i: the client's copy of the
   global, which the server knows), S_i[s] = those values, G_i[s] elsewhere.
5. Server: each segment is averaged over its uploaders weighted by sample counts; a segment
   without uploader keeps its value. ``delta``: P[s] += sum_i n_i U_i[s] / sum_i n_i.
   ``paper`` (eq. 2): P[s] = sum_i n_i S_i[s] / sum_i n_i.
6. Every message is ``ecolora.codec.pack`` bytes (Golomb-coded positions, fp16 values).

Ablations (paper Table 3): ``segments: false``, ``sparsification: none | fixed`` (at the
adaptive run's budget), ``encoding: coo`` (16-bit indices + fp16 values), ``value_coding: raw``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from ecolora.compress.ecolora import EcoLoRACompressor, density_fn
from ecolora.compress.masked import MASK_SUFFIX, apply_masked, join_masked, split_masked
from ecolora.config import RunConfig
from ecolora.strategies.base import (
    ClientRuntime,
    Message,
    Strategy,
    clip_delta_reply,
    clip_factor,
    overlay_lora,
    train_metrics,
)
from ecolora.strategies.fedit import FedIT, FFALoRA
from ecolora.strategies.validation import CLIENT_REJECTION_KEY, nonfinite_reason

__all__ = ["EcoLoRA", "ecolora_fedit", "ecolora_ffa", "mixing_weight"]


def mixing_weight(beta: float, server_round: int, last_round: int) -> float:
    """Weight e^{-beta (t - tau)} of the client's own stale LoRA in eq. 3."""
    return math.exp(-beta * (server_round - last_round))


class EcoLoRA(Strategy):
    """Segments + staleness mixing + adaptive sparsification + lossless coding over ``inner``.

    Everything EcoLoRA compresses with (densities, losses, segments, replica, residuals) is in
    ``self.compressor`` (:class:`~ecolora.compress.EcoLoRACompressor`).
    """

    def __init__(self, inner: FedIT, config: RunConfig, initial_lora: Mapping[str, torch.Tensor]) -> None:
        super().__init__(config, initial_lora)
        self.inner = inner
        self.name = f"{inner.name}+ecolora"
        self.eco = config.ecolora
        self.global_state = {k: v.clone() for k, v in self.initial_lora.items() if inner.exchanged(k)}
        self.compressor = EcoLoRACompressor(self.eco, self.global_state)
        self.layout = self.compressor.require_layout()

    def densities(self) -> tuple[float, float]:
        return self.compressor.densities()

    # ---- server ------------------------------------------------------------------------------
    @property
    def paper(self) -> bool:
        """Whether eqs. 2-6 apply on parameters (``ecolora.aggregate: paper``)."""
        return self.eco.aggregate == "paper"

    def configure_round(self, server_round: int, client_ids: list[int]) -> dict[int, Message]:
        density_a, density_b = self.densities()
        comp = self.compressor
        if comp.sparse_download and not self.paper:
            comp.require_replica().advance(self.global_state, density_fn(density_a, density_b))
        # Dense downloads share one snapshot: the server's memory does not grow with the clients.
        snapshot = {k: v.clone() for k, v in self.global_state.items()}
        messages = {}
        for position, cid in enumerate(client_ids):
            config = {
                "round": server_round, "segment": comp.segment(position, server_round),
                "density_a": density_a, "density_b": density_b, "download": "dense",
            }
            config["download"], tensors = self._download(cid, snapshot, density_a, density_b)
            messages[cid] = Message(config=config, tensors=tensors)
        self.remember_asked(server_round, messages)
        return messages

    def _download(self, client_id: int, snapshot: dict[str, torch.Tensor], density_a: float,
                  density_b: float) -> tuple[str, dict[str, torch.Tensor]]:
        """(download kind, tensors) for one client; its copy is recorded by the replica."""
        replica = self.compressor.require_replica()
        if self.paper:
            dens = (density_a, density_b) if self.compressor.sparse_download else (1.0, 1.0)
            sent = replica.values_for(client_id, self.global_state, density_fn(*dens), self.eco.error_feedback)
            return "masked", split_masked(sent)
        if self.compressor.sparse_download:
            return "delta", replica.delta_for(client_id)
        return "dense", dict(snapshot)

    def expected_shapes(self, client_id: int, asked: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        """The 1-D pieces of the segment the client was asked for (eq. 2); ``paper``: and each
        piece's optional ``@zeros`` mask."""
        pieces: dict[str, tuple[int, ...]] = {
            name: (end - start,) for name, start, end in self.layout.pieces(int(asked["segment"]))}
        if not self.paper:
            return pieces
        return {**pieces, **{k + MASK_SUFFIX: shape for k, shape in pieces.items()}}

    def max_message_numel(self) -> int:
        """Every message carries at most the whole exchanged LoRA (both directions); ``paper``:
        and its ``@zeros`` masks."""
        return 2 * self.layout.numel if self.paper else self.layout.numel

    # Streaming step 5: per segment s a running sum S_s = sum_i n_i X_i[s] and W_s = sum_i n_i,
    # X_i = U_i (delta) or S_i (paper); the segments are disjoint, so all sums together take one
    # LoRA's memory whatever the number of clients.
    def fold_begin(self, server_round: int) -> None:
        self._sums: dict[int, dict[str, torch.Tensor]] = {}
        self._weights: dict[int, float] = {}
        self._loss_sums = [0.0, 0.0, 0.0]  # sum n_i L_i, sum n_i L_i^0, sum n_i
        self._values = [0, 0]  # values kept, values offered (this round's upload density)

    def fold(self, client_id: int, reply: Message) -> None:
        segment = int(reply.config["segment"])
        n = float(reply.num_examples)
        acc = self._sums.get(segment)
        if acc is None:
            acc = self._sums[segment] = {name: torch.zeros(b - a) for name, a, b in self.layout.pieces(segment)}
        for k, piece in self._upload_values(client_id, segment, reply).items():
            acc[k].add_(piece, alpha=n)
        self._weights[segment] = self._weights.get(segment, 0.0) + n
        for i, value in enumerate((reply.metrics["train_loss"], reply.metrics["initial_loss"], 1.0)):
            self._loss_sums[i] += n * float(value)

    def _upload_values(self, client_id: int, segment: int, reply: Message) -> dict[str, torch.Tensor]:
        """X_i[s] of one reply: U_i (delta), or S_i = the sent values over the client's copy (paper)."""
        if not self.paper:
            pieces = {k: v.reshape(-1).float() for k, v in reply.tensors.items()}
            self._values[0] += sum(int(torch.count_nonzero(v)) for v in pieces.values())
            self._values[1] += sum(v.numel() for v in pieces.values())
            return pieces
        sent = join_masked(reply.tensors)
        base = self.layout.extract(self.compressor.require_replica().view(client_id), segment)
        self._values[0] += sum(int(m.mask.sum()) for m in sent.values())
        self._values[1] += sum(v.numel() for v in base.values())
        return {k: apply_masked(base[k], sent[k]) for k in base}

    def fold_end(self, server_round: int) -> dict[str, Any]:
        for segment in sorted(self._sums):
            mean = {k: v / self._weights[segment] for k, v in self._sums[segment].items()}
            if not self.paper:  # P[s] += sum_i n_i U_i[s] / sum_i n_i
                current = self.layout.extract(self.global_state, segment)
                mean = {k: current[k] + v for k, v in mean.items()}
            self.layout.insert(self.global_state, segment, mean)
        train_sum, initial_sum, total = self._loss_sums
        self.compressor.observe_losses(train_sum / total, initial_sum / total)
        segments_updated = len(self._sums)
        kept, offered = self._values
        self._sums, self._weights = {}, {}
        density_a, density_b = self.densities()
        return {"segments_updated": segments_updated, "next_density_a": density_a, "next_density_b": density_b,
                "upload_density": kept / offered if offered else None}

    def aggregate_add(self, client_id: int, reply: Message) -> str | None:
        self._adding = client_id  # paper-mode clipping reads that client's copy
        return super().aggregate_add(client_id, reply)

    def _client_of(self, reply: Message) -> int:
        del reply
        return self._adding

    def clip_reply(self, reply: Message, max_norm: float) -> tuple[Message, float]:
        """Clip the update: the sent pieces (delta) or, in paper mode, the sent values minus the
        client's copy at the sent entries (entries not sent stay unsent)."""
        if not self.paper:
            return clip_delta_reply(reply, max_norm)
        sent = join_masked(reply.tensors)
        base = self.layout.extract(self.compressor.require_replica().view(self._client_of(reply)), int(reply.config["segment"]))
        update = {k: m.values - base[k][m.mask] for k, m in sent.items()}
        factor, norm = clip_factor(sum(float(u.square().sum()) for u in update.values()), max_norm)
        if factor < 1.0:
            tensors = dict(reply.tensors)
            tensors.update({k: base[k][m.mask] + factor * update[k] for k, m in sent.items()})
            reply = Message(config=reply.config, tensors=tensors, num_examples=reply.num_examples, metrics=reply.metrics)
        return reply, norm

    def global_lora(self) -> dict[str, torch.Tensor]:
        return overlay_lora(self.initial_lora, self.global_state)

    # ---- client ------------------------------------------------------------------------------
    def client_round(self, runtime: ClientRuntime, message: Message) -> Message:
        cfg = message.config
        server_round = int(cfg["round"])
        state = runtime.state
        initial = {k: v for k, v in self.initial_lora.items() if self.inner.exchanged(k)}
        view = self._receive(state.get("view", initial), cfg["download"], message.tensors)
        start = view
        if "local" in state:  # eq. 3: staleness-decayed mixing with the client's own last LoRA
            w = mixing_weight(self.eco.beta, server_round, int(state["tau"]))
            start = {k: (1 - w) * view[k] + w * state["local"][k] for k in view}
        runtime.set_lora(self.inner._complete(start))
        self.inner.before_training(runtime)
        result = runtime.train(server_round, cfg)
        local = {k: v for k, v in runtime.get_lora().items() if k in initial}
        segment = int(cfg["segment"])
        reason = nonfinite_reason(local)
        if reason is not None:  # validate before compressing: nothing of it enters any state
            state.update(view=view)
            return Message(config={"round": server_round, "segment": segment, CLIENT_REJECTION_KEY: reason},
                           num_examples=result.num_examples, metrics=train_metrics(result))
        state.update(view=view, local=local, tau=server_round)
        density_a, density_b = float(cfg["density_a"]), float(cfg["density_b"])
        if self.paper:  # the segment's parameters at the top-k of |P_i - G_i| (eqs. 5-6), with masks
            base = self._segment(view, segment)
            pieces = split_masked(self.compressor.select_values(self._segment(local, segment), base, density_a, density_b))
        else:
            outgoing = {k: local[k] - start[k] for k in local}
            pieces = self.compressor.compress(state, f"up/{segment}", self._segment(outgoing, segment), density_a, density_b)
        return Message(config={"round": server_round, "segment": segment}, tensors=pieces,
                       num_examples=result.num_examples, metrics=train_metrics(result))

    def _segment(self, tensors: Mapping[str, torch.Tensor], segment: int) -> dict[str, torch.Tensor]:
        if self.layout.num_segments == 1:
            return {k: v.reshape(-1) for k, v in tensors.items()}
        return self.layout.extract(tensors, segment)

    @staticmethod
    def _receive(previous: Mapping[str, torch.Tensor], kind: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The client's new copy of the global from a download (the server records the same)."""
        if kind == "delta":
            return {k: previous[k] + tensors[k].float() for k in previous}
        if kind == "masked":
            sent = join_masked(tensors)
            return {k: apply_masked(previous[k], sent[k]) for k in previous}
        return {k: tensors[k].float() for k in previous}

    # ---- wire --------------------------------------------------------------------------------
    def pack(self, message: Message, direction: str) -> bytes:
        return self.compressor.pack(message.tensors)

    # ---- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"global_state": self.global_state, "compressor": self.compressor.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.global_state = {k: v.clone() for k, v in state["global_state"].items()}
        self.compressor.load_state_dict(state["compressor"])


def ecolora_fedit(config: RunConfig, initial_lora: Mapping[str, torch.Tensor]) -> EcoLoRA:
    """``fedit+ecolora`` (:mod:`ecolora.methods`)."""
    return EcoLoRA(FedIT(config, initial_lora), config, initial_lora)


def ecolora_ffa(config: RunConfig, initial_lora: Mapping[str, torch.Tensor]) -> EcoLoRA:
    """``ffa+ecolora`` (:mod:`ecolora.methods`)."""
    return EcoLoRA(FFALoRA(config, initial_lora), config, initial_lora)
