"""Top-k sparsification with error feedback and explicit, checkpointable residual state.

EcoLoRA (Liu et al. 2025), eqs. 5-6, after Stich et al. (2018) and Sattler et al. (2019): the
entries a client drops are not lost but carried to the next round::

    sent_t = SC_k(P_t + R_{t-1})                                         (eq. 5)
    R_t    = R_{t-1} + P_t - SC_k(P_t + R_{t-1})                         (eq. 6)

so that, over any number of rounds, ``sum(sent) + R_T = sum(P)``. The residual ``R`` lives in an
:class:`ErrorFeedback` object keyed by stream (one per client and direction), kept apart from
the hyperparameters, like PyTorch's ``PowerSGDState``.

Scope of the top-k (``scope=``):

* ``"tensor"``: each tensor keeps its own ``round(density * numel)`` largest entries;
* ``"group"``: all ``lora_A`` tensors of the call compete together, all ``lora_B`` tensors
  together (other tensors form a third group); a group keeps ``round(sum_i density_i * numel_i)``;
* ``"global"``: all tensors of the call compete together, with the same count rule.

Ties go to the earlier tensor (in mapping order), then the lower flat index.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from ecolora.compress.schedule import lora_matrix
from ecolora.compress.topk import topk_mask, topk_mask_joint

__all__ = ["SCOPES", "ErrorFeedback", "compress_owned"]

SCOPES = ("tensor", "group", "global")
Densities = Mapping[str, float] | Callable[[str], float]


class ErrorFeedback:
    """Residual memory for error-feedback top-k, one residual per (stream key, tensor name)."""

    def __init__(self) -> None:
        self._residuals: dict[str, dict[str, torch.Tensor]] = {}
        self._values_in: dict[str, int] = {}
        self._values_kept: dict[str, int] = {}

    def compress(
        self,
        key: str,
        tensors: Mapping[str, torch.Tensor],
        densities: Densities,
        scope: str = "tensor",
        wire_dtype: torch.dtype | None = None,
    ) -> dict[str, torch.Tensor]:
        """Return ``SC_k(P + R)`` per tensor and update the residuals of stream ``key``.

        Args:
            key: the independent stream (e.g. ``"client3/up"``); residuals never mix across keys.
            tensors: name -> update ``P`` (floating point; the same shape every round).
            densities: name -> fraction kept, as a mapping or a callable.
            scope: ``"tensor"``, ``"group"`` or ``"global"`` (see the module docstring).
            wire_dtype: the dtype the values cross the wire in (None: no rounding). The values
                returned are rounded to it and the rounding error stays in the residual, so the
                receiver's sum of what it decoded plus ``R`` is the sum of the inputs.

        Returns:
            name -> sparse tensor, in float32 (or the input dtype when wider), so that sent plus
            residual equals the accumulated input exactly.
        """
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")
        residuals = self._residuals.setdefault(key, {})
        corrected = {
            name: self._corrected(residuals.get(name), name, p) for name, p in tensors.items()
        }
        masks = _masks(corrected, densities, scope)
        out: dict[str, torch.Tensor] = {}
        kept = 0
        for name, e in corrected.items():
            mask = masks[name]
            zero = torch.zeros((), dtype=e.dtype, device=e.device)
            sent = e if wire_dtype is None else e.to(wire_dtype).to(e.dtype)
            out[name] = torch.where(mask, sent, zero)
            residuals[name] = e - out[name] if wire_dtype is not None else torch.where(mask, zero, e)  # R + P - SC_k(P + R)
            kept += int(mask.sum())
        self._values_in[key] = self._values_in.get(key, 0) + sum(
            e.numel() for e in corrected.values()
        )
        self._values_kept[key] = self._values_kept.get(key, 0) + kept
        return out

    @staticmethod
    def _corrected(residual: torch.Tensor | None, name: str, p: torch.Tensor) -> torch.Tensor:
        if not isinstance(p, torch.Tensor) or not p.is_floating_point():
            raise TypeError(f"tensor {name!r} must be a floating-point torch.Tensor")
        dtype = torch.promote_types(p.dtype, torch.float32)
        update = p.detach().to(dtype)
        if residual is None:
            return update  # never modified in place
        if residual.shape != update.shape:
            raise ValueError(
                f"tensor {name!r} has shape {list(update.shape)} but its residual has "
                f"{list(residual.shape)}; call reset(key) after changing the LoRA shapes"
            )
        return update + residual.to(device=update.device, dtype=dtype)

    def residual(self, key: str, name: str) -> torch.Tensor | None:
        """The current residual ``R`` of one tensor of a stream (None before its first round)."""
        return self._residuals.get(key, {}).get(name)

    def reset(self, key: str | None = None) -> None:
        """Forget the residuals and counters of one stream, or of all streams."""
        for store in (self._residuals, self._values_in, self._values_kept):
            if key is None:
                store.clear()
            else:
                store.pop(key, None)

    def compression_stats(self, key: str | None = None) -> dict[str, float]:
        """Values in, values kept, their ratio and the kept fraction (one stream or all)."""
        keys = list(self._values_in) if key is None else [key]
        values_in = sum(self._values_in.get(k, 0) for k in keys)
        kept = sum(self._values_kept.get(k, 0) for k in keys)
        return {
            "num_values_in": values_in,
            "num_values_kept": kept,
            "density": kept / values_in if values_in else 0.0,
            "compression_rate": values_in / kept if kept else float("inf"),
        }

    def state_dict(self) -> dict[str, Any]:
        """Plain containers: residual tensors (cloned) and integer counters per stream."""
        return {
            "residuals": {
                k: {n: r.clone() for n, r in rs.items()} for k, rs in self._residuals.items()
            },
            "num_values_in": dict(self._values_in),
            "num_values_kept": dict(self._values_kept),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict` (tensors are cloned)."""
        expected = {"residuals", "num_values_in", "num_values_kept"}
        if set(state) != expected:
            raise ValueError(f"state must have keys {sorted(expected)}, got {sorted(state)}")
        residuals: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensors in state["residuals"].items():
            for name, r in tensors.items():
                if not isinstance(r, torch.Tensor):
                    raise TypeError(
                        f"residual {key!r}/{name!r} must be a tensor, got {type(r).__name__}"
                    )
            residuals[str(key)] = {str(n): r.detach().clone() for n, r in tensors.items()}
        self._residuals = residuals
        self._values_in = {str(k): int(v) for k, v in state["num_values_in"].items()}
        self._values_kept = {str(k): int(v) for k, v in state["num_values_kept"].items()}


def compress_owned(
    owner: dict[str, Any],
    stream: str,
    tensors: Mapping[str, torch.Tensor],
    densities: Densities,
    scope: str = "tensor",
    wire_dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """:meth:`ErrorFeedback.compress` with the residuals kept in ``owner["feedback"]``.

    ``owner`` is the state of whoever produced the tensors (a client's ``runtime.state``, which
    persists across rounds on its device, or a server-side owner's state), so residuals always
    stay with their owner and travel with its checkpoints.
    """
    feedback = ErrorFeedback()
    if "feedback" in owner:
        feedback.load_state_dict(owner["feedback"])
    out = feedback.compress(stream, tensors, densities, scope=scope, wire_dtype=wire_dtype)
    owner["feedback"] = feedback.state_dict()
    return out


def _density(densities: Densities, name: str) -> float:
    if callable(densities):
        density = float(densities(name))
    elif name in densities:
        density = float(densities[name])
    else:
        raise ValueError(f"no density given for tensor {name!r}")
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density of tensor {name!r} must be in [0, 1], got {density}")
    return density


def _masks(
    tensors: Mapping[str, torch.Tensor], densities: Densities, scope: str
) -> dict[str, torch.Tensor]:
    if scope == "tensor":
        return {name: topk_mask(e, _density(densities, name)) for name, e in tensors.items()}
    groups: dict[str | None, list[str]] = {}
    for name in tensors:
        groups.setdefault(lora_matrix(name) if scope == "group" else "all", []).append(name)
    masks: dict[str, torch.Tensor] = {}
    for names in groups.values():
        wanted = 0.0
        for name in names:
            wanted += _density(densities, name) * tensors[name].numel()
        total = sum(tensors[n].numel() for n in names)
        k = min(total, int(round(wanted)))
        for name, mask in zip(names, topk_mask_joint([tensors[n] for n in names], k), strict=True):
            masks[name] = mask
    return masks
