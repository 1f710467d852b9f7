"""A bigram "language model" whose next-token probabilities are set by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch


class BigramLM(torch.nn.Module):
    """``p(next | current) = probs[current][next]``; unset rows and mass are spread uniformly."""

    def __init__(self, vocab_size: int, probs: dict[int, dict[int, float]]) -> None:
        super().__init__()
        table = torch.full((vocab_size, vocab_size), 0.0)
        for current, row in probs.items():
            rest = 1.0 - sum(row.values())
            free = vocab_size - len(row)
            table[current] = math.log(rest / free) if free else -1e9
            for nxt, p in row.items():
                table[current, nxt] = math.log(p)
        self.table = torch.nn.Parameter(table)

    def forward(self, input_ids: torch.Tensor, attention_mask=None, **kwargs) -> SimpleNamespace:
        return SimpleNamespace(logits=self.table[input_ids])  # (B, T, V)
