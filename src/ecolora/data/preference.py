"""Preference pairs for DPO: the UltraFeedback-binarized schema and the offline ``bigbench-pref``.

Every source yields rows ``{"prompt", "chosen", "rejected", "category"}`` of plain strings.

* A hub id or a local json/jsonl/parquet file in the UltraFeedback-binarized schema
  (``HuggingFaceH4/ultrafeedback_binarized``): ``prompt`` is a string; ``chosen``/``rejected`` are
  strings or chat message lists ``[{"role", "content"}, ...]`` of which the assistant's last
  message is the response.
* ``bigbench-pref``, built offline from the BIG-bench sdist (``ecolora.data.bigbench``):

  1. Natural-Instructions pairs: for each (answer, incorrect-answer) subtask pair in
     ``BIGBENCH_PREF_SOURCES``, the examples of both subtasks are matched on their instance text
     (the incorrect-answer subtasks append ``"\\nCorrect Answer: ..."``, which is removed before
     matching). One pair per shared input: chosen is the answer subtask's first target, rejected is
     the incorrect subtask's first target that is not also a correct target. The prompt is the
     answer subtask's one-line instruction (the ``Prompt:`` part of its definition) and the input.
  2. ``hhh_alignment`` (harmless, helpful, honest, other): each example's top-scored choice is
     chosen, every lower-scored choice gives one rejected (the task has two choices per example).
     The prompt is ``"Human: <input>\\n\\nAssistant:"``, the task's own prefixes.

Pair counts for bigbench==1.0.0 are listed in docs/eval.md.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ecolora.data.bigbench import load_task_json

logger = logging.getLogger("ecolora")

__all__ = [
    "BIGBENCH_PREF",
    "BIGBENCH_PREF_SOURCES",
    "HHH_SUBTASKS",
    "build_bigbench_pairs",
    "bigbench_pref_task_names",
    "load_preference_rows",
    "normalize_preference_row",
    "read_rows",
]

BIGBENCH_PREF = "bigbench-pref"
_NI = "natural_instructions/"

# (category, answer subtask, incorrect-answer subtask) within natural_instructions.
BIGBENCH_PREF_SOURCES: tuple[tuple[str, str, str], ...] = (
    ("cosmosqa", "subtask024_cosmosqa_answer_generation",
     "subtask025_cosmosqa_incorrect_answer_generation"),
    ("qasc", "subtask041_qasc_answer_generation", "subtask042_qasc_incorrect_option_generation"),
    ("multirc", "subtask054_multirc_write_correct_answer",
     "subtask055_multirc_write_incorrect_answer"),
    *(
        ("mctaco", f"subtask{a:03d}_mctaco_answer_generation_{kind}",
         f"subtask{a + 1:03d}_mctaco_wrong_answer_generation_{kind}")
        for a, kind in (
            (4, "event_duration"),
            (7, "transient_stationary"),
            (10, "event_ordering"),
            (13, "absolute_timepoint"),
            (16, "frequency"),
        )
    ),
)  # fmt: skip
HHH_SUBTASKS = ("harmless", "helpful", "honest", "other")

_CORRECT_SUFFIX = re.compile(r"\s*\nCorrect Answer:.*\Z", re.DOTALL)
_DATA_SUFFIXES = (".json", ".jsonl", ".parquet")


def bigbench_pref_task_names() -> list[str]:
    """The BIG-bench task names ``bigbench-pref`` reads (for ``load_task_json``)."""
    names = [f"{_NI}{t}" for _, answer, wrong in BIGBENCH_PREF_SOURCES for t in (answer, wrong)]
    return names + [f"hhh_alignment/{s}" for s in HHH_SUBTASKS]


# ---------------------------------------------------------------------------------------------
# bigbench-pref
# ---------------------------------------------------------------------------------------------


def _instance_key(text: str) -> str:
    return _CORRECT_SUFFIX.sub("", text).strip()


def _instruction(task: Mapping[str, Any]) -> str:
    """The short ``Prompt: ...`` line of an NI definition, else the whole task prefix."""
    prefix = str(task.get("task_prefix", "")).strip()
    _, found, instruction = prefix.rpartition("Prompt:")
    return instruction.strip() if found and instruction.strip() else prefix


def _targets(example: Mapping[str, Any]) -> list[str]:
    target = example.get("target", [])
    targets = [target] if isinstance(target, str) else list(target)
    return [t.strip() for t in targets if isinstance(t, str) and t.strip()]


def _ni_pairs(category: str, answer: Mapping[str, Any], wrong: Mapping[str, Any]) -> list[dict[str, Any]]:
    wrong_by_key: dict[str, list[str]] = {}
    for example in wrong.get("examples", []):
        wrong_by_key.setdefault(_instance_key(example["input"]), _targets(example))
    instruction = _instruction(answer)
    rows = []
    for example in answer.get("examples", []):
        key = _instance_key(example["input"])
        correct = _targets(example)
        if not correct or key not in wrong_by_key:
            continue
        seen = {c.lower() for c in correct}
        rejected = next((w for w in wrong_by_key[key] if w.lower() not in seen), None)
        if rejected is None:
            continue
        prompt = f"{instruction}\n\n{key}\n\nAnswer:" if instruction else f"{key}\n\nAnswer:"
        rows.append(
            {"prompt": prompt, "chosen": correct[0], "rejected": rejected, "category": category}
        )
    return rows


def _hhh_pairs(subtask: str, task: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for example in task.get("examples", []):
        scores: dict[str, float] = example["target_scores"]
        best = max(scores.values())
        chosen = next(c for c, s in scores.items() if s == best)
        prompt = f"Human: {example['input'].strip()}\n\nAssistant:"
        rows.extend(
            {"prompt": prompt, "chosen": chosen, "rejected": c, "category": f"hhh/{subtask}"}
            for c, s in scores.items()
            if s < best
        )
    return rows


def build_bigbench_pairs(tasks: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Build ``bigbench-pref`` rows from parsed task.json files keyed by task name
    (``bigbench_pref_task_names()``); tasks absent from ``tasks`` are skipped."""
    rows: list[dict[str, Any]] = []
    for category, answer, wrong in BIGBENCH_PREF_SOURCES:
        if f"{_NI}{answer}" in tasks and f"{_NI}{wrong}" in tasks:
            rows += _ni_pairs(category, tasks[f"{_NI}{answer}"], tasks[f"{_NI}{wrong}"])
    for subtask in HHH_SUBTASKS:
        if f"hhh_alignment/{subtask}" in tasks:
            rows += _hhh_pairs(subtask, tasks[f"hhh_alignment/{subtask}"])
    return rows


# ---------------------------------------------------------------------------------------------
# UltraFeedback-binarized schema and local files
# ---------------------------------------------------------------------------------------------


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a local ``.jsonl``, ``.json`` (a list of objects, a ``{"data": [...]}`` object, or
    JSON lines as written by ``datasets``' ``to_json``) or ``.parquet`` file."""
    path = Path(path)
    if path.suffix not in _DATA_SUFFIXES:
        raise ValueError(
            f"Unsupported data file {path}: expected one of {', '.join(_DATA_SUFFIXES)}."
        )
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table_rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
        return table_rows
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # JSON lines under a .json name
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if isinstance(data, list):
            return data
        if data is not None:
            raise ValueError(f"{path}: expected a JSON list of objects, got {type(data).__name__}.")
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON lines ({err}).") from err


def _response(value: Any, key: str, index: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        for message in reversed(value):
            if isinstance(message, Mapping) and message.get("role") == "assistant":
                return str(message.get("content", ""))
        raise ValueError(
            f"Preference row {index}: '{key}' is a message list without an assistant message."
        )
    raise ValueError(
        f"Preference row {index}: '{key}' must be a string or a list of "
        f'{{"role", "content"}} messages, got {type(value).__name__}.'
    )


def _prompt_from_messages(value: Any) -> str | None:
    if isinstance(value, list):
        for message in reversed(value):
            if isinstance(message, Mapping) and message.get("role") == "user":
                return str(message.get("content", ""))
    return None


def normalize_preference_row(row: Mapping[str, Any], index: int, default_category: str) -> dict[str, Any]:
    """One UltraFeedback-binarized row -> ``{"prompt", "chosen", "rejected", "category"}``."""
    missing = [k for k in ("chosen", "rejected") if k not in row]
    if missing:
        raise ValueError(
            f"Preference row {index} is missing {', '.join(repr(k) for k in missing)} "
            f"(expected keys: prompt, chosen, rejected)."
        )
    prompt = row.get("prompt")
    if prompt is None:
        prompt = _prompt_from_messages(row["chosen"])
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"Preference row {index} has no 'prompt' string, got {prompt!r}.")
    chosen = _response(row["chosen"], "chosen", index)
    rejected = _response(row["rejected"], "rejected", index)
    for key, text in (("chosen", chosen), ("rejected", rejected)):
        if not text.strip():
            raise ValueError(f"Preference row {index}: '{key}' response is empty.")
    category = row.get("category") or default_category
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "category": str(category)}


def _load_hub(source: str, split: str) -> list[dict[str, Any]]:
    try:
        import datasets

        return list(datasets.load_dataset(source, split=split))
    except Exception as err:  # noqa: BLE001 - any hub/network failure gets the same advice
        raise ValueError(
            f"Could not load preference data {source!r} (split {split!r}) from the Hugging Face "
            f"hub: {err}. Without hub access, use 'bigbench-pref' or a local json/jsonl/parquet "
            f"file in the prompt/chosen/rejected schema."
        ) from err


def _shuffle_limit(rows: list[dict[str, Any]], limit: int | None, seed: int) -> list[dict[str, Any]]:
    if limit is not None and limit < 1:
        raise ValueError(f"`limit` must be >= 1 or None, got {limit}.")
    order = np.random.default_rng(seed).permutation(len(rows))
    if limit is not None:
        order = order[:limit]
    return [rows[i] for i in order]


def load_preference_rows(
    source: str, *, limit: int | None = None, seed: int = 0, split: str = "train_prefs"
) -> list[dict[str, Any]]:
    """Preference rows ``{"prompt", "chosen", "rejected", "category"}``, shuffled with ``seed``.

    Args:
        source: ``"bigbench-pref"``, a local ``.json``/``.jsonl``/``.parquet`` file, or a hub
            dataset id in the UltraFeedback-binarized schema.
        limit: keep the first ``limit`` rows after the seeded shuffle.
        seed: shuffle seed (``np.random.default_rng``).
        split: the split of a hub dataset (UltraFeedback-binarized: ``train_prefs``,
            ``test_prefs``); ignored for the other sources.
    """
    if source == BIGBENCH_PREF:
        rows = build_bigbench_pairs(load_task_json(bigbench_pref_task_names()))
        logger.info("bigbench-pref: %d pairs", len(rows))
        return _shuffle_limit(rows, limit, seed)
    path = Path(source).expanduser()
    if path.suffix in _DATA_SUFFIXES or path.exists():
        if not path.is_file():
            raise ValueError(f"Preference file {path} does not exist.")
        raw, category = read_rows(path), path.stem
    else:
        raw, category = _load_hub(source, split), source.rsplit("/", 1)[-1]
    rows = [normalize_preference_row(r, i, category) for i, r in enumerate(_iter_dicts(raw))]
    return _shuffle_limit(rows, limit, seed)


def _iter_dicts(rows: Iterable[Any]) -> Iterable[Mapping[str, Any]]:
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"Preference row {i} must be an object, got {type(row).__name__}.")
        yield row
