"""Round-robin segment sharing (EcoLoRA, Liu et al. 2025, Section 3.3, eq. 2).

The exchanged LoRA tensors of all layers are flattened in a fixed order (sorted names) into one
vector of n values, cut into N_s contiguous segments of (almost) equal size: segment s covers
[floor(s n / N_s), floor((s + 1) n / N_s)). In round t the participant at position j of the
round's sampled list uploads segment (j + t) mod N_s. Using the position (not the client id)
guarantees every segment has at least one uploader each round when N_s <= N_t.

A segment crosses the wire as per-tensor pieces: ``{name: 1-D slice of that tensor}``, so A and B
keep separate sparsity levels and the receiver knows where each piece goes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

__all__ = ["SegmentLayout", "assign_segment"]


def assign_segment(position: int, server_round: int, num_segments: int) -> int:
    """Segment uploaded by the participant at ``position`` in round ``server_round`` (eq. 2)."""
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    return (position + server_round) % num_segments


@dataclass(frozen=True)
class SegmentLayout:
    """Where each tensor sits in the flat vector, and where each segment starts and ends."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    num_segments: int

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], num_segments: int) -> SegmentLayout:
        names = tuple(sorted(tensors))
        total = sum(tensors[n].numel() for n in names)
        if not 1 <= num_segments <= max(total, 1):
            raise ValueError(f"num_segments must be in [1, {total}] (number of LoRA values), got {num_segments}.")
        return cls(names, tuple(tuple(tensors[n].shape) for n in names), num_segments)

    @property
    def offsets(self) -> list[int]:
        out: list[int] = []
        acc = 0
        for shape in self.shapes:
            out.append(acc)
            acc += int(torch.Size(shape).numel())
        out.append(acc)
        return out

    @property
    def numel(self) -> int:
        return self.offsets[-1]

    def bounds(self, segment: int) -> tuple[int, int]:
        if not 0 <= segment < self.num_segments:
            raise ValueError(f"segment must be in [0, {self.num_segments}), got {segment}")
        n = self.numel
        return segment * n // self.num_segments, (segment + 1) * n // self.num_segments

    def pieces(self, segment: int) -> list[tuple[str, int, int]]:
        """(tensor name, start, end) ranges within each tensor's flat view covered by ``segment``."""
        lo, hi = self.bounds(segment)
        offsets = self.offsets
        out: list[tuple[str, int, int]] = []
        for i, name in enumerate(self.names):
            start, end = max(lo, offsets[i]), min(hi, offsets[i + 1])
            if start < end:
                out.append((name, start - offsets[i], end - offsets[i]))
        return out

    def extract(self, tensors: Mapping[str, torch.Tensor], segment: int) -> dict[str, torch.Tensor]:
        """The segment as ``{name: 1-D slice}`` (copies)."""
        return {name: tensors[name].reshape(-1)[a:b].clone() for name, a, b in self.pieces(segment)}

    def insert(self, tensors: dict[str, torch.Tensor], segment: int, pieces: Mapping[str, torch.Tensor]) -> None:
        """Write a segment's pieces back into full tensors in place; names and lengths are checked."""
        expected = self.pieces(segment)
        if set(pieces) != {name for name, _, _ in expected}:
            raise ValueError(f"Segment {segment} pieces {sorted(pieces)} do not match the layout {[n for n, _, _ in expected]}.")
        for name, a, b in expected:
            piece = pieces[name].reshape(-1)
            if piece.numel() != b - a:
                raise ValueError(f"Piece {name!r} of segment {segment} has {piece.numel()} values, expected {b - a}.")
            tensors[name].view(-1)[a:b] = piece.to(tensors[name].dtype)
