"""Sparse *parameter values* with explicit masks (EcoLoRA ``aggregate: paper``).

Sending parameters sparsely needs to say which entries were sent: a sent value may be exactly 0
(or underflow to 0 in fp16), so "zero means not sent" would overwrite nothing where it should
write 0, and would count a real 0 as missing in an average. A :class:`MaskedTensor` is a bool mask
shaped like the tensor and the 1-D values at its set entries (row-major order). On the wire a
masked tensor ``name`` travels as the sparse tensor of its values (positions and values coded like
any sparse tensor's) plus, only when a sent value is exactly 0, ``name + MASK_SUFFIX``: the bool
mask of those entries, so a sent 0 is never read as "not sent".

Selection (eq. 5 with the residual of eq. 6): with a base ``B`` (what the receiver holds), the
residual is ``R = P - B`` and the entries sent are the non-zero entries of ``SC_k(R)`` (the top-k
of ``|R|``; an entry where ``R`` is 0 would rewrite what the receiver has); without a base (no
error feedback) the top-k of ``|P|``. The values sent are ``P`` at those entries, in the wire dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ecolora.compress.topk import topk_mask

__all__ = ["MASK_SUFFIX", "MaskedTensor", "apply_masked", "join_masked", "select_masked", "split_masked"]

MASK_SUFFIX = "@zeros"  # the sent entries whose value is exactly 0 (bool; only when there are any)


@dataclass(frozen=True)
class MaskedTensor:
    """``mask`` (bool, the tensor's shape) and ``values`` (1-D float32, one per set entry)."""

    mask: torch.Tensor
    values: torch.Tensor


def select_masked(target: torch.Tensor, base: torch.Tensor | None, density: float,
                  wire_dtype: torch.dtype) -> MaskedTensor:
    """The wire values of ``target`` at the top-k of ``|target - base|`` (``|target|`` if no base)."""
    target = target.detach().float()
    if base is None:
        mask = topk_mask(target, density)
    else:  # only non-zero entries of SC_k(R) are sent (sec. 3.5): an entry equal to the copy carries nothing
        residual = target - base.float()
        mask = topk_mask(residual, density) & (residual != 0)
    return MaskedTensor(mask, target[mask].to(wire_dtype).float())


def apply_masked(base: torch.Tensor, sent: MaskedTensor) -> torch.Tensor:
    """A copy of ``base`` with the sent values written at the mask's entries."""
    if tuple(sent.mask.shape) != tuple(base.shape) or sent.values.numel() != int(sent.mask.sum()):
        raise ValueError(
            f"masked tensor does not fit: mask {tuple(sent.mask.shape)} with {int(sent.mask.sum())} set entries, "
            f"{sent.values.numel()} values, base {tuple(base.shape)}"
        )
    out = base.detach().clone().float()
    out[sent.mask] = sent.values.float()
    return out


def split_masked(tensors: Mapping[str, MaskedTensor]) -> dict[str, torch.Tensor]:
    """Codec tensors of masked tensors: ``name`` -> the values at their entries (zeros elsewhere,
    so the codec sends positions and values as for any sparse tensor) and, only if a sent value is
    exactly 0, ``name@zeros`` -> the bool mask of those entries (usually absent: free)."""
    out: dict[str, torch.Tensor] = {}
    for name, m in tensors.items():
        dense = torch.zeros(m.mask.shape)
        dense[m.mask] = m.values.float()
        out[name] = dense
        zeros = m.mask & (dense == 0)
        if bool(zeros.any()):
            out[name + MASK_SUFFIX] = zeros
    return out


def join_masked(tensors: Mapping[str, torch.Tensor]) -> dict[str, MaskedTensor]:
    """Inverse of :func:`split_masked`: sent entries are the non-zeros and the ``@zeros`` entries."""
    out: dict[str, MaskedTensor] = {}
    for name, dense in tensors.items():
        if name.endswith(MASK_SUFFIX):
            continue
        mask = dense != 0
        zeros = tensors.get(name + MASK_SUFFIX)
        if zeros is not None:
            mask = mask | zeros.bool().reshape(mask.shape)
        out[name] = MaskedTensor(mask, dense[mask].float())
    return out
