"""Preference accuracy of a LoRA policy against its adapter-disabled reference.

For held-out pairs ``(x, y_w, y_l)`` the DPO implicit reward (Rafailov et al. 2023, sec. 5) is
``r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))`` with ``pi_ref`` the same model under
``disable_adapter()``. Reported: reward accuracy ``mean[r_w > r_l]``, reward margin
``mean[r_w - r_l]``, the mean DPO loss and the mean rewards. Before any training (LoRA ``B = 0``)
the policy equals the reference: every reward is 0, accuracy 0 and the loss ``log 2``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch

from ecolora.client.dpo import collate_preference, dpo_loss, encode_preference, pair_logps

__all__ = ["preference_accuracy", "preference_metrics"]


def preference_metrics(
    peft_model: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], *, beta: float = 0.1
) -> dict[str, float]:
    """Reward statistics over collated batches (``collate_preference`` output), pair-weighted.

    Returns:
        ``{"reward_accuracy", "reward_margin", "dpo_loss", "chosen_reward", "rejected_reward",
        "n"}``, each a mean over pairs.
    """
    losses, chosen, rejected = [], [], []
    was_training = peft_model.training
    peft_model.eval()
    try:
        with torch.inference_mode():
            for batch in batches:
                loss, r_w, r_l = dpo_loss(*pair_logps(peft_model, batch), beta)
                losses.append(loss)
                chosen.append(r_w)
                rejected.append(r_l)
    finally:
        peft_model.train(was_training)
    if not losses:
        raise ValueError("preference_metrics got no batches.")
    r_w, r_l = torch.cat(chosen), torch.cat(rejected)  # (n,)
    return {
        "reward_accuracy": float((r_w > r_l).float().mean()),
        "reward_margin": float((r_w - r_l).mean()),
        "dpo_loss": float(torch.cat(losses).mean()),
        "chosen_reward": float(r_w.mean()),
        "rejected_reward": float(r_l.mean()),
        "n": int(r_w.numel()),
    }


def preference_accuracy(
    peft_model: torch.nn.Module,
    tokenizer: Any,
    pairs: Sequence[Mapping[str, Any]],
    *,
    beta: float = 0.1,
    batch_size: int = 8,
    max_seq_len: int = 512,
) -> dict[str, float]:
    """Reward accuracy and margin of ``peft_model`` on ``pairs`` (``{"prompt","chosen","rejected"}``).

    Returns:
        The fields of ``preference_metrics``.
    """
    if not pairs:
        raise ValueError("preference_accuracy got no pairs.")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def batches() -> Iterator[dict[str, torch.Tensor]]:
        for start in range(0, len(pairs), batch_size):
            rows = pairs[start : start + batch_size]
            yield collate_preference(
                [encode_preference(tokenizer, r, max_seq_len) for r in rows], pad_id
            )

    return preference_metrics(peft_model, batches(), beta=beta)
