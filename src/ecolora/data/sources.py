"""Instruction-tuning rows from the built-in ``bigbench-ni`` source, local files, or the Hub.

Every source is normalized to one row shape, a plain dict::

    {"instruction": str, "input": str, "output": str, "category": str | None, "task": str | None}

Four formats are recognized (``data.format: auto`` takes it per file from the first row's
fields; ``data.columns`` renames columns first), see :mod:`ecolora.data.formats`:

* Dolly (``databricks/databricks-dolly-15k``): ``instruction``, ``context``, ``response``,
  ``category``; ``context`` becomes ``input``, ``response`` becomes ``output``.
* Alpaca (``vicgalle/alpaca-gpt4``): ``instruction``, ``input``, ``output``; optional
  ``category`` and ``task`` are kept (the cached ``bigbench-ni`` file uses this form).
* messages (chat): ``messages: [{role, content}, ...]``, the last turn is the reply.
* text: ``text``, every token is a target.

A row that lacks a required field is an error naming the field, the row and the file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ecolora.cache import get_cache_dir
from ecolora.data.bigbench import load_task_json, natural_instructions_subtasks
from ecolora.data.formats import as_text, normalize_records

logger = logging.getLogger("ecolora")

__all__ = [
    "BUILTIN_SOURCES",
    "DOLLY_FIELDS",
    "ALPACA_FIELDS",
    "NI_CATEGORIES",
    "load_instruction_rows",
    "ni_category",
    "normalize_rows",
    "split_train_eval",
]

DOLLY_FIELDS = ("instruction", "context", "response", "category")
ALPACA_FIELDS = ("instruction", "input", "output")
BUILTIN_SOURCES = ("bigbench-ni",)
_FILE_SUFFIXES = (".json", ".jsonl", ".parquet")
_NI_FILE = "bigbench-ni.v1.jsonl"  # bump the version when the conversion changes

# Subtask-name prefix (after ``subtaskNNN_``) -> the source dataset the subtask is built on.
# The sdist spells "miscellaneous" two ways; both and "misc" map to one category.
_NI_PREFIXES = {
    "quoref": "quoref",
    "mctaco": "mctaco",
    "cosmosqa": "cosmosqa",
    "drop": "drop",
    "winogrande": "winogrande",
    "qasc": "qasc",
    "essential_terms": "essential_terms",
    "miscellaneous": "misc",
    "miscellaenous": "misc",
    "misc": "misc",
    "multirc": "multirc",
    "ropes": "ropes",
}
NI_CATEGORIES = tuple(dict.fromkeys(_NI_PREFIXES.values()))


def load_instruction_rows(
    source: str,
    *,
    split: str = "train",
    limit: int | None = None,
    seed: int = 0,
    data_format: str = "auto",
    columns: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Load and normalize instruction rows.

    Args:
        source: ``"bigbench-ni"`` (built in, offline after one download), a local ``.json``,
            ``.jsonl`` or ``.parquet`` file, a folder of such files, or a Hub dataset id
            (``"databricks/databricks-dolly-15k"``) loaded with ``datasets.load_dataset``.
        split: the split to read. A folder uses the files whose name starts with ``split``
            (``train.jsonl``, ``data/train-00000-of-00001.parquet``) or, for ``"train"``,
            all its files when none does; a single file and ``bigbench-ni`` only have
            ``"train"``.
        limit: keep a seeded uniform sample of this many rows (in source order).
        seed: seed of that sample.
        data_format, columns: the rows' format and column mapping (:mod:`ecolora.data.formats`).

    Returns:
        Rows ``{"instruction", "input", "output", "category", "task"}``.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"`limit` must be a positive integer or None, got {limit!r}.")
    path = Path(source).expanduser()
    shape: dict[str, Any] = {"data_format": data_format, "columns": columns}
    if source in BUILTIN_SOURCES:
        _require_train(split, source)
        rows = _read_file(_bigbench_ni_file(), limit=limit, seed=seed)
    elif path.is_file():
        _require_train(split, str(path))
        rows = _read_file(path, limit=limit, seed=seed, **shape)
    elif path.exists():
        rows = _read_local(path, split, **shape)
    elif source.endswith(_FILE_SUFFIXES) or source.startswith((".", "/", "~")):
        raise FileNotFoundError(f"Data file or folder `{source}` does not exist.")
    else:
        rows = _read_hub(source, split, **shape)
    if not rows:
        raise ValueError(f"`{source}` is empty: it holds no rows (expected one object per row)")
    if limit is not None and limit < len(rows):
        rows = [rows[i] for i in _sample_indices(len(rows), limit, seed)]
    logger.info("Loaded %d instruction rows from %s (split %s)", len(rows), source, split)
    return rows


def normalize_rows(
    records: Iterable[Mapping[str, Any]],
    origin: str,
    data_format: str = "auto",
    columns: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Normalize records of one file or dataset (:mod:`ecolora.data.formats`).

    Args:
        records: mappings as read from one file or dataset.
        origin: the file or dataset name, used in error messages.
        data_format: ``auto`` (from the first record's fields), dolly, alpaca, messages or text.
        columns: the file's column name for each of ours, e.g. ``{"output": "answer"}``.
    """
    return normalize_records(records, origin, data_format, columns)


def ni_category(subtask: str) -> str:
    """The source dataset a Natural-Instructions subtask is built on.

    ``"subtask024_cosmosqa_answer_generation"`` -> ``"cosmosqa"``;
    ``"subtask046_miscellaenous_question_typing"`` -> ``"misc"``.
    """
    _, _, rest = subtask.partition("_")
    for prefix in sorted(_NI_PREFIXES, key=len, reverse=True):
        if rest == prefix or rest.startswith(prefix + "_"):
            return _NI_PREFIXES[prefix]
    raise ValueError(f"Unknown Natural-Instructions subtask `{subtask}`: no known dataset prefix.")


def split_train_eval(
    rows: Sequence[dict[str, Any]], eval_size: int | float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Draw a fixed held-out set, stratified by category, before any client partitioning.

    Each category ``c`` with ``n_c`` of the ``n`` rows gets ``floor(k * n_c / n)`` of the ``k``
    held-out rows; the remaining ones go to the categories with the largest fractional parts
    (largest-remainder rounding, ties broken at random). Rows without a category form one
    stratum, so Alpaca-style data gets a plain uniform sample.

    Args:
        rows: normalized rows.
        eval_size: an int count, or a float fraction in ``[0, 1)`` (rounded, at least one row
            when > 0).
        seed: seed of ``np.random.default_rng``; the same rows and seed give the same split.

    Returns:
        ``(train_rows, eval_rows)``, each in the original order.
    """
    num_rows = len(rows)
    num_eval = _num_eval(eval_size, num_rows)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative int, got {seed!r}.")
    rng = np.random.default_rng(seed)
    names = np.asarray([str(row.get("category")) for row in rows], dtype=str)
    codes = np.unique(names, return_inverse=True)[1].reshape(-1)  # (num_rows,) stratum ids
    sizes = np.bincount(codes)  # (num_strata,)
    quota = num_eval * sizes / max(num_rows, 1)
    take = np.floor(quota).astype(np.int64)
    remainder = np.where(take < sizes, quota - take, -1.0)
    order = np.lexsort((rng.random(len(sizes)), -remainder))  # largest remainder first
    take[order[: num_eval - int(take.sum())]] += 1
    perm = rng.permutation(num_rows)
    grouped = perm[np.argsort(codes[perm], kind="stable")]  # shuffled within each stratum
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    rank = np.arange(num_rows) - np.repeat(starts, sizes)  # position inside its stratum
    is_eval = np.zeros(num_rows, dtype=bool)
    is_eval[grouped[rank < np.repeat(take, sizes)]] = True
    train = [row for row, held in zip(rows, is_eval, strict=True) if not held]
    held_out = [row for row, held in zip(rows, is_eval, strict=True) if held]
    logger.info("Held out %d of %d rows for evaluation (seed %d)", len(held_out), num_rows, seed)
    return train, held_out


def _num_eval(eval_size: int | float, num_rows: int) -> int:
    if isinstance(eval_size, bool) or not isinstance(eval_size, (int, float)):
        raise TypeError(f"`eval_size` must be an int or a float, got {type(eval_size).__name__}.")
    if isinstance(eval_size, float):
        if not 0.0 <= eval_size < 1.0:
            raise ValueError(
                f"`eval_size` as a fraction must be in [0, 1), got {eval_size}; pass an int "
                "for a row count."
            )
        num_eval = max(1, round(eval_size * num_rows)) if eval_size > 0 else 0
    elif eval_size < 0:
        raise ValueError(f"`eval_size` must be >= 0, got {eval_size}.")
    else:
        num_eval = eval_size
    if num_eval > 0 and num_eval >= num_rows:
        raise ValueError(
            f"`eval_size` ({eval_size}) must leave at least one training row: it gives "
            f"{num_eval} held-out rows of {num_rows}."
        )
    return num_eval


# ---------------------------------------------------------------- readers


def _require_train(split: str, origin: str) -> None:
    if split != "train":
        raise ValueError(
            f"`{origin}` only has the split 'train', got {split!r}; draw a held-out set with "
            "split_train_eval."
        )


def _sample_indices(num_rows: int, limit: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(num_rows, size=limit, replace=False))


def _read_local(path: Path, split: str, **shape: Any) -> list[dict[str, Any]]:
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(_FILE_SUFFIXES))
    if not files:
        raise ValueError(f"Folder {path} holds no {', '.join(_FILE_SUFFIXES)} files.")
    chosen = [p for p in files if p.name.startswith(split)]
    if not chosen and split == "train":
        chosen = files
    if not chosen:
        names = ", ".join(str(p.relative_to(path)) for p in files)
        raise ValueError(f"No file for split {split!r} in {path} (files: {names}).")
    return [row for p in chosen for row in _read_file(p, **shape)]


def _read_file(
    path: Path, *, limit: int | None = None, seed: int = 0, data_format: str = "auto",
    columns: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Read one file; JSON Lines with a ``limit`` parse only the sampled lines (same sample)."""
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        records: list[Any] = pq.read_table(path).to_pylist()
    elif path.name.endswith(".jsonl"):
        records = _read_jsonl(path, limit=limit, seed=seed)
    elif path.name.endswith(".json"):
        text = path.read_text(encoding="utf-8")
        try:
            records = json.loads(text)
        except json.JSONDecodeError:
            records = _read_jsonl(path)  # JSON Lines saved as .json
        if not isinstance(records, list):
            raise ValueError(f"{path} must hold a JSON list of objects or JSON Lines.")
    else:
        raise ValueError(f"Unsupported data file {path}; expected {', '.join(_FILE_SUFFIXES)}.")
    return normalize_rows(records, str(path), data_format, columns)


def _read_jsonl(path: Path, *, limit: int | None = None, seed: int = 0) -> list[Any]:
    with path.open(encoding="utf-8") as fh:
        lines = [(no, line) for no, line in enumerate(fh, start=1) if line.strip()]
    if limit is not None and limit < len(lines):
        lines = [lines[i] for i in _sample_indices(len(lines), limit, seed)]
    records = []
    for line_no, line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"Invalid JSON on line {line_no} of {path}: {exc.msg}.") from exc
    return records


def _read_hub(name: str, split: str, **shape: Any) -> list[dict[str, Any]]:
    import datasets

    try:
        dataset = datasets.load_dataset(name, split=split)
    except Exception as exc:  # offline, unknown id, bad split: all surface here
        raise ValueError(
            f"Could not load `{name}` (split {split!r}) with datasets.load_dataset: {exc}. It is "
            f"not a local file or folder nor a built-in source ({', '.join(BUILTIN_SOURCES)}); "
            "pass a local .json/.jsonl/.parquet path when offline."
        ) from exc
    return normalize_rows(dataset, f"dataset {name} (split {split})", **shape)


# ---------------------------------------------------------------- bigbench-ni


def _bigbench_ni_file() -> Path:
    """Convert the 61 Natural-Instructions subtasks to one JSON Lines file in the cache, once."""
    path = get_cache_dir() / "data" / _NI_FILE
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    names = natural_instructions_subtasks()
    tasks = load_task_json([f"natural_instructions/{n}" for n in names])
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    num_rows = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for name in names:
            for row in _ni_rows(name, tasks[f"natural_instructions/{name}"]):
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                num_rows += 1
    os.replace(tmp, path)  # atomic: readers never see a half-written file
    logger.info("Converted %d Natural-Instructions rows to %s", num_rows, path)
    return path


def _ni_rows(name: str, task: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    instruction = str(task["description"]).strip()
    category = ni_category(name)
    for example in task["examples"]:
        target = example["target"]
        output = target[0] if isinstance(target, list) and target else target
        yield {
            "instruction": instruction,
            "input": as_text(example.get("input")),
            "output": as_text(output),
            "category": category,
            "task": name,
        }
