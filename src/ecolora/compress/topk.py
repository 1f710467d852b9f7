"""Top-k sparsification by magnitude, with ``k`` given as the fraction of entries kept.

``SC_k`` keeps the ``round(density * numel)`` entries of largest ``|value|`` and zeroes the rest
(EcoLoRA, Liu et al. 2025, eq. 5). Ties are broken deterministically by the lower flat index, so
the same input always gives the same mask on any machine:

1. ``thr`` = the k-th largest ``|value|`` (an O(n) selection, ``torch.kthvalue``);
2. keep every entry with ``|value| > thr``;
3. fill the remaining slots with the first entries (lowest flat index) with ``|value| == thr``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["num_kept", "sparsify_topk", "topk_mask", "topk_mask_joint"]


def num_kept(density: float, numel: int) -> int:
    """``round(density * numel)`` (Python's round: halves go to the even integer)."""
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    return min(numel, int(round(density * numel)))


def _mask_flat(magnitude: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask (n,) of the k largest entries of the flat, finite ``magnitude``."""
    n = magnitude.numel()
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool, device=magnitude.device)
    if k >= n:
        return torch.ones(n, dtype=torch.bool, device=magnitude.device)
    thr = torch.kthvalue(magnitude, n - k + 1).values  # k-th largest
    mask = magnitude > thr
    missing = k - int(mask.sum())
    if missing > 0:
        ties = torch.nonzero(magnitude == thr).flatten()[:missing]
        mask[ties] = True
    return mask


def _magnitude(t: torch.Tensor, what: str) -> torch.Tensor:
    if not t.is_floating_point():
        raise TypeError(f"{what} must be a floating-point tensor, got {t.dtype}")
    flat = t.detach().reshape(-1)
    if not bool(torch.isfinite(flat).all()):
        raise ValueError(f"{what} has non-finite values; top-k needs finite magnitudes")
    return flat.abs().float()


def topk_mask(t: torch.Tensor, density: float) -> torch.Tensor:
    """Bool mask (same shape as ``t``) of the ``round(density * numel)`` largest ``|t|``."""
    k = num_kept(density, t.numel())
    return _mask_flat(_magnitude(t, "tensor"), k).reshape(t.shape)


def sparsify_topk(t: torch.Tensor, density: float) -> torch.Tensor:
    """``SC_k(t)``: a copy of ``t`` with all but the top-k entries by magnitude set to zero.

    Exactly ``round(density * numel)`` entries keep their value (some may be zero themselves);
    density 1 returns a copy, density 0 returns zeros.
    """
    mask = topk_mask(t, density)
    return torch.where(mask, t.detach(), torch.zeros((), dtype=t.dtype, device=t.device))


def topk_mask_joint(tensors: Sequence[torch.Tensor], k: int) -> list[torch.Tensor]:
    """Top-k over several tensors taken together (flattened and concatenated in order).

    Ties across tensors go to the earlier tensor, then the lower flat index. Returns one bool mask
    per tensor, shaped like it.
    """
    if not tensors:
        return []
    flats = [_magnitude(t, f"tensor #{i}") for i, t in enumerate(tensors)]
    joint = _mask_flat(torch.cat(flats), k)
    masks = torch.split(joint, [f.numel() for f in flats])
    return [m.reshape(t.shape) for m, t in zip(masks, tensors, strict=True)]
