"""Evaluation on CUDA equals evaluation on the CPU (skipped without CUDA)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from ecolora.data.prompts import collate_sft, encode_sft
from ecolora.eval.loss import held_out_loss
from ecolora.eval.multiple_choice import choice_logprobs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
ITEMS = [
    {"question": "what is the capital of france ?", "choices": ["paris", "london", "rome berlin"], "answer": 0},
    {"question": "the sky is", "choices": ["blue", "green", "red grass"], "answer": 0},
    {"question": "a cat sits on the", "choices": ["mat", "dog runs fast"], "answer": 0},
]


def test_multiple_choice_scores_match(tokenizer: PreTrainedTokenizerFast, model: LlamaForCausalLM) -> None:
    cpu = choice_logprobs(model, tokenizer, ITEMS, batch_size=4)
    gpu = choice_logprobs(copy.deepcopy(model).to("cuda"), tokenizer, ITEMS, batch_size=4)
    for a, b in zip(cpu, gpu, strict=True):
        assert b.logprobs == pytest.approx(a.logprobs, rel=1e-4, abs=1e-4)
        assert (a.prediction, a.prediction_norm) == (b.prediction, b.prediction_norm)


def test_fast_scorer_on_cuda_matches_reference_on_cpu(
    tokenizer: PreTrainedTokenizerFast, model: LlamaForCausalLM
) -> None:
    reference = choice_logprobs(model, tokenizer, ITEMS, batch_size=4, shared_prefix=False)
    fast = choice_logprobs(copy.deepcopy(model).to("cuda"), tokenizer, ITEMS, batch_size=2)
    for a, b in zip(reference, fast, strict=True):
        assert b.logprobs == pytest.approx(a.logprobs, rel=1e-4, abs=1e-4)


def test_held_out_loss_matches(tokenizer: PreTrainedTokenizerFast, model: LlamaForCausalLM) -> None:
    rows = [{"instruction": "what is the capital of france ?", "input": "", "output": "paris"}] * 3
    examples = [encode_sft(tokenizer, r, 32) for r in rows]
    batches = [collate_sft(examples, int(tokenizer.pad_token_id))]
    cpu = held_out_loss(model, batches)
    gpu = held_out_loss(copy.deepcopy(model).to("cuda"), batches)
    assert gpu == pytest.approx(cpu, rel=1e-4)
