"""Alpaca prompt template and supervised fine-tuning (SFT) encoding with response-only loss.

The template is Stanford Alpaca's (Taori et al., 2023), used by FedIT and OpenFedLLM for
federated instruction tuning. The loss is the mean next-token cross-entropy over response tokens
only: with prompt tokens ``p`` and response tokens ``r`` followed by EOS,

    L = -(1 / (|r| + 1)) * sum_{t in response} log P(x_t | x_<t),

which is what ``labels = -100`` on every prompt (and padding) position gives with Hugging Face
causal-LM models.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch

__all__ = [
    "HEAD_NO_INPUT",
    "HEAD_WITH_INPUT",
    "IGNORE_INDEX",
    "INPUT_HEADER",
    "RESPONSE_MARKER",
    "collate_sft",
    "encode_sft",
    "format_prompt",
]

IGNORE_INDEX = -100  # torch.nn.CrossEntropyLoss(ignore_index=-100), the HF default
# The template in pieces: HEAD + instruction [+ INPUT_HEADER + input] + RESPONSE_MARKER.
HEAD_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
)
HEAD_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n"
)
INPUT_HEADER = "\n\n### Input:\n"
RESPONSE_MARKER = "\n\n### Response:\n"


class Tokenizer(Protocol):
    """The part of a Hugging Face tokenizer that :func:`encode_sft` uses."""

    eos_token_id: int | None

    def __call__(self, text: str, *, add_special_tokens: bool = ...) -> Mapping[str, Any]: ...

    def __hash__(self) -> int: ...  # token ids of fixed strings are cached per tokenizer


def format_prompt(row: Mapping[str, Any]) -> str:
    """The Alpaca prompt for ``row`` up to and including ``"### Response:\\n"``.

    ``instruction`` and ``input`` are stripped; an empty ``input`` selects the no-input variant.
    """
    instruction, context = _fields(row)
    if context:
        return HEAD_WITH_INPUT + instruction + INPUT_HEADER + context + RESPONSE_MARKER
    return HEAD_NO_INPUT + instruction + RESPONSE_MARKER


def encode_sft(
    tokenizer: Tokenizer, row: Mapping[str, Any], max_seq_len: int
) -> dict[str, list[int]]:
    """Tokenize prompt + response + EOS; labels are ``-100`` on the prompt.

    The template pieces, the instruction, the input and the response (``row["output"]``,
    stripped) are tokenized separately and concatenated; every boundary is at a newline, so
    this equals tokenizing the whole text for byte-level BPE tokenizers such as SmolLM2's.
    Template pieces and instructions are memoized per tokenizer (Natural-Instructions rows
    share 61 long instructions). No special tokens are added besides the EOS appended after
    the response (SmolLM2 has no BOS).

    Truncation to ``max_seq_len`` cuts the prompt first so that the response survives:

    1. If prompt + response + EOS fit, nothing is cut.
    2. Otherwise the prompt is shortened, down to a floor of ``min(len(prompt), max_seq_len // 2)``
       tokens. The template text (preamble, ``### Input:`` and ``### Response:`` headers) is
       kept; the instruction and the input lose tokens at their ends, the longer one first, so
       when both are long each keeps half of the room (the start of a passage and the start
       of a task definition both survive). If the room is too small even for that, the prompt
       keeps its beginning and the ``### Response:`` marker.
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
    marker_ids = _cached_ids(tokenizer, RESPONSE_MARKER)
    min_len = 2 * len(marker_ids) + 2
    if max_seq_len < min_len:
        raise ValueError(
            f"`max_seq_len` must be >= {min_len} (room for the response marker and a response), "
            f"got {max_seq_len}."
        )
    pieces = _prompt_pieces(tokenizer, row)  # head, instruction, input header, input, marker
    num_prompt = sum(len(piece) for piece in pieces)
    response_ids = _ids(tokenizer, str(row["output"]).strip())
    num_response = len(response_ids) + 1  # + EOS
    budget = num_prompt
    if num_prompt + num_response > max_seq_len:
        budget = max(min(num_prompt, max_seq_len // 2), max_seq_len - num_response)
    prompt_ids = _truncate_prompt(pieces, budget)
    space = max_seq_len - len(prompt_ids)
    tail = response_ids + [eos_id] if num_response <= space else response_ids[:space]
    return {
        "input_ids": prompt_ids + tail,
        "labels": [IGNORE_INDEX] * len(prompt_ids) + tail,
    }


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


def _fields(row: Mapping[str, Any]) -> tuple[str, str]:
    return str(row["instruction"]).strip(), str(row.get("input") or "").strip()


def _prompt_pieces(tokenizer: Tokenizer, row: Mapping[str, Any]) -> list[list[int]]:
    instruction, context = _fields(row)
    return [
        _cached_ids(tokenizer, HEAD_WITH_INPUT if context else HEAD_NO_INPUT),
        _cached_ids(tokenizer, instruction),
        _cached_ids(tokenizer, INPUT_HEADER) if context else [],
        _ids(tokenizer, context) if context else [],
        _cached_ids(tokenizer, RESPONSE_MARKER),
    ]


def _truncate_prompt(pieces: list[list[int]], budget: int) -> list[int]:
    """Join the prompt pieces into at most ``budget`` tokens (rule 2 of :func:`encode_sft`)."""
    head, instruction, header, context, marker = pieces
    if sum(len(piece) for piece in pieces) <= budget:
        return head + instruction + header + context + marker
    room = budget - len(head) - len(header) - len(marker)
    if room < 0:  # not even the template fits: keep the beginning and the marker
        return (head + instruction + header + context)[: budget - len(marker)] + marker
    keep_instruction, keep_context = _share(len(instruction), len(context), room)
    return head + instruction[:keep_instruction] + header + context[:keep_context] + marker


def _share(num_a: int, num_b: int, room: int) -> tuple[int, int]:
    """Split ``room`` tokens between two fields: each gets up to half, the rest goes to the
    one that needs more; neither gets more than it has."""
    keep_a = min(num_a, max(room // 2, room - num_b))
    return keep_a, min(num_b, room - keep_a)


def _ids(tokenizer: Tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@functools.lru_cache(maxsize=4096)
def _cached_ids_tuple(tokenizer: Tokenizer, text: str) -> tuple[int, ...]:
    return tuple(_ids(tokenizer, text))


def _cached_ids(tokenizer: Tokenizer, text: str) -> list[int]:
    return list(_cached_ids_tuple(tokenizer, text))
