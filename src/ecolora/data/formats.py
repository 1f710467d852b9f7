"""Row formats of instruction data and the column mapping (``data.format``, ``data.columns``).

Every format is normalized to one row shape::

    {"instruction": str, "input": str, "output": str, "category": str | None, "task": str | None}

plus ``"messages"`` (the turns before the last reply) for chat rows and ``"text": True`` for
plain-text rows (no prompt: every token is a target).

======== ============================================ ==========================================
format   fields of a record                           normalized
======== ============================================ ==========================================
dolly    instruction, context, response, [category]   context -> input, response -> output
alpaca   instruction, input, output, [category]       as is (the cached ``bigbench-ni`` file)
messages messages: [{role, content}, ...]             last turn (role assistant) -> output, the
                                                      turns before -> messages, first user turn
                                                      -> instruction
text     text                                         text -> output, empty prompt
======== ============================================ ==========================================

``auto`` takes the format from the first record's fields, in the order of the table.
``columns`` renames a file's columns to these names first: ``{"instruction": "question",
"output": "answer"}`` reads ``{"question", "answer"}`` rows as Alpaca.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

__all__ = [
    "COLUMN_NAMES",
    "FORMATS",
    "FORMAT_FIELDS",
    "DataFormat",
    "as_text",
    "detect_format",
    "normalize_records",
]

DataFormat = Literal["auto", "dolly", "alpaca", "messages", "text"]
FORMATS: tuple[DataFormat, ...] = ("auto", "dolly", "alpaca", "messages", "text")
FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    "dolly": ("instruction", "context", "response"),
    "alpaca": ("instruction", "input", "output"),
    "messages": ("messages",),
    "text": ("text",),
}
COLUMN_NAMES = ("instruction", "input", "output", "context", "response", "messages", "text", "category", "task")
_SCHEMA_NAMES = {"dolly": "Dolly", "alpaca": "Alpaca", "messages": "messages", "text": "text"}


def detect_format(record: Mapping[str, Any], origin: str) -> str:
    """The format of ``record`` from its fields (``messages``, then Dolly, Alpaca, text)."""
    if "messages" in record:
        return "messages"
    if "response" in record or "context" in record:
        return "dolly"
    if "output" in record or "input" in record:
        return "alpaca"
    if "text" in record and "instruction" not in record:
        return "text"
    schemas = "; ".join(f"{_SCHEMA_NAMES[k]} ({', '.join(v)})" for k, v in FORMAT_FIELDS.items())
    raise ValueError(
        f"Row 0 of {origin} matches neither schema (fields: {', '.join(sorted(record))}); expected "
        f"{schemas}; map other column names with data.columns (e.g. {{instruction: question, output: answer}})"
    )


def normalize_records(
    records: Iterable[Any], origin: str, data_format: str = "auto", columns: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Normalize records of one file or dataset (format from the first record when ``auto``)."""
    if data_format not in FORMATS:
        raise ValueError(f"`data.format` must be one of {', '.join(FORMATS)}, got {data_format!r}.")
    rename = dict(columns or {})
    unknown = sorted(set(rename) - set(COLUMN_NAMES))
    if unknown:
        raise ValueError(f"`data.columns` maps unknown field(s) {', '.join(unknown)}; known: {', '.join(COLUMN_NAMES)}.")
    rows: list[dict[str, Any]] = []
    fmt: str | None = None if data_format == "auto" else data_format
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ValueError(f"Row {i} of {origin} is a {type(record).__name__}, expected an object.")
        if rename:
            record = {**record, **{ours: record[theirs] for ours, theirs in rename.items() if theirs in record}}
        fmt = fmt or detect_format(record, origin)
        for name in FORMAT_FIELDS[fmt]:
            if name not in record and not (fmt == "alpaca" and name == "input"):
                raise ValueError(
                    f"Missing field `{name}` in row {i} of {origin} ({_SCHEMA_NAMES[fmt]} schema needs "
                    f"{', '.join(FORMAT_FIELDS[fmt])}; map other column names with data.columns)."
                )
        rows.append(_normalize(record, fmt, i, origin))
    return rows


def _normalize(record: Mapping[str, Any], fmt: str, index: int, origin: str) -> dict[str, Any]:
    labels = {"category": _label(record.get("category")), "task": _label(record.get("task"))}
    if fmt == "dolly":
        return {"instruction": as_text(record["instruction"]), "input": as_text(record["context"]),
                "output": as_text(record["response"]), **labels}
    if fmt == "alpaca":
        return {"instruction": as_text(record["instruction"]), "input": as_text(record.get("input")),
                "output": as_text(record["output"]), **labels}
    if fmt == "text":
        return {"instruction": "", "input": "", "output": as_text(record["text"]), "text": True, **labels}
    turns = _messages(record["messages"], index, origin)
    first_user = next((t["content"] for t in turns if t["role"] == "user"), "")
    return {"instruction": first_user, "input": "", "output": turns[-1]["content"],
            "messages": turns[:-1], **labels}


def _messages(value: Any, index: int, origin: str) -> list[dict[str, str]]:
    where = f"row {index} of {origin}"
    if not isinstance(value, list) or len(value) < 2:
        raise ValueError(f"`messages` in {where} must be a list of at least two {{role, content}} turns.")
    turns = []
    for turn in value:
        if not isinstance(turn, Mapping) or "role" not in turn or "content" not in turn:
            raise ValueError(f"Each turn of `messages` in {where} needs `role` and `content`, got {turn!r}.")
        turns.append({"role": str(turn["role"]), "content": as_text(turn["content"])})
    if turns[-1]["role"] != "assistant":
        raise ValueError(
            f"The last turn of `messages` in {where} must be the reply to learn (role 'assistant'), "
            f"got role {turns[-1]['role']!r}."
        )
    return turns


def as_text(value: Any) -> str:
    return "" if value is None else str(value)


def _label(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)
