"""EcoLoRA's compression as one object that every ``+ecolora`` method holds (Liu et al. 2025).

:class:`EcoLoRACompressor` owns, as explicit state with :meth:`~EcoLoRACompressor.state_dict`:

1. the density schedule of eq. 4 and the losses it reads (``L_0``, ``L_{t-1}``):
   :meth:`~EcoLoRACompressor.densities`, :meth:`~EcoLoRACompressor.observe_losses`;
2. the round-robin segment schedule of eq. 2 (:class:`~ecolora.compress.segments.SegmentLayout`,
   :meth:`~EcoLoRACompressor.segment`);
3. the server's download replica ``Q`` (what clients hold, ``ecolora.aggregate: delta``) and each
   client's record of it (:class:`~ecolora.compress.replica.DownloadReplica`);
4. the residuals of eqs. 5-6, kept by their owner: a client's in its own state (its device,
   ``runtime.state`` on Flower), a server-side owner's (a HierFedLoRA group) in the compressor
   (:meth:`~EcoLoRACompressor.owner_state`).

The encode/decode steps are pure functions of their inputs and the owner state they are given:
:meth:`~EcoLoRACompressor.compress` (top-k with the owner's residual, eqs. 5-6) and
:meth:`~EcoLoRACompressor.sparsify` (top-k without memory). Methods call these and never keep
densities, losses, residuals or segment choices of their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ecolora import codec
from ecolora.compress.masked import MaskedTensor, select_masked
from ecolora.compress.replica import DownloadReplica
from ecolora.compress.schedule import AdaptiveK, AdaptiveKConfig
from ecolora.compress.segments import SegmentLayout, assign_segment
from ecolora.compress.state import compress_owned
from ecolora.compress.topk import sparsify_topk
from ecolora.config import EcoLoRAConfig

__all__ = ["DensityFn", "EcoLoRACompressor", "budget_density", "density_fn", "density_schedule", "is_lora_a"]

Tensors = dict[str, torch.Tensor]
DensityFn = Callable[[str], float]


def is_lora_a(name: str) -> bool:
    """Whether a peft tensor name is a LoRA ``A`` matrix (everything else gets B's density)."""
    return "lora_A" in name


def density_fn(density_a: float, density_b: float) -> DensityFn:
    """name -> density: ``density_a`` for LoRA A tensors, ``density_b`` for the rest."""
    return lambda name: density_a if is_lora_a(name) else density_b


def budget_density(rows: Sequence[Mapping[str, Any]]) -> float:
    """The budget of an adaptive run: the mean ``upload_density`` over its metrics.jsonl rows.

    Table 3's fixed-sparsification ablation keeps "the overall communication cost identical to
    that in adaptive sparsification": run it with ``ecolora.fixed_density`` set to this value.
    """
    values = [float(r["upload_density"]) for r in rows if r.get("upload_density") is not None]
    if not values:
        raise ValueError("no round of this run records `upload_density`: was it an +ecolora run with updates?")
    return sum(values) / len(values)


def density_schedule(eco: EcoLoRAConfig) -> AdaptiveK:
    """The eq. 4 schedule from an ``ecolora`` config section."""
    return AdaptiveK(AdaptiveKConfig(
        k_max=eco.k_max, k_min_a=eco.k_min_a, k_min_b=eco.k_min_b, gamma_a=eco.gamma_a, gamma_b=eco.gamma_b,
        fixed_density=eco.fixed_density if eco.sparsification == "fixed" else None,
    ))


class EcoLoRACompressor:
    """Density schedule, segments, download replica and residuals of EcoLoRA (module docstring).

    Args:
        eco: the ``ecolora`` config section (hyperparameters; never modified).
        exchanged: the initial exchanged LoRA tensors (shapes for the segment layout and the
            replica); None for methods without segments or replica (FLoRA, HierFedLoRA).
        num_segments: N_s (default: ``eco.num_segments``, or 1 with ``eco.segments: false``).
    """

    def __init__(self, eco: EcoLoRAConfig, exchanged: Mapping[str, torch.Tensor] | None = None,
                 num_segments: int | None = None) -> None:
        self.eco = eco
        self.wire_dtype = torch.float16  # every compressed message carries fp16 values
        self.schedule = density_schedule(eco)
        self.initial_loss: float | None = None
        self.last_loss: float | None = None
        self.layout: SegmentLayout | None = None
        self.replica: DownloadReplica | None = None
        if exchanged is not None:
            if num_segments is None:
                num_segments = eco.num_segments if eco.segments else 1
            self.layout = SegmentLayout.from_tensors(exchanged, num_segments)
            self.replica = DownloadReplica(exchanged, self.wire_dtype)
        self._owners: dict[str, dict[str, Any]] = {}

    # ---- eq. 4: densities from the losses ---------------------------------------------------------
    @property
    def sparsifies(self) -> bool:
        """Whether any top-k applies (``ecolora.sparsification`` is not ``none``)."""
        return self.eco.sparsification != "none"

    @property
    def sparse_download(self) -> bool:
        """Whether server -> client messages are sparsified."""
        return self.eco.download_sparsification and self.sparsifies

    def densities(self) -> tuple[float, float]:
        """(k_t^A, k_t^B) for the next round (1, 1 without sparsification)."""
        if not self.sparsifies:
            return 1.0, 1.0
        return (self.schedule.density("A", self.initial_loss, self.last_loss),
                self.schedule.density("B", self.initial_loss, self.last_loss))

    def observe_losses(self, train_loss: float, initial_loss: float) -> None:
        """Record a round's global loss ``L_{t-1}``; the first round's initial loss becomes ``L_0``."""
        if not (math.isfinite(train_loss) and math.isfinite(initial_loss)):
            raise ValueError(f"losses must be finite, got train {train_loss} and initial {initial_loss}")
        self.last_loss = train_loss
        if self.initial_loss is None:
            self.initial_loss = initial_loss

    # ---- eq. 2: segments ----------------------------------------------------------------------------
    def require_layout(self) -> SegmentLayout:
        if self.layout is None:
            raise ValueError("this EcoLoRACompressor has no segment layout: pass the exchanged tensors.")
        return self.layout

    def require_replica(self) -> DownloadReplica:
        if self.replica is None:
            raise ValueError("this EcoLoRACompressor has no download replica: pass the exchanged tensors.")
        return self.replica

    def segment(self, position: int, server_round: int) -> int:
        """Segment uploaded by the participant at ``position`` in ``server_round`` (eq. 2)."""
        return assign_segment(position, server_round, self.require_layout().num_segments)

    # ---- eqs. 5-6: pure encode steps ----------------------------------------------------------------
    def sparsify(self, tensors: Mapping[str, torch.Tensor], density_a: float, density_b: float) -> Tensors:
        """``SC_k`` of each tensor, without memory (A and B at their own densities)."""
        dens = density_fn(density_a, density_b)
        return {k: sparsify_topk(v, dens(k)) for k, v in tensors.items()}

    def compress(self, owner: dict[str, Any], stream: str, tensors: Mapping[str, torch.Tensor],
                 density_a: float, density_b: float) -> Tensors:
        """What the owner sends: ``SC_k(P + R)`` with the residual ``R`` of ``stream`` kept in
        ``owner["feedback"]`` (eqs. 5-6), or ``SC_k(P)`` with ``error_feedback: false``, or ``P``
        unchanged without sparsification. ``owner`` is the state of whoever produced ``P``."""
        if not self.sparsifies:
            return dict(tensors)
        if not self.eco.error_feedback:
            return self.sparsify(tensors, density_a, density_b)
        return compress_owned(owner, stream, tensors, density_fn(density_a, density_b), wire_dtype=self.wire_dtype)

    def select_values(self, tensors: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor],
                      density_a: float, density_b: float) -> dict[str, MaskedTensor]:
        """``aggregate: paper``: the wire values of ``tensors`` at the top-k of ``|P - B|`` (the
        residual against the receiver's copy ``B``, eqs. 5-6), or of ``|P|`` without error
        feedback; every entry without sparsification."""
        dens = density_fn(density_a, density_b) if self.sparsifies else density_fn(1.0, 1.0)
        feedback = self.eco.error_feedback
        return {k: select_masked(v, base[k] if feedback else None, dens(k), self.wire_dtype) for k, v in tensors.items()}

    # ---- wire ----------------------------------------------------------------------------------------
    def pack(self, tensors: Mapping[str, torch.Tensor]) -> bytes:
        """Lossless coding of a compressed message (sec. 3.5): positions by ``ecolora.encoding``
        (golomb: the codec's smallest format; coo: 16-bit indices; coo32: int32), values fp16 by
        ``ecolora.value_coding``."""
        encoding = {"golomb": "auto", "coo": "coo16", "coo32": "coo"}[self.eco.encoding]
        return codec.pack(tensors, value_dtype=self.wire_dtype, encoding=encoding, value_coding=self.eco.value_coding)

    def owner_state(self, owner: str) -> dict[str, Any]:
        """The state of a server-side owner of residuals (e.g. ``"group1"``), kept here."""
        return self._owners.setdefault(owner, {})

    # ---- checkpoints --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "initial_loss": self.initial_loss, "last_loss": self.last_loss,
            "replica": self.replica.state_dict() if self.replica is not None else None,
            "owners": {k: dict(v) for k, v in self._owners.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.initial_loss, self.last_loss = state["initial_loss"], state["last_loss"]
        if self.replica is not None and state["replica"] is not None:
            self.replica.load_state_dict(state["replica"])
        self._owners = {str(k): dict(v) for k, v in state["owners"].items()}
