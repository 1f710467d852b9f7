"""Held-out loss: token-weighted mean cross-entropy of a causal LM over labelled tokens.

``L = -(1 / N) * sum_{b, t : label_{b,t} != -100} log p(label_{b,t} | tokens_{b,<t})`` with ``N``
the number of labelled tokens over *all* batches, so that every token weighs the same whatever
the batch it falls in (the mean of per-batch means would over-weight short batches). The output
head runs only at the labelled positions (:func:`ecolora.eval.logits.gathered_logps`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch

from ecolora.client.dpo import IGNORE_INDEX
from ecolora.client.logits import gathered_logps

__all__ = ["held_out_loss", "perplexity"]


def held_out_loss(model: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> float:
    """Token-weighted mean cross-entropy over ``labels != -100``.

    Args:
        model: a causal LM returning ``.logits`` of shape ``(B, T, V)``.
        batches: dicts with ``input_ids`` and ``labels`` ``(B, T)`` and optionally
            ``attention_mask`` (all ones when absent); labels are the inputs themselves
            (the shift happens here), -100 where a token is not scored.
    """
    total_nll, total_tokens = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in batches:
                input_ids = batch["input_ids"]
                attention_mask = batch.get("attention_mask")
                if attention_mask is None:
                    attention_mask = torch.ones_like(input_ids)
                targets = batch["labels"][:, 1:]  # (B, T-1): token t+1 is predicted at t
                rows, cols = (targets != IGNORE_INDEX).nonzero(as_tuple=True)  # (N,), (N,)
                if rows.numel() == 0:
                    continue
                logps = gathered_logps(
                    model, input_ids, attention_mask, rows, cols, targets[rows, cols]
                )  # (N,)
                total_nll -= float(logps.double().sum())
                total_tokens += int(rows.numel())
    finally:
        model.train(was_training)
    if total_tokens == 0:
        raise ValueError(
            "held_out_loss got no labelled tokens (no batches, or every label is -100)."
        )
    return total_nll / total_tokens


def perplexity(loss: float) -> float:
    """``exp(loss)``, capped to ``inf`` on overflow."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf
