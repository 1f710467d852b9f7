"""A model-free ClientRuntime: 'training' adds a client-specific constant to trainable tensors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ecolora.strategies.base import TrainResult


def lora_template(scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "layers.0.q_proj.lora_A.weight": torch.randn(2, 4, generator=g) * scale,
        "layers.0.q_proj.lora_B.weight": torch.zeros(3, 2),
        "layers.1.q_proj.lora_A.weight": torch.randn(2, 4, generator=g) * scale,
        "layers.1.q_proj.lora_B.weight": torch.zeros(3, 2),
    }


@dataclass
class FakeRuntime:
    client_id: int
    num_examples: int
    step: float = 1.0
    state: dict[str, Any] = field(default_factory=dict)
    lora: dict[str, torch.Tensor] = field(default_factory=dict)
    frozen: set[str] = field(default_factory=set)
    merged: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    seen_start: dict[str, torch.Tensor] = field(default_factory=dict)

    def get_lora(self):
        return {k: v.clone() for k, v in self.lora.items()}

    def set_lora(self, tensors):
        self.lora = {k: v.clone().float() for k, v in tensors.items()}
        self.frozen = set()

    def freeze(self, predicate):
        self.frozen = {k for k in self.lora if predicate(k)}

    def use_rank(self, rank):
        self.lora = {
            k: torch.zeros(rank, v.shape[1]) if "lora_A" in k else torch.zeros(v.shape[0], rank)
            for k, v in (self.lora or lora_template()).items()
        }

    def merge_into_base(self, tag, factors):
        self.merged[tag] = {m: b @ a for m, (b, a) in factors.items()}

    def train(self, server_round, config):
        self.seen_start = self.get_lora()
        for k in self.lora:
            if k not in self.frozen:
                self.lora[k] = self.lora[k] + self.step * (self.client_id + 1)
        return TrainResult(train_loss=2.0 - 0.1 * server_round, initial_loss=2.5, num_examples=self.num_examples,
                           num_steps=1, compute_s=0.01)


@dataclass
class NoisyRuntime(FakeRuntime):
    """Like FakeRuntime, plus seeded per-(client, round) noise, so that top-k has no ties."""

    calls: int = 0

    def train(self, server_round, config):
        result = super().train(server_round, config)
        g = torch.Generator().manual_seed(1000 * self.client_id + int(server_round))
        for k in sorted(self.lora):
            noise = torch.randn(self.lora[k].shape, generator=g)
            if k not in self.frozen:
                self.lora[k] = self.lora[k] + noise
        self.calls += 1
        return result
