"""Sources: Dolly/Alpaca files and folders, the Hub code path, and the bigbench-ni conversion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ecolora.data import sources
from ecolora.data.bigbench import natural_instructions_subtasks
from ecolora.data.sources import (
    NI_CATEGORIES,
    load_instruction_rows,
    ni_category,
    normalize_rows,
)


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_dolly_jsonl_is_normalized(tmp_path: Path, dolly_records: list[dict[str, str]]) -> None:
    rows = load_instruction_rows(str(_write_jsonl(tmp_path / "d.jsonl", dolly_records)))
    assert rows[1] == {
        "instruction": "Summarize the text.",
        "input": "A long passage about federated learning.",
        "output": "Clients train locally.",
        "category": "summarization",
        "task": None,
    }
    assert [r["category"] for r in rows] == ["open_qa", "summarization", "classification"]


def test_alpaca_json_list_and_parquet_agree(
    tmp_path: Path, alpaca_records: list[dict[str, str]]
) -> None:
    json_path = tmp_path / "a.json"
    json_path.write_text(json.dumps(alpaca_records), encoding="utf-8")
    parquet_path = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(alpaca_records), parquet_path)
    from_json = load_instruction_rows(str(json_path))
    assert from_json == load_instruction_rows(str(parquet_path))
    assert from_json[0] == {
        "instruction": "Add the numbers.",
        "input": "2 and 3",
        "output": "5",
        "category": None,
        "task": None,
    }


def test_json_lines_saved_as_json(tmp_path: Path, alpaca_records: list[dict[str, str]]) -> None:
    rows = load_instruction_rows(str(_write_jsonl(tmp_path / "a.json", alpaca_records)))
    assert [r["output"] for r in rows] == ["5", "Hello!"]


def test_missing_field_names_field_and_file(
    tmp_path: Path, dolly_records: list[dict[str, str]]
) -> None:
    del dolly_records[2]["response"]
    path = _write_jsonl(tmp_path / "broken.jsonl", dolly_records)
    with pytest.raises(ValueError, match=r"Missing field `response` in row 2 of .*broken\.jsonl"):
        load_instruction_rows(str(path))


def test_alpaca_missing_output_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"Missing field `output` in row 1 of mem \(Alpaca"):
        normalize_rows(
            [{"instruction": "a", "input": "", "output": "b"}, {"instruction": "c", "input": ""}],
            "mem",
        )


def test_unknown_schema_lists_both() -> None:
    with pytest.raises(ValueError, match=r"matches neither schema \(fields: answer, question\).*data.columns"):
        normalize_rows([{"question": "x", "answer": "y"}], "mem")


def test_invalid_json_line_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "a", "input": "", "output": "b"}\n{oops\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"Invalid JSON on line 2 of .*bad\.jsonl"):
        load_instruction_rows(str(path))


def test_folder_picks_split_files(tmp_path: Path, alpaca_records: list[dict[str, str]]) -> None:
    (tmp_path / "data").mkdir()
    _write_jsonl(tmp_path / "data" / "train-00000.jsonl", alpaca_records)
    _write_jsonl(tmp_path / "data" / "test-00000.jsonl", alpaca_records[:1])
    assert len(load_instruction_rows(str(tmp_path))) == 2
    assert len(load_instruction_rows(str(tmp_path), split="test")) == 1
    with pytest.raises(ValueError, match=r"No file for split 'validation' in .* \(files: "):
        load_instruction_rows(str(tmp_path), split="validation")


def test_single_file_only_has_train(tmp_path: Path, alpaca_records: list[dict[str, str]]) -> None:
    path = _write_jsonl(tmp_path / "a.jsonl", alpaca_records)
    with pytest.raises(ValueError, match=r"only has the split 'train', got 'test'"):
        load_instruction_rows(str(path), split="test")


def test_missing_local_path_is_not_sent_to_the_hub(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"`.*nope\.jsonl` does not exist"):
        load_instruction_rows(str(tmp_path / "nope.jsonl"))


def test_limit_is_a_seeded_sample_in_source_order(tmp_path: Path) -> None:
    records = [{"instruction": f"q{i}", "input": "", "output": str(i)} for i in range(50)]
    jsonl = _write_jsonl(tmp_path / "many.jsonl", records)
    as_json = tmp_path / "many.json"
    as_json.write_text(json.dumps(records), encoding="utf-8")
    first = load_instruction_rows(str(jsonl), limit=10, seed=3)
    outputs = [int(r["output"]) for r in first]
    assert len(first) == 10 and outputs == sorted(outputs)
    assert first == load_instruction_rows(str(jsonl), limit=10, seed=3)
    # the JSON Lines fast path (sample, then parse) draws the same sample as parse-then-sample
    assert first == load_instruction_rows(str(as_json), limit=10, seed=3)
    assert first != load_instruction_rows(str(jsonl), limit=10, seed=4)
    with pytest.raises(ValueError, match=r"`limit` must be a positive integer or None, got 0"):
        load_instruction_rows(str(jsonl), limit=0)


def test_hub_code_path_with_a_local_file_in_dolly_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dolly_records: list[dict[str, str]]
) -> None:
    """The Hub branch calls datasets.load_dataset(id, split=...); here it reads a local file
    through the real `datasets` json builder instead of the network."""
    import datasets

    path = _write_jsonl(tmp_path / "dolly.jsonl", dolly_records)
    real_load = datasets.load_dataset
    calls: list[tuple[str, str]] = []

    def fake_load(name: str, split: str) -> datasets.Dataset:
        calls.append((name, split))
        return real_load("json", data_files=str(path), split=split, cache_dir=str(tmp_path / "hf"))

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    rows = load_instruction_rows("databricks/databricks-dolly-15k")
    assert calls == [("databricks/databricks-dolly-15k", "train")]
    assert rows == normalize_rows(dolly_records, "x")


def test_hub_failure_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(name: str, split: str) -> None:
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ValueError, match=r"Could not load `org/set` .*no network.*local \.json"):
        load_instruction_rows("org/set")


def test_ni_categories_cover_all_subtasks() -> None:
    categories = [ni_category(name) for name in natural_instructions_subtasks()]
    counts = {c: categories.count(c) for c in NI_CATEGORIES}
    assert counts == {
        "quoref": 2,
        "mctaco": 19,
        "cosmosqa": 4,
        "drop": 3,
        "winogrande": 7,
        "qasc": 7,
        "essential_terms": 2,
        "misc": 3,
        "multirc": 11,
        "ropes": 3,
    }
    assert ni_category("subtask046_miscellaenous_question_typing") == "misc"
    with pytest.raises(ValueError, match=r"Unknown Natural-Instructions subtask `subtask999_x`"):
        ni_category("subtask999_x")


def test_bigbench_ni_is_converted_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECOLORA_CACHE", str(tmp_path))
    names = ["subtask024_cosmosqa_answer_generation", "subtask047_misc_answering_science_questions"]
    fake = {
        f"natural_instructions/{names[0]}": {
            "description": " Definition: answer. ",
            "examples": [
                {"input": "Q1", "target": ["A1", "alt"]},
                {"input": "Q2", "target": ["A2"]},
            ],
        },
        f"natural_instructions/{names[1]}": {
            "description": "Definition: science.",
            "examples": [{"input": "Q3", "target": "A3"}],
        },
    }
    monkeypatch.setattr(sources, "natural_instructions_subtasks", lambda: names)
    monkeypatch.setattr(sources, "load_task_json", lambda wanted: {n: fake[n] for n in wanted})
    rows = load_instruction_rows("bigbench-ni")
    assert rows[0] == {
        "instruction": "Definition: answer.",
        "input": "Q1",
        "output": "A1",
        "category": "cosmosqa",
        "task": names[0],
    }
    assert [(r["output"], r["category"]) for r in rows[1:]] == [("A2", "cosmosqa"), ("A3", "misc")]
    assert (tmp_path / "data" / "bigbench-ni.v1.jsonl").is_file()

    def must_not_run(wanted: object) -> None:
        raise AssertionError("converted twice")

    monkeypatch.setattr(sources, "load_task_json", must_not_run)
    assert load_instruction_rows("bigbench-ni") == rows
    with pytest.raises(ValueError, match=r"`bigbench-ni` only has the split 'train'"):
        load_instruction_rows("bigbench-ni", split="test")


@pytest.mark.slow
def test_real_bigbench_ni_counts() -> None:
    """Needs the bigbench==1.0.0 sdist (358 MB, fetched once); pins the table in docs/data.md."""
    rows = load_instruction_rows("bigbench-ni")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["category"]] = counts.get(row["category"], 0) + 1
    assert len(rows) == 193_250
    assert counts == {
        "quoref": 10_725,
        "mctaco": 9_741,
        "cosmosqa": 20_000,
        "drop": 19_107,
        "winogrande": 41_500,
        "qasc": 39_928,
        "essential_terms": 4_203,
        "misc": 6_944,
        "multirc": 32_468,
        "ropes": 8_634,
    }
    assert len({row["task"] for row in rows}) == 61
