"""Encoding, collation, sequence log-probs and the adapter-disabled reference."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from tiny_lm import make_model, wrap_lora

from ecolora.client.dpo import (
    collate_preference,
    dpo_batch_loss,
    encode_pair,
    encode_preference,
    pair_logps,
    sequence_logps,
)

ROW = {"prompt": "what is the capital of france ?", "chosen": "paris .", "rejected": "rome ."}
ROWS = [
    ROW,
    {"prompt": "the sky is", "chosen": "blue", "rejected": "green and red and green"},
    {"prompt": "is the grass green ?", "chosen": "yes", "rejected": "no"},
]


def _batch(tokenizer, rows=ROWS, max_seq_len=64):
    encoded = [encode_preference(tokenizer, r, max_seq_len) for r in rows]
    return collate_preference(encoded, tokenizer.pad_token_id)


def test_encode_preference_masks_the_prompt(tokenizer) -> None:
    out = encode_preference(tokenizer, ROW, max_seq_len=64)
    prompt_ids = tokenizer(ROW["prompt"])["input_ids"]  # <s> what is the capital of france ?
    assert len(prompt_ids) == 8
    paris, rome, dot, eos = (
        tokenizer.convert_tokens_to_ids(t) for t in ("paris", "rome", ".", "</s>")
    )
    assert out["chosen_input_ids"] == prompt_ids + [paris, dot, eos]
    assert out["chosen_labels"] == [-100] * 8 + [paris, dot, eos]
    assert out["rejected_input_ids"] == prompt_ids + [rome, dot, eos]
    assert out["rejected_labels"] == [-100] * 8 + [rome, dot, eos]


def test_encode_pair_truncates_prompt_left_and_long_response_right(tokenizer) -> None:
    ids, labels = encode_pair(tokenizer, "the cat sits on the mat", "yes", max_seq_len=4)
    # response "yes </s>" (2) fits; the prompt keeps its last 2 tokens
    assert tokenizer.convert_ids_to_tokens(ids) == ["the", "mat", "yes", "</s>"]
    assert labels[:2] == [-100, -100]
    long_response = " ".join(["good"] * 20)
    ids, labels = encode_pair(tokenizer, "the cat", long_response, max_seq_len=10)
    assert len(ids) == 10
    assert sum(lab != -100 for lab in labels) == 7  # max(10 - 3, 10 // 2)
    assert tokenizer.convert_ids_to_tokens(ids)[:3] == ["<s>", "the", "cat"]


@pytest.mark.parametrize("missing", ["prompt", "chosen", "rejected"])
def test_encode_preference_rejects_incomplete_rows(tokenizer, missing) -> None:
    row = {k: v for k, v in ROW.items() if k != missing}
    with pytest.raises(ValueError, match=f"'{missing}' is None"):
        encode_preference(tokenizer, row, 64)


def test_collate_pads_both_sides_to_one_length(tokenizer) -> None:
    batch = _batch(tokenizer)
    longest = max(
        len(encode_preference(tokenizer, r, 64)[f"{s}_input_ids"])
        for r in ROWS
        for s in ("chosen", "rejected")
    )
    for key, tensor in batch.items():
        assert tensor.shape == (3, longest), key
    assert longest == 11  # row 0 chosen: <s> + 7 prompt tokens + paris . </s>
    # row 1 chosen "<s> the sky is blue </s>" has 6 tokens, then padding
    assert batch["chosen_input_ids"][1, 6:].tolist() == [tokenizer.pad_token_id] * 5
    assert batch["chosen_attention_mask"][1].tolist() == [1] * 6 + [0] * 5
    assert batch["chosen_labels"][1].tolist()[4:] == [
        tokenizer.convert_tokens_to_ids("blue"),
        tokenizer.eos_token_id,
        *[-100] * 5,
    ]


def test_sequence_logps_matches_a_per_token_loop(tokenizer, model) -> None:
    batch = _batch(tokenizer)
    logps, counts = sequence_logps(
        model,
        batch["rejected_input_ids"],
        batch["rejected_attention_mask"],
        batch["rejected_labels"],
    )
    for b in range(3):
        n = int(batch["rejected_attention_mask"][b].sum())
        ids = batch["rejected_input_ids"][b, :n]
        with torch.no_grad():
            log_probs = model(input_ids=ids[None]).logits[0].log_softmax(-1)
        labels = batch["rejected_labels"][b, :n]
        expected = sum(log_probs[t - 1, labels[t]].item() for t in range(1, n) if labels[t] != -100)
        assert logps[b].item() == pytest.approx(expected, abs=1e-4)
        assert counts[b].item() == int((labels != -100).sum())


def test_reference_is_the_adapter_disabled_base_model(tokenizer) -> None:
    base = make_model()
    base_copy = copy.deepcopy(base)  # only for the check: DPO itself never copies the model
    peft_model = wrap_lora(base)
    batch = _batch(tokenizer)
    pc, pr, rc, rr = pair_logps(peft_model, batch)
    with torch.no_grad():
        base_c, _ = sequence_logps(
            base_copy,
            batch["chosen_input_ids"],
            batch["chosen_attention_mask"],
            batch["chosen_labels"],
        )
        base_r, _ = sequence_logps(
            base_copy,
            batch["rejected_input_ids"],
            batch["rejected_attention_mask"],
            batch["rejected_labels"],
        )
    assert torch.allclose(rc, base_c, atol=1e-5) and torch.allclose(rr, base_r, atol=1e-5)
    assert not torch.allclose(pc, rc, atol=1e-3)  # the adapter is back on for the policy
    assert pc.requires_grad and not rc.requires_grad
    pc2, *_ = pair_logps(peft_model, batch)
    assert torch.allclose(pc, pc2, atol=1e-6)


def test_fresh_adapter_gives_log2_loss_and_zero_rewards(tokenizer, model) -> None:
    peft_model = wrap_lora(model, perturb=False)  # LoRA B = 0: policy == reference
    loss, metrics = dpo_batch_loss(peft_model, _batch(tokenizer), beta=0.1)
    assert loss.item() == pytest.approx(math.log(2.0), abs=1e-6)
    assert metrics["reward_accuracy"] == 0.0
    assert metrics["reward_margin"] == pytest.approx(0.0, abs=1e-6)


def test_dpo_steps_train_only_the_adapter_and_raise_the_margin(tokenizer, model) -> None:
    peft_model = wrap_lora(model, perturb=False)
    batch = _batch(tokenizer)
    frozen = {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_" not in n}
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    for _ in range(15):
        loss, metrics = dpo_batch_loss(peft_model, batch, beta=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    _, metrics = dpo_batch_loss(peft_model, batch, beta=0.1)
    assert metrics["reward_accuracy"] == 1.0
    assert metrics["reward_margin"] > 0.1
    assert metrics["dpo_loss"] < math.log(2.0)
    for name, param in peft_model.named_parameters():
        if name in frozen:
            assert torch.equal(param, frozen[name]), name


def test_dpo_needs_a_peft_model(tokenizer, model) -> None:
    with pytest.raises(TypeError, match="DPO needs a peft model .* got LlamaForCausalLM"):
        dpo_batch_loss(model, _batch(tokenizer), beta=0.1)
