"""The shared-prefix scorer and head-at-scored-positions loss equal the reference computations."""

from __future__ import annotations

import pytest
import torch
from tiny_lm import make_model, make_tokenizer, wrap_lora
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from ecolora.client.dpo import sequence_logps
from ecolora.client.logits import gathered_logps
from ecolora.data.prompts import collate_sft, encode_sft
from ecolora.eval.logits import PrefixGroup, score_prefix_groups
from ecolora.eval.loss import held_out_loss
from ecolora.eval.multiple_choice import choice_logprobs

ITEMS = [
    {"question": "what is the capital of france ?", "choices": ["paris", "london", "rome berlin"], "answer": 0},
    {"question": "the sky is", "choices": ["blue", "green", "red grass", "yes"], "answer": 0},
    {"question": "a cat sits on the", "choices": ["mat", "dog runs fast"], "answer": 0},
    {"question": "is the grass green ?", "choices": ["yes", "no", "yes and no ."], "answer": 0},
]


def _separately(model: torch.nn.Module, group: PrefixGroup) -> list[float]:
    """Each continuation scored in its own unpadded sequence ``prefix + continuation``."""
    scores = []
    with torch.no_grad():
        for cont in group.continuations:
            logps = model(input_ids=torch.tensor([group.prefix + cont])).logits[0].log_softmax(-1)  # (T, V)
            scores.append(sum(float(logps[len(group.prefix) - 1 + j, t]) for j, t in enumerate(cont)))
    return scores


def _assert_same(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, **kwargs: int) -> None:
    fast = choice_logprobs(model, tokenizer, ITEMS, batch_size=3, **kwargs)
    reference = choice_logprobs(model, tokenizer, ITEMS, batch_size=5, shared_prefix=False, **kwargs)
    for a, b in zip(fast, reference, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)
        assert (a.prediction, a.prediction_norm, a.num_tokens) == (b.prediction, b.prediction_norm, b.num_tokens)


def test_shared_prefix_equals_per_choice_scores() -> None:
    _assert_same(make_model(), make_tokenizer())


def test_shared_prefix_equals_per_choice_with_lora() -> None:
    _assert_same(wrap_lora(make_model()), make_tokenizer())  # LoRA (B != 0) applied in the body path


def test_contexts_cut_differently_fall_back_per_choice() -> None:
    _assert_same(make_model(), make_tokenizer(), max_seq_len=7)


def test_prefix_group_scores_equal_separate_sequences() -> None:
    model = make_model().eval()
    group = PrefixGroup(prefix=[1, 4, 5, 6], continuations=[[7, 8], [9], [10, 11, 12]])
    with torch.no_grad():
        (packed,) = score_prefix_groups(model, [group], batch_size=1, pad_id=0)
    assert packed == pytest.approx(_separately(model, group), abs=1e-5)


def test_gathered_logps_equals_full_logits() -> None:
    model = make_model().eval()
    ids = torch.tensor([[1, 4, 5, 6, 7], [1, 8, 9, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    rows, cols, targets = torch.tensor([0, 0, 1]), torch.tensor([1, 3, 1]), torch.tensor([5, 7, 9])
    with torch.no_grad():
        got = gathered_logps(model, ids, mask, rows, cols, targets)
        full = model(input_ids=ids, attention_mask=mask).logits.log_softmax(-1)
    torch.testing.assert_close(got, full[rows, cols, targets], rtol=0, atol=1e-5)


def test_held_out_loss_equals_sequence_logps(tokenizer: PreTrainedTokenizerFast, model: LlamaForCausalLM) -> None:
    rows = [
        {"instruction": "what is the capital of france ?", "input": "", "output": "paris"},
        {"instruction": "the sky is", "input": "a cat", "output": "blue and the grass is green"},
    ]
    batch = collate_sft([encode_sft(tokenizer, r, 32) for r in rows], int(tokenizer.pad_token_id))
    with torch.no_grad():
        logps, num = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert held_out_loss(model, [batch]) == pytest.approx(-float(logps.sum()) / int(num.sum()), rel=1e-6)


def test_groups_sharing_a_root_equal_separate_sequences() -> None:
    model = make_model().eval()
    groups = [
        PrefixGroup(prefix=[1, 4, 5, 6, 7, 20], continuations=[[8, 9], [10]]),
        PrefixGroup(prefix=[1, 4, 5, 6, 7], continuations=[[11], [12, 13]]),  # all root
        PrefixGroup(prefix=[1, 4, 5, 6, 7, 21, 22], continuations=[[14], [15, 16, 17]]),
        PrefixGroup(prefix=[1, 30, 31], continuations=[[8], [9]]),  # its own row
    ]
    with torch.no_grad():
        packed = score_prefix_groups(model, groups, batch_size=2, pad_id=0, min_shared=3)
    for group, scores in zip(groups, packed, strict=True):
        assert scores == pytest.approx(_separately(model, group), abs=1e-5)


def test_items_with_a_shared_instruction_equal_per_choice() -> None:
    model, tokenizer = make_model(), make_tokenizer()
    head = "answer the question : what is the capital of "
    items = [
        {"question": head + "france ?", "choices": ["paris", "london"], "answer": 0},
        {"question": head + "the city ?", "choices": ["rome", "berlin", "paris"], "answer": 0},
        {"question": head + "red ?", "choices": ["yes", "no"], "answer": 1},
    ]
    fast = choice_logprobs(model, tokenizer, items, batch_size=2)
    reference = choice_logprobs(model, tokenizer, items, shared_prefix=False)
    for a, b in zip(fast, reference, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)


@pytest.mark.parametrize("shared_prefix", [True, False])
def test_progress_counts_tokens_up_to_the_total(shared_prefix: bool) -> None:
    calls: list[tuple[int, int]] = []
    choice_logprobs(make_model(), make_tokenizer(), ITEMS, batch_size=2, shared_prefix=shared_prefix,
                    progress=lambda done, total: calls.append((done, total)))
    assert len(calls) > 1 and len({total for _, total in calls}) == 1  # one call per pass
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == calls[0][1] and done[0] > 0
