"""Alpaca prompt template and supervised fine-tuning (SFT) encoding with response-only loss.

The template is Stanford Alpaca's (Taori et al., 2023), used by FedIT and OpenFedLLM for
federated instruction tuning. The loss is the mean next-token cross-entropy over response tokens
only: with prompt tokens ``p`` and response tokens ``r`` followed by EOS,

    L = -(1 / (|r| + 1)) * sum_{t in response} log P(x_t | x_<t),

which is what ``labels = -100`` on every prompt (and padding) position gives with Hugging Face
causal-LM models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch

__all__ = [
    "IGNORE_INDEX",
    "PROMPT_NO_INPUT",
    "PROMPT_WITH_INPUT",
    "RESPONSE_MARKER",
    "collate_sft",
    "encode_sft",
    "format_prompt",
]

IGNORE_INDEX = -100  # torch.nn.CrossEntropyLoss(ignore_index=-100), the HF default
RESPONSE_MARKER = "\n\n### Response:\n"
PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}" + RESPONSE_MARKER
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}" + RESPONSE_MARKER
)


class Tokenizer(Protocol):
    """The part of a Hugging Face tokenizer that :func:`encode_sft` uses."""

    eos_token_id: int | None

    def __call__(self, text: str, *, add_special_tokens: bool = ...) -> Mapping[str, Any]: ...


def format_prompt(row: Mapping[str, Any]) -> str:
    """The Alpaca prompt for ``row`` up to and including ``"### Response:\\n"``.

    Rows with an empty ``input`` use the no-input variant of the template.
    """
    instruction = str(row["instruction"]).strip()
    context = str(row.get("input") or "").strip()
    if context:
        return PROMPT_WITH_INPUT.format(instruction=instruction, input=context)
    return PROMPT_NO_INPUT.format(instruction=instruction)


def encode_sft(
    tokenizer: Tokenizer, row: Mapping[str, Any], max_seq_len: int
) -> dict[str, list[int]]:
    """Tokenize prompt + response + EOS; labels are ``-100`` on the prompt.

    The response is ``row["output"]`` with surrounding whitespace stripped. No special tokens are
    added besides the EOS appended after the response (SmolLM2 has no BOS).

    Truncation to ``max_seq_len`` cuts the prompt first so that the response survives:

    1. If prompt + response + EOS fit, nothing is cut.
    2. Otherwise the prompt is shortened, down to a floor of ``min(len(prompt), max_seq_len // 2)``
       tokens. A shortened prompt keeps its beginning (preamble, instruction, start of the input)
       and always ends with the ``### Response:`` marker; the tokens just before the marker
       (the end of the input) are dropped.
    3. If the response + EOS still do not fit next to that floor, the response is cut at its
       end and gets no EOS (the model must not learn to stop where the text did not stop).

    Returns:
        ``{"input_ids": [...], "labels": [...]}`` of equal length ``<= max_seq_len``.
    """
    if isinstance(max_seq_len, bool) or not isinstance(max_seq_len, int):
        raise TypeError(f"`max_seq_len` must be an int, got {type(max_seq_len).__name__}.")
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError("The tokenizer has no `eos_token`; set one before encoding.")
    marker_ids = _ids(tokenizer, RESPONSE_MARKER)
    min_len = 2 * len(marker_ids) + 2
    if max_seq_len < min_len:
        raise ValueError(
            f"`max_seq_len` must be >= {min_len} (room for the response marker and a response), "
            f"got {max_seq_len}."
        )
    prompt_ids = _ids(tokenizer, format_prompt(row))
    response_ids = _ids(tokenizer, str(row["output"]).strip())
    num_prompt, num_response = len(prompt_ids), len(response_ids) + 1  # + EOS
    if num_prompt + num_response <= max_seq_len:
        return _join(prompt_ids, response_ids + [eos_id])
    floor = min(num_prompt, max_seq_len // 2)
    keep_prompt = max(floor, max_seq_len - num_response)
    if keep_prompt < num_prompt:
        cut = keep_prompt - len(marker_ids)
        prompt_ids = prompt_ids[:cut] + marker_ids
    room = max_seq_len - len(prompt_ids)
    tail = response_ids + [eos_id] if num_response <= room else response_ids[:room]
    return _join(prompt_ids, tail)


def collate_sft(
    examples: Sequence[Mapping[str, Sequence[int]]], pad_token_id: int
) -> dict[str, torch.Tensor]:
    """Right-pad encoded examples into a batch.

    Returns:
        ``input_ids`` (pad: ``pad_token_id``), ``attention_mask`` (1 real, 0 pad) and ``labels``
        (pad: -100), each a ``torch.long`` tensor of shape ``(batch, longest)``.
    """
    if not examples:
        raise ValueError("collate_sft needs at least one example, got an empty batch.")
    lengths = torch.tensor([len(ex["input_ids"]) for ex in examples])  # (batch,)
    width = int(lengths.max())
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for i, ex in enumerate(examples):
        if len(ex["labels"]) != len(ex["input_ids"]):
            raise ValueError(
                f"Example {i}: `labels` has {len(ex['labels'])} entries, `input_ids` "
                f"{len(ex['input_ids'])}; they must match."
            )
        n = len(ex["input_ids"])
        input_ids[i, :n] = torch.as_tensor(ex["input_ids"], dtype=torch.long)
        labels[i, :n] = torch.as_tensor(ex["labels"], dtype=torch.long)
    attention_mask = (torch.arange(width)[None, :] < lengths[:, None]).long()  # (batch, longest)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _ids(tokenizer: Tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _join(prompt_ids: list[int], response_ids: list[int]) -> dict[str, list[int]]:
    return {
        "input_ids": prompt_ids + response_ids,
        "labels": [IGNORE_INDEX] * len(prompt_ids) + response_ids,
    }
