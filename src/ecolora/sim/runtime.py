"""Simulated clients that share one base model in memory.

Each :class:`SimClient` owns only its persistent state (a dict of tensors and JSON values) and its
data indices; the model, tokenizer and trainer are shared. Switching clients swaps LoRA weights
in place (``set_lora_state``), so the base model is loaded once per run, never per client.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from peft import PeftModel

from ecolora.client.lora import add_to_base_weights, get_lora_state, set_lora_state, use_adapter
from ecolora.client.train import LocalTrainer
from ecolora.strategies.base import LowRank, TrainResult

__all__ = ["SharedModel", "SimClient"]


@dataclass
class SharedModel:
    """The one peft model of the run plus bookkeeping of adapters and merged base deltas."""

    model: PeftModel
    trainer: LocalTrainer
    adapter_for_rank: Callable[[int], str] | None = None  # rank -> adapter name (Strategy.adapter_ranks)
    active_adapter: str = "default"
    merged_tags: set[str] = field(default_factory=set)

    def lora_parameters(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if "lora_" in n and f".{self.active_adapter}." in n}


@dataclass
class SimClient:
    client_id: int
    indices: Sequence[int]
    shared: SharedModel
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def num_examples(self) -> int:
        return len(self.indices)

    def get_lora(self) -> dict[str, torch.Tensor]:
        return get_lora_state(self.shared.model, self.shared.active_adapter)

    def set_lora(self, tensors: Mapping[str, torch.Tensor]) -> None:
        set_lora_state(self.shared.model, tensors, self.shared.active_adapter)
        # A new client starts with every LoRA tensor of its adapter trainable.
        for p in self.shared.lora_parameters().values():
            p.requires_grad_(True)

    def freeze(self, predicate: Callable[[str], bool]) -> None:
        for name, p in self.shared.lora_parameters().items():
            if predicate(name):
                p.requires_grad_(False)

    def use_rank(self, rank: int) -> None:
        if self.shared.adapter_for_rank is None:
            raise ValueError(f"This run has a single LoRA adapter; use_rank({rank}) needs the strategy's adapter_ranks().")
        name = self.shared.adapter_for_rank(rank)
        use_adapter(self.shared.model, name)
        self.shared.active_adapter = name

    def merge_into_base(self, tag: str, factors: Mapping[str, LowRank]) -> None:
        """Add ``B @ A`` to each module's base weight once per tag (all simulated clients share the base)."""
        if tag in self.shared.merged_tags:
            return
        deltas = {m: b.float() @ a.float() for m, (b, a) in factors.items()}  # (d_out, d_in)
        add_to_base_weights(self.shared.model, deltas)
        self.shared.merged_tags.add(tag)

    def train(self, server_round: int, config: Mapping[str, Any]) -> TrainResult:
        return self.shared.trainer.train(self.indices, self.client_id, server_round)
