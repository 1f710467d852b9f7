"""Fixtures: a tiny word-level tokenizer and a 2-layer random Llama (see tests/support/tiny_lm.py)."""

from __future__ import annotations

import pytest
from tiny_lm import make_model, make_tokenizer
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast


@pytest.fixture()
def tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer()


@pytest.fixture()
def model() -> LlamaForCausalLM:
    return make_model()
