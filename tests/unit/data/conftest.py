"""Fixtures for the data tests: a tiny byte-level BPE tokenizer (no download) and sample rows."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

_CORPUS = [
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.",
    "### Instruction:\nName the capital of France.\n\n### Input:\nEurope\n\n### Response:\nParis",
    "The quick brown fox jumps over the lazy dog. A federated client trains a low-rank adapter.",
    "Cooking pasta needs salted boiling water; football needs a ball and two goals.",
]


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE (like SmolLM2's) with EOS and PAD and no BOS."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<pad>"
    )


@pytest.fixture()
def dolly_records() -> list[dict[str, str]]:
    return [
        {
            "instruction": "Name the capital of France.",
            "context": "",
            "response": "Paris",
            "category": "open_qa",
        },
        {
            "instruction": "Summarize the text.",
            "context": "A long passage about federated learning.",
            "response": "Clients train locally.",
            "category": "summarization",
        },
        {
            "instruction": "Classify the animal.",
            "context": "dog",
            "response": "mammal",
            "category": "classification",
        },
    ]


@pytest.fixture()
def alpaca_records() -> list[dict[str, str]]:
    return [
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
        {"instruction": "Say hello.", "input": "", "output": "Hello!"},
    ]
