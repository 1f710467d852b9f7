"""Named evaluation suites: a registry of loaders and one ``run_suite`` entry point.

============== ================ ================================================================
suite          kind             data (``path`` overrides the hub; ``limit`` is per subset)
============== ================ ================================================================
arc            multiple_choice  ARC-Easy + ARC-Challenge test (``allenai/ai2_arc``); score = mean
                                of the two (the EcoLoRA paper's ARC score)
arc-easy       multiple_choice  ARC-Easy test
arc-challenge  multiple_choice  ARC-Challenge test
mmlu           multiple_choice  ``cais/mmlu`` ``all`` test; score over all items (lm-eval's group
                                score, weighted by subject size)
bigbench-mc    multiple_choice  offline, ``BIGBENCH_MC_TASKS`` from the BIG-bench sdist; score =
                                mean over tasks (BIG-bench's convention)
mc             multiple_choice  a local file already in the item schema (``path`` required)
bigbench-pref  preference       offline ``bigbench-pref`` pairs (seeded shuffle, seed 0)
preference     preference       a local preference file (``path`` required)
loss           loss             a local file of ``{"prompt","response"}`` or ``{"text"}`` rows
============== ================ ================================================================

Local files: ``path`` is a ``.json``/``.jsonl``/``.parquet`` file or a folder of them (searched
recursively; where some file names start with ``test``, only those are read, so a downloaded hub
snapshot can be passed as is). The subset of a file is its first folder under ``path`` (hub layout
``ARC-Easy/test-*.parquet``) or else its stem; MMLU rows use their ``subject``. For
``bigbench-mc`` a file may be a whole BIG-bench ``task.json`` (``{"examples": [...]}``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ecolora.client.dpo import IGNORE_INDEX, encode_pair
from ecolora.data.bigbench import load_task_json
from ecolora.data.preference import load_preference_rows, read_rows
from ecolora.data.sources import normalize_rows
from ecolora.data.templates import encode_example, resolve_template
from ecolora.eval import schemas
from ecolora.eval.loss import held_out_loss, perplexity
from ecolora.eval.multiple_choice import score_multiple_choice
from ecolora.eval.preference import preference_accuracy

logger = logging.getLogger("ecolora")

__all__ = [
    "BIGBENCH_MC_TASKS",
    "SUITES",
    "Journal",
    "SuiteProgress",
    "Suite",
    "get_suite",
    "load_suite",
    "register_suite",
    "run_suite",
]

SuiteProgress = Callable[[str, int, int], None]  # (subset label, tokens done, tokens in all)

# Knowledge and commonsense BIG-bench tasks with target_scores (+ the NI science subtask).
BIGBENCH_MC_TASKS: tuple[str, ...] = (
    "social_iqa",
    "strategyqa",
    "timedial",
    "sports_understanding",
    "winowhy",
    "physical_intuition",
    "epistemic_reasoning",
    "general_knowledge",
    "hindu_knowledge",
    "known_unknowns",
    "natural_instructions/subtask047_misc_answering_science_questions",
)
_KINDS = ("multiple_choice", "preference", "loss")
_AGGREGATES = ("macro", "micro")
_SUFFIXES = (".json", ".jsonl", ".parquet")
Loader = Callable[[int | None, str | None], list[dict[str, Any]]]


@dataclass(frozen=True)
class Suite:
    """One named suite: how to load its rows and how to combine subset scores."""

    name: str = field(metadata={"help": "Name used by load_suite/run_suite and the CLI."})
    kind: str = field(metadata={"help": "multiple_choice | preference | loss."})
    loader: Loader = field(metadata={"help": "(limit, path) -> rows; limit is per subset."})
    aggregate: str = field(
        default="micro",
        metadata={"help": "macro: mean of subset scores; micro: over all items."},
    )
    description: str = field(default="", metadata={"help": "One line for --help and docs."})

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"Suite `kind` must be one of {', '.join(_KINDS)}, got {self.kind!r}.")
        if self.aggregate not in _AGGREGATES:
            raise ValueError(
                f"Suite `aggregate` must be one of {', '.join(_AGGREGATES)}, got {self.aggregate!r}."
            )


SUITES: dict[str, Suite] = {}


def register_suite(suite: Suite) -> Suite:
    """Add ``suite`` to ``SUITES``; a name can be registered once."""
    if suite.name in SUITES:
        raise ValueError(f"Suite {suite.name!r} is already registered.")
    SUITES[suite.name] = suite
    return suite


def get_suite(name: str) -> Suite:
    try:
        return SUITES[name]
    except KeyError:
        raise ValueError(
            f"Unknown suite {name!r}; known suites: {', '.join(sorted(SUITES))}."
        ) from None


# ---------------------------------------------------------------------------------------------
# File and hub readers
# ---------------------------------------------------------------------------------------------


def _data_files(path: str) -> list[tuple[Path, str]]:
    """``(file, subset name)`` for a data file or a folder of them."""
    root = Path(path).expanduser()
    if root.is_file():
        return [(root, root.stem)]
    if not root.is_dir():
        raise ValueError(f"Suite data path {root} does not exist.")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in _SUFFIXES)
    tests = [p for p in files if p.name.startswith("test")]
    files = tests or files
    if not files:
        raise ValueError(f"No {'/'.join(_SUFFIXES)} files under {root}.")
    named = []
    for file in files:
        parts = file.relative_to(root).parts
        named.append((file, parts[0] if len(parts) > 1 else file.stem))
    return named


def _read(file: Path) -> list[dict[str, Any]]:
    return read_rows(file)


def _take(items: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """The first ``limit`` items of each subset, subset order kept."""
    if limit is None:
        return items
    counts: dict[str, int] = {}
    kept = []
    for item in items:
        seen = counts.get(item.get("subset", ""), 0)
        if seen < limit:
            kept.append(item)
        counts[item.get("subset", "")] = seen + 1
    return kept


def _from_hub(repo: str, config: str, split: str = "test") -> list[dict[str, Any]]:
    try:
        import datasets

        return list(datasets.load_dataset(repo, config, split=split))
    except Exception as err:  # noqa: BLE001 - any hub/network failure gets the same advice
        raise ValueError(
            f"Could not load {repo} ({config}, {split}) from the Hugging Face hub: {err}. "
            f"Without hub access, download its files and pass path=... (--path)."
        ) from err


def _file_loader(
    convert: Callable[[list[dict[str, Any]], str], list[dict[str, Any]]], hub: list[tuple[str, str]]
) -> Loader:
    def load(limit: int | None, path: str | None) -> list[dict[str, Any]]:
        if path is not None:
            sources = [(_read(file), subset) for file, subset in _data_files(path)]
        elif hub:
            sources = [(_from_hub(repo, config), config) for repo, config in hub]
        else:
            raise ValueError("This suite reads a local file: pass path=... (--path).")
        return _take([item for rows, subset in sources for item in convert(rows, subset)], limit)

    return load


def _load_bigbench_mc(limit: int | None, path: str | None) -> list[dict[str, Any]]:
    if path is not None:
        tasks = {}
        for file, subset in _data_files(path):
            data = json.loads(file.read_text(encoding="utf-8")) if file.suffix == ".json" else None
            tasks[subset] = data if isinstance(data, dict) else {"examples": _read(file)}
    else:
        tasks = load_task_json(BIGBENCH_MC_TASKS)
    items = []
    for name, task in tasks.items():
        short = name.split("/")[-1]
        if "target_scores" in (task.get("examples") or [{}])[0]:
            items += schemas.bigbench_items(task, short)
        else:
            items += schemas.ni_science_items(task, short)
    return _take(items, limit)


def _load_pairs(limit: int | None, path: str | None, default: str | None) -> list[dict[str, Any]]:
    source = path or default
    if source is None:
        raise ValueError("This suite reads a local file: pass path=... (--path).")
    return load_preference_rows(source, limit=limit, seed=0)


def _load_text(limit: int | None, path: str | None) -> list[dict[str, Any]]:
    """``text`` or ``prompt``/``response`` rows; a file in a training format (Dolly, Alpaca,
    messages) is read as training reads it (``train_row``) and scored on its responses under the
    prompt ``data.template: auto`` gives (:func:`ecolora.data.templates.resolve_template`)."""
    if path is None:
        raise ValueError("This suite reads a local file: pass path=... (--path).")
    rows = []
    for file, _ in _data_files(path):
        file_rows = _read(file)
        if file_rows and not _is_loss_row(file_rows[0]) and {"instruction", "messages"} & set(file_rows[0]):
            file_rows = [{"train_row": r} for r in normalize_rows(file_rows, str(file))]
        rows += file_rows
    for i, row in enumerate(rows):
        if not _is_loss_row(row):
            raise ValueError(
                f"Loss row {i} needs 'text' or 'prompt' and 'response' (or a training format: "
                f"Dolly, Alpaca), got keys {sorted(row)}."
            )
    return rows[:limit] if limit is not None else rows


def _is_loss_row(row: dict[str, Any]) -> bool:
    return "text" in row or "train_row" in row or ("prompt" in row and "response" in row)


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------


def load_suite(name: str, *, limit: int | None = None, path: str | None = None) -> list[dict[str, Any]]:
    """Rows of suite ``name``: items for multiple choice, pairs for preference, text rows for loss.

    Args:
        limit: at most this many rows per subset (per ARC split, MMLU subject, BIG-bench task),
            the first ones in file order; pairs are shuffled with seed 0 first.
        path: a local file or folder in the suite's schema instead of the hub.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"`limit` must be >= 1 or None, got {limit}.")
    rows = get_suite(name).loader(limit, path)
    if not rows:
        raise ValueError(f"Suite {name!r} loaded no rows (path={path!r}).")
    return rows


def _aggregate(per_subset: dict[str, dict[str, float]], how: str) -> dict[str, float]:
    n = sum(int(s["n"]) for s in per_subset.values())
    out: dict[str, float] = {"n": n}
    for metric in ("acc", "acc_norm"):
        if how == "macro":
            out[metric] = sum(s[metric] for s in per_subset.values()) / len(per_subset)
        else:
            out[metric] = sum(s[metric] * s["n"] for s in per_subset.values()) / n
    return out


class Journal:
    """Per-subset results of a long suite, appended to a JSONL file as each subset finishes, so an
    interrupted evaluation resumes where it stopped (``ecolora eval --save FILE``).

    A line is ``{"key": {...}, "subset": name, "result": {...}}``; only lines whose ``key`` (suite,
    model, adapter, limit, path) equals this evaluation's are reused.
    """

    def __init__(self, file: Path, key: dict[str, Any]) -> None:
        self.file, self.key = Path(file), key
        self.done: dict[str, dict[str, float]] = {}
        text = self.file.read_text(encoding="utf-8") if self.file.is_file() else ""
        self._cut = bool(text) and not text.endswith("\n")  # the last line was cut short by a kill
        if text:
            for number, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill: score that subset again
                    logger.warning("%s line %d is not JSON; that subset is scored again", file, number)
                    continue
                if record.get("key") == key:
                    self.done[str(record["subset"])] = record["result"]

    def add(self, subset: str, result: dict[str, float]) -> None:
        self.done[subset] = result
        self.file.parent.mkdir(parents=True, exist_ok=True)
        with self.file.open("a", encoding="utf-8") as f:
            f.write(("\n" if self._cut else "") + json.dumps({"key": self.key, "subset": subset, "result": result}) + "\n")
        self._cut = False


def _run_multiple_choice(
    suite: Suite,
    items: list[dict[str, Any]],
    model: Any,
    tokenizer: Any,
    batch_size: int,
    max_seq_len: int | None,
    journal: Journal | None = None,
    progress: SuiteProgress | None = None,
) -> dict[str, Any]:
    by_subset: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_subset.setdefault(item.get("subset", suite.name), []).append(item)
    per_subset: dict[str, dict[str, float]] = {}
    reused = 0
    for number, (subset, group) in enumerate(by_subset.items(), 1):
        saved = journal.done.get(subset) if journal is not None else None
        if saved is not None and int(saved["n"]) == len(group):
            per_subset[subset] = saved
            reused += 1
            continue
        start = time.perf_counter()
        label = f"{suite.name} {number}/{len(by_subset)} {subset}"
        per_subset[subset] = score_multiple_choice(
            model, tokenizer, group, batch_size=batch_size, max_seq_len=max_seq_len,
            progress=None if progress is None else partial(progress, label),
        )
        if journal is not None:
            journal.add(subset, per_subset[subset])
        if len(by_subset) > 1:
            logger.info(
                "%s %d/%d %s: acc %.3f on %d items (%.0f s)", suite.name, number, len(by_subset),
                subset, per_subset[subset]["acc"], len(group), time.perf_counter() - start,
            )
    if reused:
        logger.info("%s: %d of %d subsets read from %s", suite.name, reused, len(by_subset),
                    journal.file if journal is not None else "")
    return {
        **_aggregate(per_subset, suite.aggregate),
        "aggregate": suite.aggregate,
        "subsets": per_subset,
    }


def _run_loss(
    rows: list[dict[str, Any]], model: Any, tokenizer: Any, batch_size: int, max_seq_len: int
) -> dict[str, Any]:
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = []
    template = resolve_template("auto", tokenizer, "") if any("train_row" in r for r in rows) else ""
    for row in rows:
        if "train_row" in row:
            example = encode_example(tokenizer, row["train_row"], max_seq_len, template)
            encoded.append((example["input_ids"], example["labels"]))
        elif "text" in row:
            ids = list(tokenizer(row["text"], add_special_tokens=True)["input_ids"])[:max_seq_len]
            encoded.append((ids, ids))
        else:
            encoded.append(encode_pair(tokenizer, row["prompt"], row["response"], max_seq_len))

    def batches() -> Iterator[dict[str, torch.Tensor]]:
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start : start + batch_size]
            length = max(len(ids) for ids, _ in chunk)
            input_ids = torch.full((len(chunk), length), pad_id, dtype=torch.long)  # (b, T)
            labels = torch.full_like(input_ids, IGNORE_INDEX)  # (b, T)
            attention_mask = torch.zeros_like(input_ids)  # (b, T)
            for row, (ids, lab) in enumerate(chunk):
                input_ids[row, : len(ids)] = torch.as_tensor(ids)
                labels[row, : len(lab)] = torch.as_tensor(lab)
                attention_mask[row, : len(ids)] = 1
            yield {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    loss = held_out_loss(model, batches())
    return {"loss": loss, "perplexity": perplexity(loss), "n": len(rows)}


def run_suite(
    name: str,
    model: torch.nn.Module,
    tokenizer: Any,
    *,
    limit: int | None = None,
    batch_size: int = 8,
    path: str | None = None,
    max_seq_len: int | None = None,
    beta: float = 0.1,
    journal: Journal | None = None,
    progress: SuiteProgress | None = None,
) -> dict[str, Any]:
    """Load suite ``name`` and score ``model`` on it.

    ``journal`` (multiple choice): subsets already in it are not scored again, and each newly
    scored subset is appended to it as soon as it is done. ``progress(label, tokens_done,
    tokens_total)`` (multiple choice) follows each subset (``label``: "suite i/n subset").

    Returns:
        Always ``suite``, ``kind`` and ``n``. Multiple choice: ``acc``, ``acc_norm``, ``aggregate``
        and per-subset ``subsets``; preference (``model`` must be a peft model): the fields of
        ``preference_accuracy``; loss: ``loss`` and ``perplexity``.
    """
    suite = get_suite(name)
    rows = load_suite(name, limit=limit, path=path)
    logger.info("Evaluating suite %s on %d rows", name, len(rows))
    if suite.kind == "multiple_choice":
        result = _run_multiple_choice(
            suite, rows, model, tokenizer, batch_size, max_seq_len, journal, progress
        )
    elif suite.kind == "preference":
        result = preference_accuracy(
            model, tokenizer, rows, beta=beta, batch_size=batch_size, max_seq_len=max_seq_len or 512
        )
    else:
        result = _run_loss(rows, model, tokenizer, batch_size, max_seq_len or 512)
    return {"suite": name, "kind": suite.kind, **result}


# ---------------------------------------------------------------------------------------------
# Built-in suites
# ---------------------------------------------------------------------------------------------

_ARC = "allenai/ai2_arc"
_EASY, _CHALLENGE = (_ARC, "ARC-Easy"), (_ARC, "ARC-Challenge")
_MC = "multiple_choice"
_BUILTIN = (
    Suite("arc", _MC, _file_loader(schemas.arc_items, [_EASY, _CHALLENGE]), "macro",
          "ARC-Easy and ARC-Challenge test; score = mean of the two"),
    Suite("arc-easy", _MC, _file_loader(schemas.arc_items, [_EASY]), description="ARC-Easy test"),
    Suite("arc-challenge", _MC, _file_loader(schemas.arc_items, [_CHALLENGE]),
          description="ARC-Challenge test"),
    Suite("mmlu", _MC, _file_loader(schemas.mmlu_items, [("cais/mmlu", "all")]),
          description="MMLU test, 57 subjects, lettered answers"),
    Suite("bigbench-mc", _MC, _load_bigbench_mc, "macro",
          "offline BIG-bench knowledge/commonsense tasks; score = mean over tasks"),
    Suite("mc", _MC, _file_loader(schemas.mc_items, []),
          description="local file of {question, choices, answer} items"),
    Suite("bigbench-pref", "preference", partial(_load_pairs, default="bigbench-pref"),
          description="reward accuracy/margin on offline bigbench-pref pairs"),
    Suite("preference", "preference", partial(_load_pairs, default=None),
          description="reward accuracy/margin on a local preference file"),
    Suite("loss", "loss", _load_text,
          description="held-out loss on local prompt/response, text or training-format rows"),
)  # fmt: skip
for _suite in _BUILTIN:
    register_suite(_suite)
