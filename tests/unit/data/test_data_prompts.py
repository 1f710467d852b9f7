"""Alpaca template, response-only labels, truncation rules and right-padding collation."""

from __future__ import annotations

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from ecolora.data.prompts import (
    HEAD_WITH_INPUT,
    IGNORE_INDEX,
    INPUT_HEADER,
    RESPONSE_MARKER,
    collate_sft,
    encode_sft,
    format_prompt,
)

ROW = {"instruction": "Name the capital.", "input": "France", "output": "Paris", "category": None}


def _ids(tok: PreTrainedTokenizerFast, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_format_prompt_golden_strings() -> None:
    assert format_prompt(ROW) == (
        "Below is an instruction that describes a task, paired with an input that provides "
        "further context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nName the capital.\n\n### Input:\nFrance\n\n### Response:\n"
    )
    assert format_prompt({"instruction": " Say hi. ", "input": "  "}) == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nSay hi.\n\n### Response:\n"
    )


def test_labels_cover_response_and_eos_only(tokenizer: PreTrainedTokenizerFast) -> None:
    out = encode_sft(tokenizer, ROW, max_seq_len=512)
    prompt_ids, response_ids = _ids(tokenizer, format_prompt(ROW)), _ids(tokenizer, "Paris")
    eos = tokenizer.eos_token_id
    assert out["input_ids"] == prompt_ids + response_ids + [eos]
    assert out["labels"] == [IGNORE_INDEX] * len(prompt_ids) + response_ids + [eos]
    # separate tokenization of prompt and response equals tokenizing the whole text
    assert out["input_ids"][:-1] == _ids(tokenizer, format_prompt(ROW) + "Paris")
    assert tokenizer.decode(out["input_ids"]) == format_prompt(ROW) + "Paris<|endoftext|>"


def test_long_input_is_cut_before_the_marker(tokenizer: PreTrainedTokenizerFast) -> None:
    row = dict(ROW, input="the quick brown fox " * 60)
    prompt_ids = _ids(tokenizer, format_prompt(row))
    marker_ids = _ids(tokenizer, RESPONSE_MARKER)
    response_ids = _ids(tokenizer, "Paris") + [tokenizer.eos_token_id]
    max_seq_len = 64
    assert len(prompt_ids) + len(response_ids) > max_seq_len
    out = encode_sft(tokenizer, row, max_seq_len)
    keep = max_seq_len - len(response_ids) - len(marker_ids)
    assert out["input_ids"] == prompt_ids[:keep] + marker_ids + response_ids
    assert out["labels"][-len(response_ids) :] == response_ids
    assert out["labels"].count(IGNORE_INDEX) == max_seq_len - len(response_ids)


def test_long_response_keeps_half_the_budget_for_the_prompt(
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    row = dict(ROW, input="the quick brown fox " * 30, output="jumps over the lazy dog " * 40)
    prompt_ids = _ids(tokenizer, format_prompt(row))
    marker_ids = _ids(tokenizer, RESPONSE_MARKER)
    response_ids = _ids(tokenizer, row["output"].strip())
    out = encode_sft(tokenizer, row, 80)
    assert out["input_ids"] == prompt_ids[: 40 - len(marker_ids)] + marker_ids + response_ids[:40]
    assert out["labels"] == [IGNORE_INDEX] * 40 + response_ids[:40]
    assert tokenizer.eos_token_id not in out["input_ids"]  # cut text must not learn to stop


def test_long_instruction_and_long_input_share_the_room(
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    row = {
        "instruction": "Definition: the quick brown fox " * 20,
        "input": "Passage: a federated client trains " * 20,
        "output": "Paris",
    }
    head, header = _ids(tokenizer, HEAD_WITH_INPUT), _ids(tokenizer, INPUT_HEADER)
    marker = _ids(tokenizer, RESPONSE_MARKER)
    instruction = _ids(tokenizer, row["instruction"].strip())
    context = _ids(tokenizer, row["input"].strip())
    response = _ids(tokenizer, "Paris") + [tokenizer.eos_token_id]
    max_seq_len = 120
    room = max_seq_len - len(response) - len(head) - len(header) - len(marker)
    assert room < min(len(instruction), len(context))  # both fields must be cut
    out = encode_sft(tokenizer, row, max_seq_len)
    half = room // 2
    expected = head + instruction[:half] + header + context[: room - half] + marker + response
    assert out["input_ids"] == expected


def test_tiny_budget_keeps_prompt_start_and_marker(tokenizer: PreTrainedTokenizerFast) -> None:
    marker = _ids(tokenizer, RESPONSE_MARKER)
    max_seq_len = 2 * len(marker) + 2  # the smallest accepted length
    row = dict(ROW, output="jumps over the lazy dog " * 10)
    out = encode_sft(tokenizer, row, max_seq_len)
    budget = max_seq_len // 2
    assert len(_ids(tokenizer, HEAD_WITH_INPUT)) + len(marker) > budget  # template cannot fit
    prompt = _ids(tokenizer, format_prompt(row))[: budget - len(marker)] + marker
    response = _ids(tokenizer, row["output"].strip())[: max_seq_len - budget]
    assert out["input_ids"] == prompt + response
    assert out["labels"] == [IGNORE_INDEX] * budget + response


def test_short_prompt_stays_whole_when_the_response_is_cut(
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    row = {"instruction": "Hi", "input": "", "output": "the lazy dog " * 100}
    prompt_ids = _ids(tokenizer, format_prompt(row))
    assert len(prompt_ids) < 256 // 2
    out = encode_sft(tokenizer, row, 256)
    assert out["input_ids"][: len(prompt_ids)] == prompt_ids
    assert len(out["input_ids"]) == len(out["labels"]) == 256


def test_encode_rejects_bad_lengths_and_missing_eos(tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(ValueError, match=r"`max_seq_len` must be >= \d+ .*got 4"):
        encode_sft(tokenizer, ROW, 4)
    with pytest.raises(TypeError, match=r"`max_seq_len` must be an int, got float"):
        encode_sft(tokenizer, ROW, 64.0)  # type: ignore[arg-type]
    no_eos = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer)
    with pytest.raises(ValueError, match=r"no `eos_token`"):
        encode_sft(no_eos, ROW, 64)


def test_collate_right_pads() -> None:
    batch = collate_sft(
        [
            {"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
            {"input_ids": [8], "labels": [8]},
        ],
        pad_token_id=1,
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert all(t.dtype == torch.long for t in batch.values())


def test_collate_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="empty batch"):
        collate_sft([], pad_token_id=0)
    with pytest.raises(ValueError, match=r"Example 0: `labels` has 1 entries, `input_ids` 2"):
        collate_sft([{"input_ids": [1, 2], "labels": [2]}], pad_token_id=0)


def test_loss_only_counts_response_tokens(tokenizer: PreTrainedTokenizerFast) -> None:
    """Cross-entropy with these labels equals the mean over response positions computed by hand."""
    out = encode_sft(tokenizer, ROW, 512)
    batch = collate_sft([out], pad_token_id=tokenizer.pad_token_id)
    logits = torch.randn(1, batch["input_ids"].shape[1], len(tokenizer))  # (1, T, V)
    shifted = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), shifted.flatten())
    response_positions = [t for t in range(shifted.shape[1]) if shifted[0, t] != IGNORE_INDEX]
    by_hand = torch.stack(
        [-logits[0, t].log_softmax(-1)[shifted[0, t]] for t in response_positions]
    ).mean()
    assert len(response_positions) == len(_ids(tokenizer, "Paris")) + 1
    torch.testing.assert_close(loss, by_hand)
