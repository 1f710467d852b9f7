"""Log-probabilities at chosen positions only, and shared-prefix packing for multiple choice.

Evaluation is compute-bound on the vocabulary projection and on repeated contexts, so:

* :func:`gathered_logps` runs the transformer body once and applies the output head (``lm_head``,
  ``V`` columns) only at the positions that are scored: an ``(N, V)`` matrix instead of
  ``(B, T, V)``. For SmolLM2 (``V = 49,152``) the head costs as much as ~a fifth of the body per
  position, and the full logits of a batch of 8 x 256 tokens take 400 MB in float32.
* :func:`score_prefix_groups` scores all continuations of one context in a single sequence
  ``[prefix, c_1, ..., c_K]`` with a tree attention mask: ``c_k`` sees the prefix and its own
  earlier tokens, never another continuation, and its positions restart at ``len(prefix)``
  (rotary position ids), so each ``c_k`` gets exactly the logits it would get in ``prefix + c_k``
  alone while the prefix is computed once instead of ``K`` times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["PrefixGroup", "body_and_head", "gathered_logps", "score_prefix_groups"]


@dataclass(frozen=True)
class PrefixGroup:
    """One context and the continuations scored after it (token ids; ``prefix`` non-empty)."""

    prefix: list[int]
    continuations: list[list[int]]

    @property
    def length(self) -> int:
        return len(self.prefix) + sum(len(c) for c in self.continuations)


def body_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """The decoder stack (hidden states) and the output head of a transformers causal LM, or None.

    A peft model's LoRA layers live inside the base model's modules, so its body applies them.
    """
    get_base = getattr(model, "get_base_model", None)
    base = get_base() if get_base is not None else model
    get_decoder = getattr(base, "get_decoder", None)
    get_head = getattr(base, "get_output_embeddings", None)
    if get_decoder is None or get_head is None:
        return None
    body, head = get_decoder(), get_head()
    if body is None or head is None or body is base:
        return None
    return body, head


def gathered_logps(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    targets: torch.Tensor,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """``log p(targets[n] | tokens[rows[n], :cols[n] + 1])`` for each n, float32 ``(N,)``.

    ``attention_mask`` is a 2D padding mask ``(B, T)`` or a 4D additive mask ``(B, 1, T, T)``.
    Inputs may live on the CPU; they are moved to the model's device. A model that is not a
    transformers causal LM (no decoder/head split) computes full logits, then gathers.
    """
    device = next(model.parameters()).device
    inputs = {
        "input_ids": input_ids.to(device),
        "attention_mask": attention_mask.to(device),
        "position_ids": None if position_ids is None else position_ids.to(device),
        "use_cache": False,
    }
    rows, cols = rows.to(device), cols.to(device)
    split = body_and_head(model)
    if split is None:
        logits = model(**inputs).logits[rows, cols].float()  # (N, V)
    else:
        hidden = split[0](**inputs).last_hidden_state  # (B, T, H)
        logits = split[1](hidden[rows, cols]).float()  # (N, V): the head at scored positions only
    logps: torch.Tensor = logits.log_softmax(-1).gather(1, targets.to(device).unsqueeze(1)).squeeze(1)
    return logps  # (N,)


def score_prefix_groups(
    model: torch.nn.Module, groups: Sequence[PrefixGroup], batch_size: int, pad_id: int
) -> list[list[float]]:
    """Summed log-likelihood of every continuation of every group, ``batch_size`` groups per pass.

    Groups are sorted by packed length (longest first) and right-padded per batch.
    """
    order = sorted(range(len(groups)), key=lambda g: -groups[g].length)
    dtype = next(model.parameters()).dtype
    if not dtype.is_floating_point:  # quantized weights: the mask follows the compute dtype
        dtype = torch.float32
    scores: list[list[float]] = [[] for _ in groups]
    for start in range(0, len(order), batch_size):
        chunk = [groups[g] for g in order[start : start + batch_size]]
        input_ids, position_ids, mask, rows, cols, targets, owners = _pack(chunk, pad_id, dtype)
        logps = gathered_logps(model, input_ids, mask, rows, cols, targets, position_ids)  # (N,)
        num_conts = sum(len(g.continuations) for g in chunk)
        sums = torch.zeros(num_conts, dtype=torch.float64).index_add_(0, owners, logps.double().cpu())
        pos = 0
        for g, group in zip(order[start : start + batch_size], chunk, strict=True):
            k = len(group.continuations)
            scores[g] = [float(v) for v in sums[pos : pos + k]]
            pos += k
    return scores


def _pack(
    chunk: Sequence[PrefixGroup], pad_id: int, dtype: torch.dtype
) -> tuple[torch.Tensor, ...]:
    """Token ids, position ids, the 4D tree mask and the scored (row, col, target, owner) lists."""
    width = max(g.length for g in chunk)
    input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)  # (B, T)
    position_ids = torch.zeros((len(chunk), width), dtype=torch.long)  # (B, T)
    segment = torch.full((len(chunk), width), -1, dtype=torch.long)  # -1 pad, 0 prefix, k cont
    rows: list[int] = []
    cols: list[int] = []
    targets: list[int] = []
    owners: list[int] = []
    owner = 0
    for row, group in enumerate(chunk):
        p = len(group.prefix)
        input_ids[row, :p] = torch.as_tensor(group.prefix)
        position_ids[row, :p] = torch.arange(p)
        segment[row, :p] = 0
        offset = p
        for k, cont in enumerate(group.continuations, start=1):
            n = len(cont)
            input_ids[row, offset : offset + n] = torch.as_tensor(cont)
            position_ids[row, offset : offset + n] = torch.arange(p, p + n)
            segment[row, offset : offset + n] = k
            predecessors = [p - 1, *range(offset, offset + n - 1)]
            rows += [row] * n
            cols += predecessors
            targets += cont
            owners += [owner] * n
            owner += 1
            offset += n
    mask = _tree_mask(segment, dtype)
    rows_t, cols_t, targets_t, owners_t = (torch.as_tensor(v, dtype=torch.long) for v in (rows, cols, targets, owners))
    return input_ids, position_ids, mask, rows_t, cols_t, targets_t, owners_t


def _tree_mask(segment: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive ``(B, 1, T, T)`` mask: query i sees key j <= i of the prefix or of its own segment."""
    width = segment.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool).tril()  # (T, T)
    query, key = segment.unsqueeze(2), segment.unsqueeze(1)  # (B, T, 1), (B, 1, T)
    allowed = causal & (key >= 0) & ((key == 0) | (key == query))  # (B, T, T)
    allowed |= torch.eye(width, dtype=torch.bool)  # padding rows see themselves (no empty softmax)
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask.unsqueeze(1)  # (B, 1, T, T)
