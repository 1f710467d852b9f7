"""Held-out loss (token-weighted) and preference accuracy against the adapter-disabled base."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tiny_lm import wrap_lora

from ecolora.client.dpo import collate_preference, dpo_loss, encode_preference, pair_logps
from ecolora.eval import held_out_loss, perplexity, preference_accuracy


def _manual_nll(model, input_ids, labels) -> tuple[float, int]:
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits[:, :-1]
    targets = labels[:, 1:]
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
    )
    return total.item(), int((targets != -100).sum())


def test_held_out_loss_weights_every_token_equally(model) -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randint(4, 50, (2, 12), generator=g)  # 2 x 11 scored tokens
    b = torch.randint(4, 50, (1, 4), generator=g)
    labels_b = b.clone()
    labels_b[0, :2] = -100  # 2 scored tokens
    batches = [{"input_ids": a, "labels": a.clone()}, {"input_ids": b, "labels": labels_b}]
    (nll_a, n_a), (nll_b, n_b) = _manual_nll(model, a, a), _manual_nll(model, b, labels_b)
    assert (n_a, n_b) == (22, 2)
    expected = (nll_a + nll_b) / (n_a + n_b)
    assert held_out_loss(model, batches) == pytest.approx(expected, rel=1e-5)
    assert held_out_loss(model, batches) != pytest.approx((nll_a / n_a + nll_b / n_b) / 2, rel=1e-3)


def test_held_out_loss_ignores_padding_positions(model) -> None:
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    padded = torch.tensor([[1, 5, 6, 7, 8, 0, 0], [1, 9, 0, 0, 0, 0, 0]])
    labels = padded.masked_fill(padded == 0, -100)
    labels[1] = -100
    mask = (padded != 0).long()
    alone = held_out_loss(model, [{"input_ids": ids, "labels": ids.clone()}])
    batched = held_out_loss(
        model, [{"input_ids": padded, "attention_mask": mask, "labels": labels}]
    )
    assert batched == pytest.approx(alone, abs=1e-5)


def test_held_out_loss_without_tokens() -> None:
    with pytest.raises(ValueError, match="held_out_loss got no labelled tokens"):
        held_out_loss(torch.nn.Linear(1, 1), [])


def test_perplexity() -> None:
    assert perplexity(math.log(7.0)) == pytest.approx(7.0)
    assert perplexity(1e6) == math.inf


PAIRS = [
    {"prompt": "what is the capital of france ?", "chosen": "paris .", "rejected": "rome ."},
    {"prompt": "the sky is", "chosen": "blue", "rejected": "green and red"},
    {"prompt": "is the grass green ?", "chosen": "yes", "rejected": "no"},
]


def test_preference_accuracy_matches_the_dpo_functions(tokenizer, model) -> None:
    peft_model = wrap_lora(model)
    result = preference_accuracy(peft_model, tokenizer, PAIRS, beta=0.5, batch_size=2)
    batch = collate_preference([encode_preference(tokenizer, p, 512) for p in PAIRS], 0)
    with torch.no_grad():
        losses, r_w, r_l = dpo_loss(*pair_logps(peft_model, batch), 0.5)
    assert result["n"] == 3
    assert result["reward_accuracy"] == pytest.approx(float((r_w > r_l).float().mean()))
    assert result["reward_margin"] == pytest.approx(float((r_w - r_l).mean()), abs=1e-5)
    assert result["dpo_loss"] == pytest.approx(float(losses.mean()), abs=1e-5)
    assert result["chosen_reward"] == pytest.approx(float(r_w.mean()), abs=1e-5)
    assert abs(result["reward_margin"]) > 1e-3


def test_preference_accuracy_of_a_fresh_adapter_is_zero(tokenizer, model) -> None:
    result = preference_accuracy(wrap_lora(model, perturb=False), tokenizer, PAIRS)
    assert result["reward_accuracy"] == 0.0
    assert result["reward_margin"] == pytest.approx(0.0, abs=1e-6)
    assert result["dpo_loss"] == pytest.approx(math.log(2.0), abs=1e-6)


def test_preference_accuracy_input_errors(tokenizer, model) -> None:
    with pytest.raises(ValueError, match="preference_accuracy got no pairs"):
        preference_accuracy(wrap_lora(model), tokenizer, [])
    with pytest.raises(TypeError, match="DPO needs a peft model"):
        preference_accuracy(model, tokenizer, PAIRS)
