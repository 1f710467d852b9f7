"""Suite loaders on small local files in each schema, aggregation, and the registry."""

from __future__ import annotations

import json

import pytest
from bigram_lm_eval import BigramLM

from ecolora.cache import get_cache_dir
from ecolora.eval import SUITES, Suite, get_suite, load_suite, register_suite, run_suite
from ecolora.eval.suites import Journal


def _jsonl(path, rows) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return str(path)


def _arc(id_, question, texts, key, labels="ABCD"):
    return {"id": id_, "question": question,
            "choices": {"text": texts, "label": list(labels[: len(texts)])}, "answerKey": key}  # fmt: skip


# ---- ARC ------------------------------------------------------------------------------------


def _arc_dir(tmp_path):
    _jsonl(tmp_path / "ARC-Easy" / "test.jsonl", [_arc("e1", "the sky is", ["green", "blue"], "B")])
    _jsonl(tmp_path / "ARC-Easy" / "train.jsonl", [_arc("t1", "ignored", ["a", "b"], "A")])
    _jsonl(
        tmp_path / "ARC-Challenge" / "test.jsonl",
        [
            _arc("c1", "the capital", ["rome", "paris"], "2", labels="12"),
            _arc("c2", "the capital", ["paris", "rome"], "2", labels="12"),
        ],
    )
    return str(tmp_path)


def test_arc_folder_in_hub_layout(tmp_path) -> None:
    items = load_suite("arc", path=_arc_dir(tmp_path))
    assert [i["subset"] for i in items] == ["ARC-Challenge", "ARC-Challenge", "ARC-Easy"]
    assert items[2] == {"question": "Question: the sky is\nAnswer:", "choices": ["green", "blue"],
                        "answer": 1, "subset": "ARC-Easy"}  # fmt: skip
    assert [i["answer"] for i in items[:2]] == [1, 1]  # numeric answerKey "2"
    assert len(load_suite("arc", path=_arc_dir(tmp_path), limit=1)) == 2  # limit is per subset


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"id": "x", "question": "q", "answerKey": "A"},
            r"ARC row 0 \(id x\) is missing 'choices'",
        ),
        (
            _arc("x", "q", ["a", "b"], "E"),
            r"answerKey 'E' is not among the choice labels \['A', 'B'\]",
        ),
        ({**_arc("x", "q", ["a", "b"], "A"), "choices": ["a", "b"]}, r"'choices' must be \{'text'"),
        (_arc("x", "q", ["a"], "A"), r"'choices' must hold at least 2 non-empty strings"),
    ],
)
def test_bad_arc_rows(tmp_path, row, message) -> None:
    with pytest.raises(ValueError, match=message):
        load_suite("arc-easy", path=_jsonl(tmp_path / "arc.jsonl", [row]))


def test_arc_score_is_the_mean_of_easy_and_challenge(tmp_path, tokenizer) -> None:
    ids = tokenizer.convert_tokens_to_ids
    # every ARC question ends in "Answer:"; after ":" the model prefers "blue" and "paris"
    model = BigramLM(len(tokenizer), {ids(":"): {ids("blue"): 0.4, ids("paris"): 0.4}})
    # ARC-Easy 1/1 right; ARC-Challenge 1/2 right (c2's answer is "rome")
    result = run_suite("arc", model, tokenizer, path=_arc_dir(tmp_path))
    assert result["subsets"]["ARC-Easy"]["acc"] == 1.0
    assert result["subsets"]["ARC-Challenge"]["acc"] == 0.5
    assert result["acc"] == pytest.approx(0.75)  # macro; the item mean would be 2/3
    assert (
        result["aggregate"] == "macro" and result["n"] == 3 and result["kind"] == "multiple_choice"
    )


def test_journal_keeps_each_subset_and_a_rerun_scores_only_the_missing_ones(tmp_path, tokenizer) -> None:
    ids = tokenizer.convert_tokens_to_ids
    model = BigramLM(len(tokenizer), {ids(":"): {ids("blue"): 0.4, ids("paris"): 0.4}})
    path, file = _arc_dir(tmp_path), tmp_path / "scores.jsonl"
    key = {"suite": "arc", "model": "bigram"}
    full = run_suite("arc", model, tokenizer, path=path, journal=Journal(file, key))
    lines = [json.loads(line) for line in file.read_text().splitlines()]
    assert sorted(r["subset"] for r in lines) == ["ARC-Challenge", "ARC-Easy"]
    assert all(r["key"] == key for r in lines)

    # an interrupted evaluation: the journal holds ARC-Easy only, and its last line was cut short
    easy = next(line for line in file.read_text().splitlines() if '"ARC-Easy"' in line)
    file.write_text(easy + "\n" + '{"key": {"suite": "ar')
    scored: list[int] = []
    counting = BigramLM(len(tokenizer), {ids(":"): {ids("blue"): 0.4, ids("paris"): 0.4}})
    counting.register_forward_hook(lambda module, args, out: scored.append(1))
    resumed = run_suite("arc", counting, tokenizer, path=path, journal=Journal(file, key))
    assert resumed["subsets"] == full["subsets"] and resumed["acc"] == full["acc"]
    assert scored  # ARC-Challenge was scored again ...
    assert Journal(file, key).done.keys() == {"ARC-Easy", "ARC-Challenge"}
    # ... and a journal of another model (key) is not reused
    assert Journal(file, {**key, "model": "other"}).done == {}
    scored.clear()
    run_suite("arc", counting, tokenizer, path=path, journal=Journal(file, key))
    assert not scored  # everything came from the journal


# ---- MMLU -----------------------------------------------------------------------------------


def test_mmlu_parquet_with_letters_and_indices(tmp_path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [
        {"question": "2 + 2 = ?", "subject": "elementary_mathematics", "choices": ["3", "4", "5", "6"], "answer": 1},
        {"question": "H2O is", "subject": "chemistry", "choices": ["water", "salt", "air", "fire"], "answer": 0},
    ]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test-00000.parquet")
    items = load_suite("mmlu", path=str(tmp_path))
    assert items[0]["question"] == (
        "The following are multiple choice questions (with answers) about elementary mathematics."
        "\n\n2 + 2 = ?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:"
    )
    assert items[0]["choices"] == ["A", "B", "C", "D"] and items[0]["answer"] == 1
    assert [i["subset"] for i in items] == ["elementary_mathematics", "chemistry"]
    letter = _jsonl(tmp_path / "letters.jsonl", [{**rows[0], "answer": "C"}])
    assert load_suite("mmlu", path=letter)[0]["answer"] == 2


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"question": "q", "answer": 0}, r"MMLU row 0 is missing 'choices'"),
        (
            {"question": "q", "choices": ["a", "b"], "answer": 2},
            r"answer 2 is not among the 2 choices",
        ),
        (
            {"question": "q", "choices": ["a", "b"], "answer": "Z"},
            r"answer 'Z' is not among the 2 choices",
        ),
        (
            {"question": "", "choices": ["a", "b"], "answer": 0},
            r"'question' must be a non-empty string",
        ),
    ],
)
def test_bad_mmlu_rows(tmp_path, row, message) -> None:
    with pytest.raises(ValueError, match=message):
        load_suite("mmlu", path=_jsonl(tmp_path / "mmlu.jsonl", [row]))


# ---- BIG-bench ------------------------------------------------------------------------------


def test_bigbench_task_json_format(tmp_path) -> None:
    task = {
        "task_prefix": "Answer.",
        "example_output_prefix": "\nAnswer: ",
        "examples": [
            {"input": "Sky?", "target_scores": {"blue": 1, "green": 0}},
            {"input": "Tie?", "target_scores": {"a": 1, "b": 1}},  # no single answer: skipped
            {"input": "City?", "target_scores": {"rome": 0, "paris": 1, "x": 0}},
        ],
    }
    (tmp_path / "colors").mkdir()
    (tmp_path / "colors" / "task.json").write_text(json.dumps(task), encoding="utf-8")
    items = load_suite("bigbench-mc", path=str(tmp_path))
    assert items[0] == {
        "question": "Answer.\nQ: Sky?\n  choice: blue\n  choice: green\nAnswer: ",
        "choices": ["blue", "green"],
        "answer": 0,
        "delimiter": "",
        "subset": "colors",
    }
    assert [i["answer"] for i in items] == [0, 1]


def test_bigbench_example_without_target_scores(tmp_path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"examples": [{"input": "q", "target_scores": {"a": 1}}]}))
    with pytest.raises(
        ValueError, match=r"example 0 needs 'target_scores' with at least 2 choices"
    ):
        load_suite("bigbench-mc", path=str(path))


def test_ni_science_questions_are_parsed(tmp_path) -> None:
    task = {"examples": [
        {"input": "Question: Sound comes from  (A) wood. (B) metal (A) (C) air. (D) vibrations?",
         "target": ["D."]},
        {"input": "Question: no options here?", "target": ["A."]},
    ]}  # fmt: skip
    path = tmp_path / "subtask047_misc_answering_science_questions.json"
    path.write_text(json.dumps(task), encoding="utf-8")
    (item,) = load_suite("bigbench-mc", path=str(path))
    assert item["question"] == "Question: Sound comes from\nAnswer:"
    assert item["choices"] == ["wood.", "metal (A)", "air.", "vibrations"]
    assert item["answer"] == 3


# ---- generic items, text loss, preference ----------------------------------------------------


def test_mc_suite_reads_items_and_validates(tmp_path) -> None:
    good = _jsonl(tmp_path / "good.jsonl", [{"question": "q", "choices": ["a", "b"], "answer": 1}])
    assert load_suite("mc", path=good)[0]["subset"] == "good"
    bad = _jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answer": 1}])
    with pytest.raises(ValueError, match="Item 0 is missing 'choices'"):
        load_suite("mc", path=bad)


def test_loss_suite_matches_held_out_loss(tmp_path, tokenizer, model) -> None:
    import torch

    from ecolora.eval import held_out_loss

    rows = [{"prompt": "the sky is", "response": "blue"}, {"text": "the cat sits on the mat"}]
    result = run_suite("loss", model, tokenizer, path=_jsonl(tmp_path / "held.jsonl", rows))
    ids1 = tokenizer("the sky is")["input_ids"] + [tokenizer.convert_tokens_to_ids("blue"), 2]
    ids2 = tokenizer("the cat sits on the mat")["input_ids"]
    batches = [
        {"input_ids": torch.tensor([ids1]), "labels": torch.tensor([[-100] * 4 + ids1[4:]])},
        {"input_ids": torch.tensor([ids2]), "labels": torch.tensor([ids2])},
    ]
    assert result["loss"] == pytest.approx(held_out_loss(model, batches), abs=1e-5)
    assert result["n"] == 2
    with pytest.raises(ValueError, match=r"Loss row 0 needs 'text' or 'prompt' and 'response'"):
        load_suite("loss", path=_jsonl(tmp_path / "bad.jsonl", [{"prompt": "x"}]))


def test_preference_suite_on_a_fresh_adapter(tmp_path, tokenizer, model) -> None:
    from tiny_lm import wrap_lora

    rows = [{"prompt": "the sky is", "chosen": "blue", "rejected": "green"}] * 3
    result = run_suite(
        "preference",
        wrap_lora(model, perturb=False),
        tokenizer,
        path=_jsonl(tmp_path / "p.jsonl", rows),
    )
    assert result["kind"] == "preference" and result["n"] == 3
    assert result["reward_accuracy"] == 0.0 and result["dpo_loss"] == pytest.approx(
        0.693147, abs=1e-5
    )


# ---- registry and errors ---------------------------------------------------------------------


def test_unknown_suite_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"Unknown suite 'arcc'; known suites: arc, arc-challenge"):
        load_suite("arcc")


def test_registry_refuses_duplicates_and_validates() -> None:
    assert get_suite("bigbench-mc").aggregate == "macro"
    assert {"arc", "mmlu", "bigbench-mc", "bigbench-pref", "loss"} <= set(SUITES)
    with pytest.raises(ValueError, match="Suite 'arc' is already registered"):
        register_suite(Suite("arc", "multiple_choice", lambda limit, path: []))
    with pytest.raises(ValueError, match=r"Suite `kind` must be one of .* got 'mcq'"):
        Suite("x", "mcq", lambda limit, path: [])


def test_path_and_limit_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_suite("arc", path=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"No .json/.jsonl/.parquet files under"):
        load_suite("arc", path=str(tmp_path))
    with pytest.raises(ValueError, match=r"`limit` must be >= 1 or None, got 0"):
        load_suite("arc", limit=0)
    with pytest.raises(ValueError, match=r"This suite reads a local file: pass path="):
        load_suite("mc")


def test_hub_failure_says_how_to_work_offline(monkeypatch) -> None:
    import datasets

    def refuse(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", refuse)
    with pytest.raises(
        ValueError, match=r"Could not load allenai/ai2_arc \(ARC-Easy, test\).*pass path="
    ):
        load_suite("arc")


@pytest.mark.slow
@pytest.mark.skipif(
    not (get_cache_dir() / "downloads" / "bigbench-1.0.0.tar.gz").exists(),
    reason="the bigbench sdist is not in the cache",
)
def test_real_bigbench_mc_counts() -> None:
    items = load_suite("bigbench-mc")
    counts: dict[str, int] = {}
    for item in items:
        counts[item["subset"]] = counts.get(item["subset"], 0) + 1
    assert counts == {
        "social_iqa": 1954, "strategyqa": 2290, "timedial": 2550, "sports_understanding": 1000,
        "winowhy": 2865, "physical_intuition": 81, "epistemic_reasoning": 2000,
        "general_knowledge": 69, "hindu_knowledge": 174, "known_unknowns": 46,
        "subtask047_misc_answering_science_questions": 248,
    }  # fmt: skip
    assert len(load_suite("bigbench-mc", limit=5)) == 5 * 11
