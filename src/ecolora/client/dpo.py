"""Direct Preference Optimization (DPO) for one client's local steps.

Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
NeurIPS 2023 (arXiv 2305.18290), eq. 7:

    L_DPO = -E_(x, y_w, y_l) [ log sigma( beta * (log pi(y_w|x)/pi_ref(y_w|x)
                                                   - log pi(y_l|x)/pi_ref(y_l|x)) ) ]

Steps for one batch of preference pairs (prompt x, chosen y_w, rejected y_l):

1. Tokenize ``x + y_w`` and ``x + y_l``; labels are -100 on the prompt (``encode_preference``).
2. One forward pass of the policy over the stacked ``[chosen; rejected]`` batch gives the summed
   response log-probabilities ``log pi(y|x)`` (``sequence_logps``).
3. The reference ``pi_ref`` is the *same* model with its LoRA adapter disabled
   (``peft_model.disable_adapter()`` under ``torch.no_grad()``): the frozen base weights, so no
   second copy of the model is held in memory.
4. Implicit rewards ``r = beta * (log pi - log pi_ref)``; loss ``-log sigma(r_w - r_l)``; reward
   accuracy is the share of pairs with ``r_w > r_l`` and the margin is the mean of ``r_w - r_l``.

TRL's ``DPOTrainer`` computes the same loss (``loss_type="sigmoid"``), but only inside its own
``Trainer`` (accelerator, dataset preprocessing, its own optimizer and schedule), which does not
compose with the per-client loop of a federated round; the loss is therefore implemented here and
tested against TRL's trainer on the same batch (``tests/unit/dpo/test_dpo_trl_parity.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from peft import PeftModel

__all__ = [
    "IGNORE_INDEX",
    "collate_preference",
    "dpo_batch_loss",
    "dpo_loss",
    "encode_pair",
    "encode_preference",
    "pair_logps",
    "sequence_logps",
]

IGNORE_INDEX = -100
_PAIR_KEYS = ("prompt", "chosen", "rejected")


# ---------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO sigmoid loss (Rafailov et al. 2023, eq. 7), per pair.

    Args:
        policy_chosen_logps: ``log pi(y_w|x)`` summed over response tokens, shape ``(B,)``.
        policy_rejected_logps: ``log pi(y_l|x)``, ``(B,)``.
        ref_chosen_logps: ``log pi_ref(y_w|x)``, ``(B,)``.
        ref_rejected_logps: ``log pi_ref(y_l|x)``, ``(B,)``.
        beta: KL strength; larger keeps the policy closer to the reference.

    Returns:
        ``(losses, chosen_rewards, rejected_rewards)``, each ``(B,)``: the per-pair loss
        ``-log sigma(beta * ((pc - rc) - (pr - rr)))`` (take ``.mean()`` for the batch loss, as TRL
        does) and the detached implicit rewards ``beta * (pc - rc)`` and ``beta * (pr - rr)``.
    """
    if not beta > 0:
        raise ValueError(f"`beta` must be > 0, got {beta}.")
    shapes = {
        t.shape
        for t in (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    }
    if len(shapes) != 1:
        raise ValueError(
            f"dpo_loss needs four log-prob tensors of one shape, got {sorted(shapes)}."
        )
    chosen_logratios = policy_chosen_logps - ref_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # (B,)
    losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))  # (B,)
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


# ---------------------------------------------------------------------------------------------
# Tokenization and collation
# ---------------------------------------------------------------------------------------------


def encode_pair(
    tokenizer: Any, prompt: str, response: str, max_seq_len: int
) -> tuple[list[int], list[int]]:
    """Token ids of ``prompt + response + eos`` and labels that are -100 on the prompt.

    The prompt (with the tokenizer's special tokens, e.g. BOS) and the response (without) are
    tokenized separately, so the prompt/response boundary is exact, as in TRL. Too long: the
    response keeps at most ``max(max_seq_len - len(prompt), max_seq_len // 2)`` tokens (cut at its
    end) and the prompt is cut at its start to fill the rest.
    """
    if max_seq_len < 2:
        raise ValueError(f"`max_seq_len` must be >= 2, got {max_seq_len}.")
    prompt_ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    response_ids = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        response_ids.append(int(tokenizer.eos_token_id))
    if len(prompt_ids) + len(response_ids) > max_seq_len:
        keep = max(max_seq_len - len(prompt_ids), max_seq_len // 2)
        response_ids = response_ids[:keep]
        prompt_ids = prompt_ids[len(prompt_ids) + len(response_ids) - max_seq_len :]
    labels = [IGNORE_INDEX] * len(prompt_ids) + response_ids
    return prompt_ids + response_ids, labels


def encode_preference(
    tokenizer: Any, row: Mapping[str, Any], max_seq_len: int
) -> dict[str, list[int]]:
    """Encode one ``{"prompt", "chosen", "rejected"}`` row (see ``encode_pair``).

    Returns:
        ``chosen_input_ids``, ``chosen_labels``, ``rejected_input_ids``, ``rejected_labels``.
    """
    for key in _PAIR_KEYS:
        if not isinstance(row.get(key), str) or not row[key]:
            raise ValueError(
                f"A preference row needs non-empty strings 'prompt', 'chosen' and 'rejected'; "
                f"'{key}' is {row.get(key)!r}."
            )
    chosen_ids, chosen_labels = encode_pair(tokenizer, row["prompt"], row["chosen"], max_seq_len)
    rejected_ids, rejected_labels = encode_pair(
        tokenizer, row["prompt"], row["rejected"], max_seq_len
    )
    return {
        "chosen_input_ids": chosen_ids,
        "chosen_labels": chosen_labels,
        "rejected_input_ids": rejected_ids,
        "rejected_labels": rejected_labels,
    }


def _pad(rows: Sequence[Sequence[int]], length: int, value: int) -> torch.Tensor:
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


def collate_preference(
    examples: Sequence[Mapping[str, Sequence[int]]], pad_token_id: int
) -> dict[str, torch.Tensor]:
    """Right-pad encoded pairs into tensors; chosen and rejected share one length ``T``.

    Returns:
        ``{chosen,rejected}_{input_ids,attention_mask,labels}``, each ``(B, T)``.
    """
    if not examples:
        raise ValueError("collate_preference got no examples.")
    length = max(len(ex[f"{side}_input_ids"]) for ex in examples for side in ("chosen", "rejected"))
    batch: dict[str, torch.Tensor] = {}
    for side in ("chosen", "rejected"):
        ids = [ex[f"{side}_input_ids"] for ex in examples]
        batch[f"{side}_input_ids"] = _pad(ids, length, pad_token_id)  # (B, T)
        batch[f"{side}_attention_mask"] = _pad([[1] * len(r) for r in ids], length, 0)  # (B, T)
        batch[f"{side}_labels"] = _pad([ex[f"{side}_labels"] for ex in examples], length, -100)
    return batch


# ---------------------------------------------------------------------------------------------
# Forward passes
# ---------------------------------------------------------------------------------------------


def sequence_logps(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of the labelled tokens of each sequence, and their count.

    ``log p(y|x) = sum_t log softmax(logits_{t-1})[y_t]`` over positions with ``labels != -100``.
    Only the labelled positions go through ``log_softmax`` (an ``(N, V)`` slice rather than the
    full ``(B, T, V)``), in float32.

    Returns:
        ``(logps, num_tokens)``, each ``(B,)``.
    """
    device = next(model.parameters()).device
    input_ids, attention_mask, labels = (t.to(device) for t in (input_ids, attention_mask, labels))
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    targets = labels[:, 1:]  # (B, T-1)
    mask = targets != IGNORE_INDEX  # (B, T-1)
    picked = logits[:, :-1][mask].float()  # (N, V)
    token_logps = picked.log_softmax(-1).gather(1, targets[mask].unsqueeze(1)).squeeze(1)  # (N,)
    row = torch.arange(targets.shape[0], device=device).unsqueeze(1).expand_as(targets)[mask]
    logps = torch.zeros(targets.shape[0], device=device, dtype=token_logps.dtype)
    logps = logps.index_add(0, row, token_logps)  # (B,)
    return logps, mask.sum(1)


def _stack_sides(batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return tuple(
        torch.cat([batch[f"chosen_{k}"], batch[f"rejected_{k}"]], dim=0)  # (2B, T)
        for k in ("input_ids", "attention_mask", "labels")
    )


def pair_logps(
    peft_model: torch.nn.Module, batch: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Policy and reference log-probs of a collated batch: ``(pc, pr, rc, rr)``, each ``(B,)``.

    The reference is ``peft_model`` itself under ``disable_adapter()`` and ``torch.no_grad()``.
    """
    if not isinstance(peft_model, PeftModel):
        raise TypeError(
            f"DPO needs a peft model (the reference is the model with its adapter disabled), got "
            f"{type(peft_model).__name__}; wrap it with peft.get_peft_model first."
        )
    input_ids, attention_mask, labels = _stack_sides(batch)
    num_pairs = batch["chosen_input_ids"].shape[0]
    policy, _ = sequence_logps(peft_model, input_ids, attention_mask, labels)  # (2B,)
    with torch.no_grad(), peft_model.disable_adapter():
        reference, _ = sequence_logps(peft_model, input_ids, attention_mask, labels)  # (2B,)
    return (
        policy[:num_pairs],
        policy[num_pairs:],
        reference[:num_pairs],
        reference[num_pairs:],
    )


def dpo_batch_loss(
    peft_model: torch.nn.Module, batch: Mapping[str, torch.Tensor], beta: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean DPO loss of a collated batch (differentiable w.r.t. the adapter) and its metrics.

    Returns:
        ``(loss, metrics)`` with metrics ``dpo_loss``, ``reward_accuracy`` (share of pairs with
        ``r_w > r_l``), ``reward_margin`` (mean ``r_w - r_l``), ``chosen_reward`` and
        ``rejected_reward`` (means).
    """
    losses, chosen_rewards, rejected_rewards = dpo_loss(*pair_logps(peft_model, batch), beta)
    loss = losses.mean()
    metrics = {
        "dpo_loss": float(loss.detach()),
        "reward_accuracy": float((chosen_rewards > rejected_rewards).float().mean()),
        "reward_margin": float((chosen_rewards - rejected_rewards).mean()),
        "chosen_reward": float(chosen_rewards.mean()),
        "rejected_reward": float(rejected_rewards.mean()),
    }
    return loss, metrics
