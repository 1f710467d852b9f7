"""Rows of public benchmark schemas -> multiple-choice items ``{"question", "choices", "answer"}``.

Prompt formats follow lm-evaluation-harness's zero-shot defaults so scores are comparable:

* ARC (``allenai/ai2_arc``): ``"Question: <q>\\nAnswer:"`` + ``" <choice text>"`` (``arc_easy``).
* MMLU (``cais/mmlu``): lm-eval's ``mmlu`` prompt: a subject header, the question, the lettered
  options and ``"Answer:"``; the choices are the letters ``" A"`` .. ``" D"`` (so ``acc_norm``
  equals ``acc``).
* BIG-bench ``target_scores`` tasks: BIG-bench's own JSON-task format (``bigbench/api/
  json_task.py``): ``task_prefix + example_input_prefix ("\\nQ: ") + input + [choice_prefix
  ("\\n  choice: ") + choices, if append_choices_to_input] + example_output_prefix ("\\nA: ")``,
  then the choice. Choices are appended in file order (BIG-bench permutes them with a seed).
  Examples whose top score is shared by several choices are skipped (no single answer).
* Natural-Instructions ``subtask047_misc_answering_science_questions`` (targets ``"A."``..): the
  ``(A) .. (D)`` options are parsed out of the input and scored like ARC.

Every item also carries ``"subset"`` (ARC split, MMLU subject, BIG-bench task) for aggregation.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ecolora.eval.multiple_choice import validate_items

logger = logging.getLogger("ecolora")

__all__ = ["arc_items", "bigbench_items", "mc_items", "mmlu_items", "ni_science_items"]

_LETTERS = "ABCDEFGHIJ"
_OPTION = re.compile(r"\(([A-E])\)")


def _row_id(row: Mapping[str, Any], index: int) -> str:
    return f"row {index}" + (f" (id {row['id']})" if row.get("id") is not None else "")


def _check_choices(schema: str, where: str, choices: Any) -> list[str]:
    if choices is None:
        raise ValueError(f"{schema} {where} is missing 'choices'.")
    options: list[str] | None = None
    if not isinstance(choices, str) and isinstance(choices, Iterable):
        options = list(choices)
    if (
        options is None
        or len(options) < 2
        or not all(isinstance(c, str) and c.strip() for c in options)
    ):
        shown = choices if options is None else options
        raise ValueError(
            f"{schema} {where}: 'choices' must hold at least 2 non-empty strings, got {shown!r}."
        )
    return options


def _check_question(schema: str, where: str, question: Any) -> str:
    if not isinstance(question, str) or not question.strip():
        raise ValueError(
            f"{schema} {where}: 'question' must be a non-empty string, got {question!r}."
        )
    return question.strip()


def arc_items(rows: Iterable[Mapping[str, Any]], subset: str) -> list[dict[str, Any]]:
    """``allenai/ai2_arc`` rows: ``question``, ``choices {"text": [...], "label": [...]}``,
    ``answerKey`` (one of the labels: ``"A"``.. or ``"1"``..)."""
    items: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        where = _row_id(row, i)
        question = _check_question("ARC", where, row.get("question"))
        choices = row.get("choices")
        if choices is None:
            raise ValueError(f"ARC {where} is missing 'choices'.")
        if not isinstance(choices, Mapping) or "text" not in choices or "label" not in choices:
            raise ValueError(
                f"ARC {where}: 'choices' must be {{'text': [...], 'label': [...]}}, got {choices!r}."
            )
        texts = _check_choices("ARC", where, choices["text"])
        labels = [str(label) for label in choices["label"]]
        if len(labels) != len(texts):
            raise ValueError(f"ARC {where}: {len(texts)} choice texts but {len(labels)} labels.")
        key = str(row.get("answerKey"))
        if key not in labels:
            raise ValueError(
                f"ARC {where}: answerKey {key!r} is not among the choice labels {labels}."
            )
        items.append(
            {
                "question": f"Question: {question}\nAnswer:",
                "choices": texts,
                "answer": labels.index(key),
                "subset": subset,
            }
        )
    return items


def _mmlu_answer(where: str, answer: Any, num_choices: int) -> int:
    if isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().upper() in _LETTERS:
        answer = _LETTERS.index(answer.strip().upper())
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < num_choices:
        raise ValueError(
            f"MMLU {where}: answer {answer!r} is not among the {num_choices} choices "
            f"(expected an index 0-{num_choices - 1} or a letter A-{_LETTERS[num_choices - 1]})."
        )
    return answer


def mmlu_items(rows: Iterable[Mapping[str, Any]], subset: str) -> list[dict[str, Any]]:
    """``cais/mmlu`` rows: ``question``, ``subject``, ``choices`` (list), ``answer`` (index or
    letter). The subset is the row's ``subject`` (else ``subset``)."""
    items: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        where = _row_id(row, i)
        question = _check_question("MMLU", where, row.get("question"))
        choices = _check_choices("MMLU", where, row.get("choices"))
        if len(choices) > len(_LETTERS):
            raise ValueError(f"MMLU {where}: at most {len(_LETTERS)} choices, got {len(choices)}.")
        answer = _mmlu_answer(where, row.get("answer"), len(choices))
        subject = str(row.get("subject") or subset)
        options = "".join(f"{_LETTERS[k]}. {c.strip()}\n" for k, c in enumerate(choices))
        header = f"The following are multiple choice questions (with answers) about " \
                 f"{subject.replace('_', ' ')}.\n\n"  # fmt: skip
        items.append(
            {
                "question": f"{header}{question}\n{options}Answer:",
                "choices": list(_LETTERS[: len(choices)]),
                "answer": answer,
                "subset": subject,
            }
        )
    return items


def bigbench_items(task: Mapping[str, Any], subset: str) -> list[dict[str, Any]]:
    """Items of a BIG-bench JSON task whose examples have ``target_scores``."""
    prefix = str(task.get("task_prefix") or "")
    in_prefix = task.get("example_input_prefix", "\nQ: ")
    out_prefix = task.get("example_output_prefix", "\nA: ")
    choice_prefix = task.get("choice_prefix", "\n  choice: ")
    append = task.get("append_choices_to_input", True) is not False
    items, skipped = [], 0
    for i, example in enumerate(task.get("examples", [])):
        scores = example.get("target_scores")
        if not isinstance(scores, Mapping) or len(scores) < 2:
            raise ValueError(
                f"BIG-bench task {subset!r} example {i} needs 'target_scores' with at least 2 "
                f"choices, got {scores!r}."
            )
        choices = list(scores)
        best = max(scores.values())
        winners = [k for k, c in enumerate(choices) if scores[c] == best]
        if len(winners) != 1:
            skipped += 1
            continue
        listed = choice_prefix + choice_prefix.join(choices) if append else ""
        question = f"{prefix}{in_prefix}{example['input']}{listed}{out_prefix}".lstrip()
        items.append({"question": question, "choices": choices, "answer": winners[0],
                      "delimiter": "", "subset": subset})  # fmt: skip
    if skipped:
        logger.debug(
            "BIG-bench %s: skipped %d examples without a single best choice", subset, skipped
        )
    return items


def _parse_options(text: str) -> tuple[str, list[str]] | None:
    """Split ``"<stem> (A) x (B) y ..."`` into the stem and options, markers in order."""
    starts, pos = [], 0
    for letter in _LETTERS[:5]:
        match = re.compile(rf"\({letter}\)").search(text, pos)
        if match is None:
            break
        starts.append(match)
        pos = match.end()
    if len(starts) < 2:
        return None
    ends = [m.start() for m in starts[1:]] + [len(text)]
    options = [text[m.end() : end].strip() for m, end in zip(starts, ends, strict=True)]
    options[-1] = options[-1].rstrip("?").strip()
    return text[: starts[0].start()].strip(), options


def ni_science_items(task: Mapping[str, Any], subset: str) -> list[dict[str, Any]]:
    """Items of NI ``subtask047_misc_answering_science_questions`` (answers given as letters)."""
    items: list[dict[str, Any]] = []
    for example in task.get("examples", []):
        parsed = _parse_options(example["input"])
        target = str((example.get("target") or [""])[0]).strip().rstrip(".")
        if (
            parsed is None
            or not all(parsed[1])
            or len(target) != 1
            or target not in _LETTERS[: len(parsed[1])]
        ):
            continue
        stem, options = parsed
        stem = stem.removeprefix("Question:").strip()
        items.append({"question": f"Question: {stem}\nAnswer:", "choices": options,
                      "answer": _LETTERS.index(target), "subset": subset})  # fmt: skip
    return items


def mc_items(rows: Iterable[Mapping[str, Any]], subset: str) -> list[dict[str, Any]]:
    """Rows already in the item schema; ``subset`` fills a missing ``"subset"``."""
    items = [dict(row) for row in rows]
    validate_items(items)
    for item in items:
        item.setdefault("subset", subset)
    return items
