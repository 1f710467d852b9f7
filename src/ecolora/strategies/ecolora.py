"""EcoLoRA (Liu et al., "EcoLoRA: Communication-Efficient Federated Fine-Tuning of Large Language
Models", arXiv 2506.02001, EMNLP 2025) as a wrapper over FedIT and FFA-LoRA.

Per round t, with the base method deciding which LoRA tensors are trained and exchanged:

1. Server: densities k_t^A, k_t^B from the loss schedule (eq. 4)
       k_t = k_min + (k_max - k_min) * exp(-gamma * (L_0 - L_{t-1})).
2. Download (server -> client), sparsified with error feedback (eqs. 5-6). Two modes:
   - ``sparsify: update`` (default): the server keeps Q, the replica clients hold, and moves it
     by D_t = SC_k(P^t - Q_{t-1}) each round; the residual P - Q carries what was not sent.
     A client last synchronised in round tau receives Q_t - Q_tau (sparse; the initial LoRA is
     known to all from the shared seed, so tau = 0 needs no dense first message).
   - ``sparsify: params`` (the paper's literal form): the server sends SC_k(P^t + R) and the
     client keeps its previous value where nothing was sent.
3. Client: staleness-decayed mixing (eq. 3) of the received global G with its own last local LoRA
       start = (1 - e^{-beta (t - tau)}) G + e^{-beta (t - tau)} P_i^tau,
   a first-time client starts from G; then local training.
4. Upload (client -> server): only segment s = (j + t) mod N_s of the flattened exchanged LoRA
   (eq. 2), sparsified with the client's residual: the update (local minus start) in ``update``
   mode, the parameters themselves in ``params`` mode.
5. Server: each segment is averaged over its uploaders weighted by sample counts; a segment
   without uploader keeps its value. ``update``: P[s] += sum_i n_i U_i[s] / sum_i n_i.
   ``params``: P[s] = sum_i n_i V_i[s] / sum_i n_i, V_i = sent value or P[s] where not sent.
6. Every message is ``ecolora.codec.pack`` bytes (Golomb-coded positions, fp16 values).

Ablations (paper Table 3): ``segments: false``, ``sparsification: none | fixed``,
``encoding: coo`` (int32 indices + fp16 values).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from ecolora import codec
from ecolora.compress.ecolora import EcoLoRACompressor, density_fn
from ecolora.config import RunConfig
from ecolora.strategies.base import (
    ClientRuntime,
    Message,
    Strategy,
    clip_factor,
    get_strategy_class,
    overlay_lora,
)
from ecolora.strategies.fedit import FedIT, _train_metrics
from ecolora.strategies.validation import CLIENT_REJECTION_KEY, nonfinite_reason

__all__ = ["EcoLoRA", "build_ecolora", "mixing_weight"]


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
    def configure_round(self, server_round: int, client_ids: list[int]) -> dict[int, Message]:
        density_a, density_b = self.densities()
        comp = self.compressor
        replica = comp.require_replica()
        mode = self.eco.sparsify
        sparse_down = comp.sparse_download
        if sparse_down and mode == "update":
            replica.advance(self.global_state, density_fn(density_a, density_b), server_round)
        elif sparse_down:
            broadcast = comp.compress(comp.owner_state("server"), "down", self.global_state, density_a, density_b)
        # Messages share tensors (one dense snapshot, one delta per sync round): the server's
        # memory for a round's messages does not grow with the number of clients.
        snapshot = {k: v.clone() for k, v in self.global_state.items()} if not sparse_down else {}
        deltas: dict[int, dict[str, torch.Tensor]] = {}
        messages = {}
        for position, cid in enumerate(client_ids):
            config = {
                "round": server_round, "segment": comp.segment(position, server_round),
                "density_a": density_a, "density_b": density_b, "download": "dense",
            }
            if not sparse_down:
                tensors = dict(snapshot)
            elif mode == "update":
                tensors = replica.delta_for(cid, server_round, deltas)
                config["download"] = "delta"
            else:
                tensors = dict(broadcast)
                config["download"] = "sparse_params"
            messages[cid] = Message(config=config, tensors=tensors)
        replica.prune()
        self.remember_asked(server_round, messages)
        return messages

    def expected_shapes(self, client_id: int, asked: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        """The 1-D pieces of the segment the client was asked for (eq. 2)."""
        return {name: (end - start,) for name, start, end in self.layout.pieces(int(asked["segment"]))}

    def max_message_numel(self) -> int:
        """Every message carries at most the whole exchanged LoRA (both directions)."""
        return self.layout.numel

    # Streaming step 5: per segment s a running sum S_s = sum_i n_i X_i[s] and W_s = sum_i n_i,
    # X_i = U_i (update) or V_i (params); the segments are disjoint, so all sums together take one
    # LoRA's memory whatever the number of clients.
    def fold_begin(self, server_round: int) -> None:
        self._sums: dict[int, dict[str, torch.Tensor]] = {}
        self._weights: dict[int, float] = {}
        self._loss_sums = [0.0, 0.0, 0.0]  # sum n_i L_i, sum n_i L_i^0, sum n_i

    def fold(self, client_id: int, reply: Message) -> None:
        segment = int(reply.config["segment"])
        n = float(reply.num_examples)
        acc = self._sums.get(segment)
        if acc is None:
            acc = self._sums[segment] = {name: torch.zeros(b - a) for name, a, b in self.layout.pieces(segment)}
        current = self.layout.extract(self.global_state, segment) if self.eco.sparsify == "params" else None
        for k, piece in reply.tensors.items():
            piece = piece.reshape(-1).float()
            if current is not None:  # V_i: the sent value, or P[s] where nothing was sent
                piece = torch.where(piece != 0, piece, current[k])
            acc[k].add_(piece, alpha=n)
        self._weights[segment] = self._weights.get(segment, 0.0) + n
        for i, value in enumerate((reply.metrics["train_loss"], reply.metrics["initial_loss"], 1.0)):
            self._loss_sums[i] += n * float(value)

    def fold_end(self, server_round: int) -> dict[str, Any]:
        for segment in sorted(self._sums):
            mean = {k: v / self._weights[segment] for k, v in self._sums[segment].items()}
            if self.eco.sparsify == "update":  # P[s] += sum_i n_i U_i[s] / sum_i n_i
                current = self.layout.extract(self.global_state, segment)
                mean = {k: current[k] + v for k, v in mean.items()}
            self.layout.insert(self.global_state, segment, mean)
        train_sum, initial_sum, total = self._loss_sums
        self.compressor.observe_losses(train_sum / total, initial_sum / total)
        segments_updated = len(self._sums)
        self._sums, self._weights = {}, {}
        density_a, density_b = self.densities()
        return {"segments_updated": segments_updated, "next_density_a": density_a, "next_density_b": density_b}

    def clip_reply(self, reply: Message, max_norm: float) -> tuple[Message, float]:
        """Clip the update: the sent pieces (update mode) or, in params mode, the sent values
        minus the global values at the sent positions (positions not sent stay unsent)."""
        pieces = {k: v.reshape(-1).float() for k, v in reply.tensors.items()}
        if self.eco.sparsify == "update":
            update = pieces
        else:
            current = self.layout.extract(self.global_state, int(reply.config["segment"]))
            update = {k: torch.where(v != 0, v - current[k], 0.0) for k, v in pieces.items()}
        factor, norm = clip_factor(sum(float(u.square().sum()) for u in update.values()), max_norm)
        if factor < 1.0:
            if self.eco.sparsify == "update":
                tensors = {k: u * factor for k, u in update.items()}
            else:
                tensors = {k: torch.where(pieces[k] != 0, current[k] + factor * u, 0.0) for k, u in update.items()}
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
        previous_view = state.get("view", initial)
        if cfg["download"] == "delta":
            view = {k: previous_view[k] + message.tensors[k] for k in initial}
        elif cfg["download"] == "sparse_params":
            view = {k: torch.where(message.tensors[k] != 0, message.tensors[k], previous_view[k]) for k in initial}
        else:
            view = {k: message.tensors[k].float() for k in initial}
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
                           num_examples=result.num_examples, metrics=_train_metrics(result))
        state.update(view=view, local=local, tau=server_round)
        outgoing = {k: local[k] - start[k] for k in local} if self.eco.sparsify == "update" else local
        if self.layout.num_segments == 1:
            pieces = {k: v.reshape(-1) for k, v in outgoing.items()}
        else:
            pieces = self.layout.extract(outgoing, segment)
        pieces = self.compressor.compress(state, f"up/{segment}", pieces, float(cfg["density_a"]), float(cfg["density_b"]))
        return Message(config={"round": server_round, "segment": segment}, tensors=pieces,
                       num_examples=result.num_examples, metrics=_train_metrics(result))

    # ---- wire --------------------------------------------------------------------------------
    def pack(self, message: Message, direction: str) -> bytes:
        encoding = "coo" if self.eco.encoding == "coo" else "auto"
        return codec.pack(message.tensors, value_dtype=torch.float16, encoding=encoding)

    # ---- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"global_state": self.global_state, "compressor": self.compressor.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.global_state = {k: v.clone() for k, v in state["global_state"].items()}
        self.compressor.load_state_dict(state["compressor"])


def build_ecolora(base_name: str, config: RunConfig, initial_lora: Mapping[str, torch.Tensor]) -> Strategy:
    """``<base>+ecolora``: wrap FedIT or FFA-LoRA; FLoRA has its own compressed variant."""
    if base_name == "flora":
        from ecolora.strategies.flora import FLoRA

        return FLoRA(config, initial_lora, compressed=True)
    inner = get_strategy_class(base_name)(config, initial_lora)
    if not isinstance(inner, FedIT):
        raise ValueError(f"EcoLoRA wraps fedit or ffa, got {base_name!r}.")
    return EcoLoRA(inner, config, initial_lora)
