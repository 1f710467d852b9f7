"""Golomb-coded positions: which entries of a tensor are non-zero.

The coded set is the minority: the non-zeros when at most half the entries are non-zero, else the
zeros. With coded density ``p <= 1/2`` the gaps are coded with the Golomb ``M`` whose exact size is
smaller among Sattler's Rice parameter ``2^b*`` and the optimal ``M`` (see
:mod:`ecolora.codec.golomb`); both follow from ``p``, and ties keep the smaller ``M``.

``M = 1`` (unary, chosen for ``p >= 0.38``) is bit-for-bit the coded-set bitmap cut after its last
set bit, so it is encoded and decoded as a bitmap, without computing gaps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecolora.codec.bits import encode_varint
from ecolora.codec.errors import CodecError
from ecolora.codec.golomb import (
    golomb_decode,
    golomb_encode,
    golomb_num_bytes,
    optimal_golomb_parameter,
    rice_parameter,
)
from ecolora.codec.manifest import GOLOMB_NONZEROS, GOLOMB_ZEROS, Entry

__all__ = ["PositionPlan", "decode_positions", "encode_positions", "plan_positions"]


@dataclass(frozen=True)
class PositionPlan:
    """The chosen Golomb layout for one tensor and its exact size."""

    encoding: int  # GOLOMB_NONZEROS or GOLOMB_ZEROS
    golomb_m: int
    num_bytes: int  # unary + remainder bytes + the three manifest varints (M, sizes)
    gaps: np.ndarray | None  # (count,) int64; None when M = 1
    last: int  # index of the last coded position, -1 if none


def _coded(nonzero: np.ndarray, encoding: int) -> np.ndarray:
    return nonzero if encoding == GOLOMB_NONZEROS else ~nonzero


def plan_positions(nonzero: np.ndarray, nnz: int, index: np.ndarray | None) -> PositionPlan:
    """Pick polarity and ``M`` for the flat bool mask ``nonzero`` (numel,) with ``nnz`` set.

    ``index`` is ``np.flatnonzero(nonzero)`` when the caller has it (else None).
    """
    numel = int(nonzero.size)
    encoding = GOLOMB_NONZEROS if 2 * nnz <= numel else GOLOMB_ZEROS
    count = nnz if encoding == GOLOMB_NONZEROS else numel - nnz
    if count == 0:
        return PositionPlan(encoding, 1, 3, None, -1)
    p = count / numel
    candidates = sorted({1 << rice_parameter(p), optimal_golomb_parameter(p)})
    if candidates == [1]:
        coded = _coded(nonzero, encoding)
        last = numel - 1 - int(np.argmax(coded[::-1]))
        unary = (last + 8) // 8
        return PositionPlan(encoding, 1, unary + _varints(1, unary, 0), None, last)
    if encoding == GOLOMB_ZEROS or index is None:
        positions = np.flatnonzero(_coded(nonzero, encoding))
    else:
        positions = index
    gaps = np.diff(positions, prepend=-1) - 1
    best: PositionPlan | None = None
    for m in candidates:
        unary, rem = golomb_num_bytes(gaps, m)
        size = unary + rem + _varints(m, unary, rem)
        if best is None or size < best.num_bytes:
            best = PositionPlan(encoding, m, size, gaps, int(positions[-1]))
    assert best is not None
    return best


def _varints(*values: int) -> int:
    return sum(len(encode_varint(v)) for v in values)


def encode_positions(plan: PositionPlan, nonzero: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the (unary, remainder) streams of ``plan``."""
    if plan.golomb_m == 1:
        coded = _coded(nonzero, plan.encoding)
        return np.packbits(coded[: plan.last + 1]), np.zeros(0, dtype=np.uint8)
    assert plan.gaps is not None
    return golomb_encode(plan.gaps, plan.golomb_m)


def decode_positions(entry: Entry, unary: np.ndarray, rem: np.ndarray, what: str) -> np.ndarray:
    """Flat indices (int64, increasing) of the non-zeros named by the position streams."""
    numel, count, m = entry.numel, entry.coded_count, entry.params[0]
    if m == 1:
        if rem.size:
            raise CodecError(f"{what}: expected no remainder bytes for M = 1, got {rem.size}")
        if count == 0:
            if unary.size:
                raise CodecError(
                    f"{what}: expected an empty position stream, got {unary.size} bytes"
                )
            positions = np.zeros(0, dtype=np.int64)
        else:
            positions = np.flatnonzero(np.unpackbits(unary).view(bool))
            if positions.size != count:
                raise CodecError(
                    f"{what}: expected {count} coded positions, found {positions.size}"
                )
            last = int(positions[-1])
            if last < unary.size * 8 - 8:
                raise CodecError(f"{what}: position stream has trailing bytes after its last code")
    else:
        gaps = golomb_decode(unary, rem, count, m, numel - 1, f"{what} positions")
        positions = np.cumsum(gaps + 1) - 1
    if count and int(positions[-1]) >= numel:
        raise CodecError(f"{what}: position {int(positions[-1])} is outside [0, {numel})")
    if entry.encoding == GOLOMB_NONZEROS:
        return positions
    mask = np.ones(numel, dtype=bool)
    mask[positions] = False
    return np.flatnonzero(mask)
