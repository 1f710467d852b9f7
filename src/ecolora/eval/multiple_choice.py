"""Multiple-choice scoring by the log-likelihood of each choice given the question.

The method of lm-evaluation-harness (Gao et al. 2021-2024) and BIG-bench's
``multiple_choice_grade`` (Srivastava et al. 2022, arXiv 2206.04615):

1. For item ``(question q, choices c_1..c_K, answer a)`` the model scores each continuation
   ``delimiter + c_k`` after ``q`` (``delimiter`` is ``" "`` unless the item sets another; trailing
   whitespace of ``q`` moves into the continuation, as in lm-eval).
2. Tokens: ``whole = tok(q + cont)``, ``ctx = tok(q)``, continuation tokens ``whole[len(ctx):]``;
   ``ll_k = sum_t log p(y_t | q, y_<t)`` over those tokens (``sequence_logps``).
3. ``acc``: ``argmax_k ll_k == a``. ``acc_norm``: ``argmax_k ll_k / bytes(c_k) == a`` where
   ``bytes(c_k)`` is the UTF-8 byte length of the choice text (without the delimiter); this is
   lm-eval's ``acc_norm`` up to characters vs bytes (equal for ASCII). It removes the bias towards
   short choices, whose fewer tokens collect less negative log-likelihood.

Fast path (default, ``shared_prefix=True``): all choices of an item are packed into one sequence
``[question, c_1, ..., c_K]`` with a tree attention mask (:func:`ecolora.eval.logits.score_prefix_groups`),
so each question is computed once for all its choices, and the output head runs only at the scored
positions. ``batch_size`` items go into one forward pass. An item whose question must be cut
to fit ``max_seq_len`` is scored per choice (each choice cuts its own context, as before).
Reference path (``shared_prefix=False``): every (item, choice) sequence on its own, sorted by
length, ``batch_size`` sequences per pass. Both give the same scores up to float rounding (tested);
ties go to the lowest choice index.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ecolora.client.dpo import IGNORE_INDEX, sequence_logps
from ecolora.eval.logits import PrefixGroup, score_prefix_groups

__all__ = ["ChoiceScores", "Progress", "choice_logprobs", "score_multiple_choice", "validate_items"]

_DEFAULT_MAX_SEQ_LEN = 2048
Progress = Callable[[int, int], None]  # (tokens done, tokens in all) after each forward pass


@dataclass(frozen=True)
class ChoiceScores:
    """Per-choice results for one item."""

    logprobs: list[float]  # summed log-likelihood of each choice
    num_tokens: list[int]  # continuation tokens scored per choice
    num_bytes: list[int]  # UTF-8 bytes of each choice text (the acc_norm divisor)
    answer: int

    @property
    def prediction(self) -> int:
        return _argmax(self.logprobs)

    @property
    def prediction_norm(self) -> int:
        return _argmax(
            [lp / max(n, 1) for lp, n in zip(self.logprobs, self.num_bytes, strict=True)]
        )


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))


def validate_items(items: Sequence[Mapping[str, Any]]) -> None:
    """Check the ``{"question", "choices", "answer"}`` schema; raise ``ValueError`` naming the item."""
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ValueError(f"Item {i} must be a dict, got {type(item).__name__}.")
        missing = [k for k in ("question", "choices", "answer") if k not in item]
        if missing:
            raise ValueError(
                f"Item {i} is missing {', '.join(repr(k) for k in missing)} "
                f"(expected keys: question, choices, answer)."
            )
        question, choices, answer = item["question"], item["choices"], item["answer"]
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"Item {i}: 'question' must be a non-empty string, got {question!r}.")
        if (
            not isinstance(choices, Sequence)
            or isinstance(choices, str)
            or len(choices) < 2
            or not all(isinstance(c, str) and c for c in choices)
        ):
            raise ValueError(
                f"Item {i}: 'choices' must be a list of at least 2 non-empty strings, "
                f"got {choices!r}."
            )
        if isinstance(answer, bool) or not isinstance(answer, int):
            raise ValueError(f"Item {i}: 'answer' must be an int index, got {answer!r}.")
        if not 0 <= answer < len(choices):
            raise ValueError(
                f"Item {i}: answer index {answer} is out of range for {len(choices)} choices."
            )


def _encode_requests(
    tokenizer: Any, items: Sequence[Mapping[str, Any]], max_seq_len: int
) -> list[tuple[list[int], int]]:
    """One ``(token ids, number of continuation tokens)`` per (item, choice), in item order."""
    requests = []
    for i, item in enumerate(items):
        question: str = item["question"]
        context = question.rstrip()
        moved = question[len(context) :]
        context_ids = list(tokenizer(context, add_special_tokens=True)["input_ids"])
        for choice in item["choices"]:
            continuation = moved + item.get("delimiter", " ") + choice
            whole = list(tokenizer(context + continuation, add_special_tokens=True)["input_ids"])
            cont_ids = whole[len(context_ids) :]
            if not cont_ids:  # the choice merged into the context's last token
                cont_ids = list(tokenizer(continuation, add_special_tokens=False)["input_ids"])
            if len(cont_ids) >= max_seq_len:
                raise ValueError(
                    f"Item {i}: choice {choice[:40]!r} has {len(cont_ids)} tokens, more than "
                    f"max_seq_len - 1 = {max_seq_len - 1}."
                )
            ids = (context_ids + cont_ids)[-max_seq_len:]  # cut the context from the left
            requests.append((ids, len(cont_ids)))
    return requests


def _prefix_groups(
    requests: list[tuple[list[int], int]], items: Sequence[Mapping[str, Any]]
) -> list[PrefixGroup]:
    """One group per item (its choices share the context), or one per choice when cut differently."""
    groups, pos = [], 0
    for item in items:
        chunk = requests[pos : pos + len(item["choices"])]
        pos += len(chunk)
        prefixes = [ids[: len(ids) - n] for ids, n in chunk]
        conts = [ids[len(ids) - n :] for ids, n in chunk]
        if all(p == prefixes[0] for p in prefixes):
            groups.append(PrefixGroup(prefixes[0], conts))
        else:  # contexts cut from the left by different amounts
            groups += [PrefixGroup(p, [c]) for p, c in zip(prefixes, conts, strict=True)]
    return groups


def _score_requests(
    model: torch.nn.Module,
    requests: list[tuple[list[int], int]],
    batch_size: int,
    pad_id: int,
    progress: Progress | None = None,
) -> list[float]:
    order = sorted(range(len(requests)), key=lambda r: -len(requests[r][0]))
    scores = [0.0] * len(requests)
    total, done = sum(len(ids) for ids, _ in requests), 0
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        length = len(requests[chunk[0]][0])
        input_ids = torch.full((len(chunk), length), pad_id, dtype=torch.long)  # (b, T)
        attention_mask = torch.zeros_like(input_ids)  # (b, T)
        labels = torch.full_like(input_ids, IGNORE_INDEX)  # (b, T)
        for row, r in enumerate(chunk):
            ids, num_cont = requests[r]
            input_ids[row, : len(ids)] = torch.as_tensor(ids)
            attention_mask[row, : len(ids)] = 1
            labels[row, len(ids) - num_cont : len(ids)] = input_ids[
                row, len(ids) - num_cont : len(ids)
            ]
        logps, _ = sequence_logps(model, input_ids, attention_mask, labels)  # (b,)
        for row, r in enumerate(chunk):
            scores[r] = float(logps[row])
        done += sum(len(requests[r][0]) for r in chunk)
        if progress is not None:
            progress(done, total)
    return scores


def choice_logprobs(
    model: torch.nn.Module,
    tokenizer: Any,
    items: Sequence[Mapping[str, Any]],
    *,
    batch_size: int = 8,
    max_seq_len: int | None = None,
    shared_prefix: bool = True,
    progress: Progress | None = None,
) -> list[ChoiceScores]:
    """Log-likelihood of every choice of every item (see the module docstring).

    Args:
        batch_size: items (shared prefix) or (item, choice) sequences per forward pass.
        shared_prefix: score each context once for all its choices (fast); False: the
            per-choice reference scorer.
        max_seq_len: longest sequence; longer contexts are cut from the left. Default: the model's
            ``max_position_embeddings`` (or 2048).
        progress: ``progress(tokens_done, tokens_total)`` after each forward pass.
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    validate_items(items)
    if max_seq_len is None:
        config = getattr(model, "config", None)
        max_seq_len = int(getattr(config, "max_position_embeddings", _DEFAULT_MAX_SEQ_LEN))
    requests = _encode_requests(tokenizer, items, max_seq_len)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if shared_prefix:
                groups = _prefix_groups(requests, items)
                per_group = score_prefix_groups(model, groups, batch_size, pad_id, progress=progress)
                scores = [v for g in per_group for v in g]
            else:
                scores = _score_requests(model, requests, batch_size, pad_id, progress)
    finally:
        model.train(was_training)
    results, pos = [], 0
    for item in items:
        k = len(item["choices"])
        results.append(
            ChoiceScores(
                logprobs=scores[pos : pos + k],
                num_tokens=[n for _, n in requests[pos : pos + k]],
                num_bytes=[len(c.encode("utf-8")) for c in item["choices"]],
                answer=int(item["answer"]),
            )
        )
        pos += k
    return results


def score_multiple_choice(
    model: torch.nn.Module,
    tokenizer: Any,
    items: Sequence[Mapping[str, Any]],
    *,
    batch_size: int = 8,
    max_seq_len: int | None = None,
    shared_prefix: bool = True,
    progress: Progress | None = None,
) -> dict[str, float]:
    """Accuracy of log-likelihood multiple-choice scoring over ``items``.

    Args:
        items: ``{"question": str, "choices": [str, ...], "answer": int}`` (optional
            ``"delimiter"``, default ``" "``, joins question and choice).

    Returns:
        ``{"acc", "acc_norm", "n"}``: raw and byte-length-normalized accuracy, number of items.
    """
    if not items:
        raise ValueError("score_multiple_choice got no items.")
    scored = choice_logprobs(
        model, tokenizer, items, batch_size=batch_size, max_seq_len=max_seq_len,
        shared_prefix=shared_prefix, progress=progress,
    )
    n = len(scored)
    return {
        "acc": sum(s.prediction == s.answer for s in scored) / n,
        "acc_norm": sum(s.prediction_norm == s.answer for s in scored) / n,
        "n": n,
    }
