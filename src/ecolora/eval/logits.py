"""Shared-prefix packing for multiple choice (the output head only at scored positions:
:func:`ecolora.client.logits.gathered_logps`).

* :func:`score_prefix_groups` scores all continuations of one context in a single sequence
  ``[prefix, c_1, ..., c_K]`` with a tree attention mask: ``c_k`` sees the prefix and its own
  earlier tokens, never another continuation, and its positions restart at ``len(prefix)``
  (rotary position ids), so each ``c_k`` gets exactly the logits it would get in ``prefix + c_k``
  alone while the prefix is computed once instead of ``K`` times.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ecolora.client.logits import gathered_logps

__all__ = ["PrefixGroup", "score_prefix_groups"]


@dataclass(frozen=True)
class PrefixGroup:
    """One context and the continuations scored after it (token ids; ``prefix`` non-empty)."""

    prefix: list[int]
    continuations: list[list[int]]

    @property
    def length(self) -> int:
        return len(self.prefix) + sum(len(c) for c in self.continuations)


def score_prefix_groups(
    model: torch.nn.Module,
    groups: Sequence[PrefixGroup],
    batch_size: int,
    pad_id: int,
    *,
    min_shared: int = 8,
    max_row_tokens: int = 512,
    progress: Callable[[int, int], None] | None = None,
) -> list[list[float]]:
    """Summed log-likelihood of every continuation of every group, ``batch_size`` rows per pass.

    Groups whose prefixes start with the same ``>= min_shared`` tokens (a task's instructions)
    share one packed row of at most ``max_row_tokens`` tokens: that common root is computed once
    for all of them. Rows are sorted by length (longest first) and right-padded per batch.
    ``progress(tokens_done, tokens_total)`` is called after each pass (packed tokens, the work).
    """
    dtype = next(model.parameters()).dtype
    if not dtype.is_floating_point:  # quantized weights: the mask follows the compute dtype
        dtype = torch.float32
    rows = sorted(_rows(groups, min_shared, max_row_tokens), key=lambda r: -r.length)
    scores: list[list[float]] = [[0.0] * len(g.continuations) for g in groups]
    total, done = sum(r.length for r in rows), 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        input_ids, position_ids, mask, at, owners = _pack(chunk, pad_id, dtype)
        logps = gathered_logps(model, input_ids, mask, at[0], at[1], at[2], position_ids)  # (N,)
        sums = torch.zeros(len(owners), dtype=torch.float64)
        sums.index_add_(0, at[3], logps.double().cpu())  # (continuations,)
        for (g, k), value in zip(owners, sums.tolist(), strict=True):
            scores[g][k] = value
        done += sum(r.length for r in chunk)
        if progress is not None:
            progress(done, total)
    return scores


@dataclass
class _Row:
    """Groups packed into one sequence: their common ``root`` once, then each group's rest."""

    root: list[int]
    members: list[tuple[int, PrefixGroup]]

    @property
    def length(self) -> int:
        return len(self.root) + sum(g.length - len(self.root) for _, g in self.members)


def _rows(groups: Sequence[PrefixGroup], min_shared: int, max_row_tokens: int) -> list[_Row]:
    """Greedy packing of prefix-sorted groups into rows that share a root of >= ``min_shared``."""
    order = sorted(range(len(groups)), key=lambda g: groups[g].prefix)
    rows: list[_Row] = []
    for g in order:
        group = groups[g]
        if rows:
            row = rows[-1]
            root = _common_prefix(row.root, group.prefix)
            grown = _Row(root, [*row.members, (g, group)])
            if len(root) >= min_shared and grown.length <= max_row_tokens:
                rows[-1] = grown
                continue
        rows.append(_Row(list(group.prefix), [(g, group)]))
    return rows


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> list[int]:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return list(a[:n])


def _pack(
    chunk: Sequence[_Row], pad_id: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor], list[tuple[int, int]]]:
    """Token ids, position ids, the 4D tree mask, the scored ``[rows, cols, targets, owners]`` and
    the ``(group, choice)`` of each owner."""
    width = max(r.length for r in chunk)
    input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)  # (B, T)
    position_ids = torch.zeros((len(chunk), width), dtype=torch.long)  # (B, T)
    member = torch.full((len(chunk), width), -2, dtype=torch.long)  # -2 pad, -1 root, m member
    branch = torch.zeros((len(chunk), width), dtype=torch.long)  # 0 its context, k choice k
    scored: list[list[int]] = [[], [], [], []]  # rows, cols (predecessors), targets, owners
    owners: list[tuple[int, int]] = []
    for row, packed in enumerate(chunk):
        r = len(packed.root)
        _put(input_ids, position_ids, member, branch, row, 0, packed.root, 0, (-1, 0))
        offset = r
        for m, (g, group) in enumerate(packed.members):
            rest = group.prefix[r:]
            _put(input_ids, position_ids, member, branch, row, offset, rest, r, (m, 0))
            last = offset + len(rest) - 1 if rest else r - 1  # the context's last token
            offset += len(rest)
            p = len(group.prefix)
            for k, cont in enumerate(group.continuations):
                n = len(cont)
                _put(input_ids, position_ids, member, branch, row, offset, cont, p, (m, k + 1))
                scored[0] += [row] * n
                scored[1] += [last, *range(offset, offset + n - 1)]
                scored[2] += cont
                scored[3] += [len(owners)] * n
                owners.append((g, k))
                offset += n
    mask = _tree_mask(member, branch, dtype)
    return input_ids, position_ids, mask, [torch.as_tensor(v, dtype=torch.long) for v in scored], owners


def _put(
    input_ids: torch.Tensor, position_ids: torch.Tensor, member: torch.Tensor, branch: torch.Tensor,
    row: int, offset: int, tokens: Sequence[int], first_position: int, node: tuple[int, int],
) -> None:  # fmt: skip
    end = offset + len(tokens)
    input_ids[row, offset:end] = torch.as_tensor(tokens, dtype=torch.long)
    position_ids[row, offset:end] = torch.arange(first_position, first_position + len(tokens))
    member[row, offset:end], branch[row, offset:end] = node


def _tree_mask(member: torch.Tensor, branch: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive ``(B, 1, T, T)`` mask: query i sees key j <= i of the root, or of its own member's
    context, or of its own choice; never another member or another choice."""
    width = member.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool).tril()  # (T, T)
    q_member, k_member = member.unsqueeze(2), member.unsqueeze(1)  # (B, T, 1), (B, 1, T)
    q_branch, k_branch = branch.unsqueeze(2), branch.unsqueeze(1)
    own = (k_member == q_member) & ((k_branch == 0) | (k_branch == q_branch))
    allowed = causal & (k_member >= -1) & ((k_member == -1) | own)  # (B, T, T)
    allowed |= torch.eye(width, dtype=torch.bool)  # padding rows see themselves (no empty softmax)
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask.unsqueeze(1)  # (B, 1, T, T)
