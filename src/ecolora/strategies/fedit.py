"""FedIT and FFA-LoRA: FedAvg over the exchanged LoRA matrices.

FedIT (Zhang et al., "Towards Building the Federated GPT: Federated Instruction Tuning",
ICASSP 2024): every sampled client starts from the global LoRA, trains A and B locally, and the
server replaces the global LoRA by the sample-weighted mean

    P^{t+1} = sum_{i in S_t} n_i P_i^t / sum_{i in S_t} n_i.

FFA-LoRA (Sun et al., "Improving LoRA in Privacy-preserving Federated Learning", ICLR 2024):
A is initialised once from a seed shared by all parties and frozen; only B is trained and
exchanged, which halves traffic and makes the average of B_i A equal to (mean B_i) A exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ecolora.strategies.base import (
    ClientRuntime,
    Message,
    Strategy,
    clip_factor,
    overlay_lora,
    train_metrics,
)

__all__ = ["FedIT", "FFALoRA", "is_lora_a"]


def is_lora_a(name: str) -> bool:
    return "lora_A" in name


class FedIT(Strategy):
    """FedAvg over LoRA A and B (dense fp16 messages)."""

    name = "fedit"

    def __init__(self, config, initial_lora) -> None:  # type: ignore[no-untyped-def]
        super().__init__(config, initial_lora)
        self.global_state = {k: v.clone() for k, v in self.initial_lora.items() if self.exchanged(k)}

    def exchanged(self, name: str) -> bool:
        """Whether a LoRA tensor is trained and sent (all of them for FedIT)."""
        return True

    # ---- server ------------------------------------------------------------------------------
    def configure_round(self, server_round: int, client_ids: list[int]) -> dict[int, Message]:
        # One copy of the global state shared by every message: memory does not grow with clients.
        snapshot = {k: v.clone() for k, v in self.global_state.items()}
        messages = {cid: Message(config={"round": server_round}, tensors=dict(snapshot)) for cid in client_ids}
        self.remember_asked(server_round, messages)
        return messages

    def expected_shapes(self, client_id: int, asked: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.global_state.items()}

    def max_message_numel(self) -> int:
        """Every message carries at most the whole LoRA (both directions)."""
        return sum(v.numel() for v in self.initial_lora.values())

    # Streaming FedAvg: one running sum S = sum_i n_i P_i and W = sum_i n_i, whatever the clients.
    def fold_begin(self, server_round: int) -> None:
        self._sum = {k: torch.zeros_like(v) for k, v in self.global_state.items()}
        self._weight = 0.0

    def fold(self, client_id: int, reply: Message) -> None:
        for k, acc in self._sum.items():
            acc.add_(reply.tensors[k].float(), alpha=float(reply.num_examples))
        self._weight += float(reply.num_examples)

    def fold_end(self, server_round: int) -> dict[str, Any]:
        self.global_state = {k: acc / self._weight for k, acc in self._sum.items()}
        self._sum = {}
        return {}

    def clip_reply(self, reply: Message, max_norm: float) -> tuple[Message, float]:
        """Clip U_i = P_i - P^t (the reply minus the global state it started from)."""
        update = {k: reply.tensors[k].float() - v for k, v in self.global_state.items()}
        factor, norm = clip_factor(sum(float(u.square().sum()) for u in update.values()), max_norm)
        if factor < 1.0:
            tensors = {k: self.global_state[k] + factor * u for k, u in update.items()}
            reply = Message(config=reply.config, tensors=tensors, num_examples=reply.num_examples, metrics=reply.metrics)
        return reply, norm

    def global_lora(self) -> dict[str, torch.Tensor]:
        return overlay_lora(self.initial_lora, self.global_state)

    # ---- client ------------------------------------------------------------------------------
    def client_round(self, runtime: ClientRuntime, message: Message) -> Message:
        runtime.set_lora(self._complete(message.tensors))
        self.before_training(runtime)  # after set_lora, which makes every LoRA tensor trainable
        result = runtime.train(message.config["round"], message.config)
        local = runtime.get_lora()
        return Message(
            config={"round": message.config["round"]},
            tensors={k: v for k, v in local.items() if self.exchanged(k)},
            num_examples=result.num_examples,
            metrics=train_metrics(result),
        )

    def before_training(self, runtime: ClientRuntime) -> None:
        """Hook: FFA-LoRA freezes A here."""

    def _complete(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Received exchanged tensors plus the fixed, never-sent ones (FFA's shared A)."""
        full = {k: v for k, v in self.initial_lora.items() if not self.exchanged(k)}
        full.update(tensors)
        return full

    def state_dict(self) -> dict[str, Any]:
        return {"global_state": self.global_state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.global_state = {k: v.clone() for k, v in state["global_state"].items()}


class FFALoRA(FedIT):
    """FFA-LoRA: A frozen at its shared-seed initialisation; only B trained and exchanged."""

    name = "ffa"

    def exchanged(self, name: str) -> bool:
        return not is_lora_a(name)

    def before_training(self, runtime: ClientRuntime) -> None:
        runtime.freeze(is_lora_a)
