"""Multiple-choice scoring: known answers, hand-computed log-likelihoods, length normalization."""

from __future__ import annotations

import math

import pytest
import torch
from bigram_lm_eval import BigramLM

from ecolora.eval import choice_logprobs, score_multiple_choice


def _ids(tokenizer, *words):
    return [tokenizer.convert_tokens_to_ids(w) for w in words]


@pytest.fixture()
def bigram(tokenizer) -> BigramLM:
    capital, sky, paris, rome, blue, green, the, cat, runs = _ids(
        tokenizer, "capital", "sky", "paris", "rome", "blue", "green", "the", "cat", "runs"
    )
    return BigramLM(
        len(tokenizer),
        {
            capital: {paris: 0.6, rome: 0.1},
            sky: {blue: 0.4, green: 0.05, the: 0.3},
            the: {cat: 0.9},
            cat: {runs: 0.9},
        },
    )


ITEMS = [
    {"question": "the capital", "choices": ["rome", "paris"], "answer": 1},
    {"question": "what is the capital", "choices": ["paris", "rome", "london"], "answer": 0},
    {"question": "the sky", "choices": ["green", "blue"], "answer": 1},
]


def test_known_answers_are_found(tokenizer, bigram) -> None:
    assert score_multiple_choice(bigram, tokenizer, ITEMS) == {"acc": 1.0, "acc_norm": 1.0, "n": 3}
    wrong = [{**item, "answer": (item["answer"] + 1) % len(item["choices"])} for item in ITEMS]
    assert score_multiple_choice(bigram, tokenizer, wrong)["acc"] == 0.0


def test_log_likelihoods_match_hand_computed_values(tokenizer, bigram) -> None:
    item = {"question": "the sky", "choices": ["blue", "the cat runs"], "answer": 1}
    (scores,) = choice_logprobs(bigram, tokenizer, [item])
    assert scores.logprobs[0] == pytest.approx(math.log(0.4), abs=1e-5)
    assert scores.logprobs[1] == pytest.approx(math.log(0.3) + 2 * math.log(0.9), abs=1e-5)
    assert scores.num_tokens == [1, 3]
    assert scores.num_bytes == [4, 12]


def test_length_normalization_changes_the_prediction(tokenizer, bigram) -> None:
    # raw: log 0.4 = -0.92 beats log 0.3 + 2 log 0.9 = -1.41 (the short choice wins);
    # per byte: -0.92 / 4 = -0.23 loses to -1.41 / 12 = -0.12 (the long choice wins).
    item = {"question": "the sky", "choices": ["blue", "the cat runs"], "answer": 1}
    assert score_multiple_choice(bigram, tokenizer, [item]) == {"acc": 0.0, "acc_norm": 1.0, "n": 1}
    flipped = {**item, "answer": 0}
    assert score_multiple_choice(bigram, tokenizer, [flipped]) == {
        "acc": 1.0,
        "acc_norm": 0.0,
        "n": 1,
    }


def test_trailing_space_of_the_question_moves_into_the_continuation(tokenizer, bigram) -> None:
    plain = choice_logprobs(bigram, tokenizer, ITEMS)
    spaced = choice_logprobs(
        bigram, tokenizer, [{**i, "question": i["question"] + " "} for i in ITEMS]
    )
    assert [s.logprobs for s in plain] == [s.logprobs for s in spaced]


def test_batching_and_padding_do_not_change_scores(tokenizer, model) -> None:
    items = ITEMS + [
        {"question": "is the grass green ?", "choices": ["yes", "no", "yes and no ."], "answer": 0},
        {"question": "the cat sits on the", "choices": ["mat", "dog"], "answer": 0},
    ]
    one = choice_logprobs(model, tokenizer, items, batch_size=1)
    many = choice_logprobs(model, tokenizer, items, batch_size=16)
    for a, b in zip(one, many, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
    # and against an unpadded forward pass of the first choice of item 3
    ids = tokenizer("is the grass green ? yes")["input_ids"]
    with torch.no_grad():
        log_probs = model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
    assert one[3].logprobs[0] == pytest.approx(log_probs[-2, ids[-1]].item(), abs=1e-5)


def test_long_context_is_cut_from_the_left(tokenizer, bigram) -> None:
    item = {"question": "the cat " * 30 + "the sky", "choices": ["green", "blue"], "answer": 1}
    full = choice_logprobs(bigram, tokenizer, [item])[0].logprobs
    cut = choice_logprobs(bigram, tokenizer, [item], max_seq_len=4)[0].logprobs
    assert cut == pytest.approx(full)  # a bigram model only sees the last context token


def test_model_mode_is_restored(tokenizer, model) -> None:
    model.train()
    score_multiple_choice(model, tokenizer, ITEMS)
    assert model.training


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"question": "q", "answer": 0}, r"Item 0 is missing 'choices'"),
        (
            {"question": "q", "choices": ["a"], "answer": 0},
            r"'choices' must be a list of at least 2",
        ),
        (
            {"question": "q", "choices": ["a", ""], "answer": 0},
            r"'choices' must be a list of at least 2",
        ),
        (
            {"question": "q", "choices": ["a", "b"], "answer": 2},
            r"answer index 2 is out of range for 2",
        ),
        ({"question": "q", "choices": ["a", "b"], "answer": "a"}, r"'answer' must be an int index"),
        (
            {"question": "q", "choices": ["a", "b"], "answer": True},
            r"'answer' must be an int index",
        ),
        ({"question": " ", "choices": ["a", "b"], "answer": 0}, r"'question' must be a non-empty"),
    ],
)
def test_bad_items_are_rejected(tokenizer, bigram, item, message) -> None:
    with pytest.raises(ValueError, match=message):
        score_multiple_choice(bigram, tokenizer, [item])


def test_empty_items_and_bad_batch_size(tokenizer, bigram) -> None:
    with pytest.raises(ValueError, match="got no items"):
        score_multiple_choice(bigram, tokenizer, [])
    with pytest.raises(ValueError, match=r"`batch_size` must be >= 1, got 0"):
        score_multiple_choice(bigram, tokenizer, ITEMS, batch_size=0)
