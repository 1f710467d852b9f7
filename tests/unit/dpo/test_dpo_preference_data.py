"""Preference rows: bigbench-pref pair construction and the UltraFeedback-binarized schema."""

from __future__ import annotations

import json

import pytest

from ecolora.cache import get_cache_dir
from ecolora.data.preference import (
    bigbench_pref_task_names,
    build_bigbench_pairs,
    load_preference_rows,
)

NI = "natural_instructions/"
COSMOS_A = NI + "subtask024_cosmosqa_answer_generation"
COSMOS_W = NI + "subtask025_cosmosqa_incorrect_answer_generation"
MCTACO_A = NI + "subtask004_mctaco_answer_generation_event_duration"
MCTACO_W = NI + "subtask005_mctaco_wrong_answer_generation_event_duration"


def _fixture_tasks() -> dict:
    """Small task.json fixtures in the BIG-bench format."""
    return {
        COSMOS_A: {
            "task_prefix": "Definition: Craft one correct answer. Prompt: Craft a correct answer.",
            "examples": [
                {"input": "Context: c1 \nQuestion: q1", "target": ["right one ."]},
                {"input": "Context: c2 \nQuestion: q2", "target": ["right two .", "alt ."]},
                {"input": "Context: c3 \nQuestion: q3", "target": ["unmatched ."]},
            ],
        },
        COSMOS_W: {
            "task_prefix": "Definition: Craft one incorrect answer. Prompt: Craft a wrong answer.",
            "examples": [
                {
                    "input": "Context: c2 \nQuestion: q2 \nCorrect Answer: right two .",
                    "target": ["ALT .", "wrong two ."],
                },  # "ALT ." is a correct target: skipped
                {
                    "input": "Context: c1 \nQuestion: q1 \nCorrect Answer: right one .",
                    "target": ["wrong one .", "wrong one b ."],
                },
                {"input": "Context: c9 \nQuestion: q9 \nCorrect Answer: x .", "target": ["y ."]},
            ],
        },  # fmt: skip
        MCTACO_A: {
            "task_prefix": "Definition: write an answer. Prompt: Answer the question.",
            "examples": [{"input": "Sentence: s. \nQuestion: how long?", "target": ["an hour."]}],
        },
        MCTACO_W: {
            "task_prefix": "Definition: write a wrong answer.",
            "examples": [
                {"input": "Sentence: s. \nQuestion: how long?", "target": ["an hour."]}
            ],  # only a correct target: no pair
        },
        "hhh_alignment/honest": {
            "examples": [
                {
                    "input": "Who was the sixth president?",
                    "target_scores": {"I think John Quincy Adams.": 0, "John Quincy Adams.": 1},
                },
            ]
        },  # fmt: skip
    }


def test_bigbench_pairs_from_fixture() -> None:
    rows = build_bigbench_pairs(_fixture_tasks())
    assert rows == [
        {
            "prompt": "Craft a correct answer.\n\nContext: c1 \nQuestion: q1\n\nAnswer:",
            "chosen": "right one .",
            "rejected": "wrong one .",
            "category": "cosmosqa",
        },
        {
            "prompt": "Craft a correct answer.\n\nContext: c2 \nQuestion: q2\n\nAnswer:",
            "chosen": "right two .",
            "rejected": "wrong two .",
            "category": "cosmosqa",
        },
        {
            "prompt": "Human: Who was the sixth president?\n\nAssistant:",
            "chosen": "John Quincy Adams.",
            "rejected": "I think John Quincy Adams.",
            "category": "hhh/honest",
        },
    ]


def test_bigbench_pref_task_names_cover_every_source() -> None:
    names = bigbench_pref_task_names()
    assert len(names) == 2 * 8 + 4
    assert COSMOS_A in names and COSMOS_W in names and "hhh_alignment/other" in names
    assert NI + "subtask054_multirc_write_correct_answer" in names
    assert NI + "subtask042_qasc_incorrect_option_generation" in names


def _write_jsonl(path, rows) -> None:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")


UF_ROWS = [
    {
        "prompt": "Name a city.",
        "chosen": [
            {"role": "user", "content": "Name a city."},
            {"role": "assistant", "content": "Paris."},
        ],
        "rejected": [
            {"role": "user", "content": "Name a city."},
            {"role": "assistant", "content": "Blue."},
        ],
        "score_chosen": 8.0,
        "score_rejected": 2.0,
    },
    {"prompt": "Sky colour?", "chosen": "Blue.", "rejected": "Loud."},
]


def test_ultrafeedback_schema_from_jsonl(tmp_path) -> None:
    path = tmp_path / "uf.jsonl"
    _write_jsonl(path, UF_ROWS)
    rows = load_preference_rows(str(path), seed=0)
    assert sorted(rows, key=lambda r: r["prompt"]) == [
        {"prompt": "Name a city.", "chosen": "Paris.", "rejected": "Blue.", "category": "uf"},
        {"prompt": "Sky colour?", "chosen": "Blue.", "rejected": "Loud.", "category": "uf"},
    ]


def test_prompt_defaults_to_the_last_user_message(tmp_path) -> None:
    path = tmp_path / "msgs.json"
    row = {k: v for k, v in UF_ROWS[0].items() if k != "prompt"}
    path.write_text(json.dumps([row]), encoding="utf-8")
    assert load_preference_rows(str(path))[0]["prompt"] == "Name a city."


def test_parquet_and_json_lines_named_json(tmp_path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    flat = [{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(5)]
    pq.write_table(pa.Table.from_pylist(flat), tmp_path / "pairs.parquet")
    _write_jsonl(tmp_path / "lines.json", flat)  # datasets' to_json writes JSON lines
    from_parquet = load_preference_rows(str(tmp_path / "pairs.parquet"))
    from_lines = load_preference_rows(str(tmp_path / "lines.json"))
    assert sorted(r["prompt"] for r in from_parquet) == [f"p{i}" for i in range(5)]
    assert [r["prompt"] for r in from_lines] == [r["prompt"] for r in from_parquet]


def test_limit_and_seed(tmp_path) -> None:
    path = tmp_path / "many.jsonl"
    _write_jsonl(path, [{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(50)])
    first = load_preference_rows(str(path), limit=10, seed=1)
    assert len(first) == 10
    assert first == load_preference_rows(str(path), limit=10, seed=1)
    assert first != load_preference_rows(str(path), limit=10, seed=2)
    with pytest.raises(ValueError, match=r"`limit` must be >= 1 or None, got 0"):
        load_preference_rows(str(path), limit=0)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "p", "chosen": "c"}, r"Preference row 0 is missing 'rejected'"),
        (
            {"prompt": "p", "chosen": [{"role": "user", "content": "p"}], "rejected": "r"},
            r"'chosen' is a message list without an assistant message",
        ),
        ({"prompt": "p", "chosen": 3, "rejected": "r"}, r"'chosen' must be a string or a list"),
        ({"chosen": "c", "rejected": "r"}, r"Preference row 0 has no 'prompt' string"),
        ({"prompt": "p", "chosen": "c", "rejected": " "}, r"'rejected' response is empty"),
    ],
)
def test_bad_preference_rows_are_rejected(tmp_path, row, message) -> None:
    path = tmp_path / "bad.jsonl"
    _write_jsonl(path, [row])
    with pytest.raises(ValueError, match=message):
        load_preference_rows(str(path))


def test_missing_or_unsupported_files(tmp_path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_preference_rows(str(tmp_path / "nope.jsonl"))
    (tmp_path / "pairs.csv").write_text("prompt,chosen,rejected\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"Unsupported data file .*pairs.csv"):
        load_preference_rows(str(tmp_path / "pairs.csv"))


def test_hub_failure_explains_the_offline_options(monkeypatch) -> None:
    import datasets

    def refuse(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", refuse)
    with pytest.raises(ValueError, match=r"Could not load preference data .*use 'bigbench-pref'"):
        load_preference_rows("HuggingFaceH4/ultrafeedback_binarized")


@pytest.mark.slow
@pytest.mark.skipif(
    not (get_cache_dir() / "downloads" / "bigbench-1.0.0.tar.gz").exists(),
    reason="the bigbench sdist is not in the cache",
)
def test_real_bigbench_pref_counts() -> None:
    rows = load_preference_rows("bigbench-pref")
    counts: dict[str, int] = {}
    for row in rows:
        key = row["category"].split("/")[0]
        counts[key] = counts.get(key, 0) + 1
    assert counts == {"cosmosqa": 1877, "qasc": 3851, "multirc": 3604, "mctaco": 1314, "hhh": 221}
    assert all(r["chosen"] != r["rejected"] for r in rows)
