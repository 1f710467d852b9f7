"""`ecolora eval`: the heldout and lm-eval suites, the loss suite on training files, clean output."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ecolora.cli import app
from ecolora.config import load_config
from ecolora.eval import load_suite

ROOT = Path(__file__).resolve().parents[3]


def test_loss_suite_reads_a_training_file(tmp_path: Path) -> None:
    rows = [{"instruction": "name a colour", "context": "", "response": "blue", "category": "qa"},
            {"instruction": "name a city", "context": "in france", "response": "paris", "category": "qa"}]
    path = tmp_path / "dolly.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = load_suite("loss", path=str(path))
    assert [r["train_row"]["output"] for r in loaded] == ["blue", "paris"]
    assert loaded[1]["train_row"]["input"] == "in france"


def test_loss_suite_scores_training_rows_as_training_encodes_them(tmp_path: Path, tokenizer, model) -> None:  # type: ignore[no-untyped-def]
    import torch

    from ecolora.data.templates import encode_example
    from ecolora.eval import held_out_loss, run_suite

    rows = [{"messages": [{"role": "user", "content": "the sky is"}, {"role": "assistant", "content": "blue"}]}]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_suite("loss", model, tokenizer, path=str(path))
    train_row = load_suite("loss", path=str(path))[0]["train_row"]
    example = encode_example(tokenizer, train_row, 512, "alpaca")  # the tiny tokenizer has no chat template
    batch = {"input_ids": torch.tensor([example["input_ids"]]), "labels": torch.tensor([example["labels"]])}
    assert result["n"] == 1 and result["loss"] == pytest.approx(held_out_loss(model, [batch]), abs=1e-5)


def test_heldout_suite_scores_the_runs_split(tmp_path: Path) -> None:
    config = load_config(ROOT / "configs" / "smoke.yaml", ["data.limit=40", "data.eval_size=4"])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    result = CliRunner().invoke(app, ["eval", "--suite", "heldout", "--path", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores["suite"] == "heldout" and scores["n"] == 4 and scores["loss"] > 0
    assert scores["model"] == "tiny-llama"  # the run's base model, from its config.yaml


def test_heldout_needs_a_run() -> None:
    result = CliRunner().invoke(app, ["eval", "--suite", "heldout", "--model", "tiny-llama"])
    assert result.exit_code == 2 and "pass --adapter RUN/adapter or --path RUN" in result.stderr


def test_save_is_for_multiple_choice_suites(tmp_path: Path) -> None:
    save = tmp_path / "scores.jsonl"
    result = CliRunner().invoke(app, ["eval", "--suite", "loss", "--path", "x.jsonl", "--model", "tiny-llama", "--save", str(save)])
    assert result.exit_code == 2 and "--save keeps per-task results of multiple-choice suites" in result.stderr
    assert not save.exists()


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is not None, reason="lm-eval is installed")
def test_lm_eval_suite_without_lm_eval_is_one_error_line() -> None:
    result = CliRunner().invoke(app, ["eval", "--suite", "lm-eval:arc_easy", "--model", "tiny-llama"])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.stderr
    assert "pip install" in errors[0] and "Traceback" not in result.stderr


def test_eval_output_is_readable_and_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(**kwargs: Any) -> dict[str, Any]:
        warnings.warn("`is_gradient_checkpointing` is deprecated", FutureWarning, stacklevel=1)
        return {"suite": "bigbench-mc", "kind": "multiple_choice", "n": 4, "acc": 0.5, "acc_norm": 0.25,
                "aggregate": "macro", "subsets": {"social_iqa": {"acc": 0.5, "acc_norm": 0.25, "n": 4}},
                "model": "tiny-llama", "adapter": None, "eval_s": 1.0}

    monkeypatch.setattr("ecolora.eval.adapter.evaluate_adapter", fake)
    with warnings.catch_warnings():
        result = CliRunner().invoke(app, ["eval", "--model", "tiny-llama"])
    assert result.exit_code == 0, result.output
    assert "FutureWarning" not in result.output and "{'" not in result.output
    assert "acc 0.5000" in result.stdout and "social_iqa" in result.stdout


def test_a_lone_adapter_names_its_base(tmp_path: Path) -> None:
    from ecolora.eval.adapter import base_model_name

    for base, want in (("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2-135m"), ("tiny-llama", "tiny-llama")):
        folder = tmp_path / want
        folder.mkdir()
        (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
        assert base_model_name(folder, None) == want
    assert base_model_name(tmp_path / "tiny-llama", "smollm2-135m") == "smollm2-135m"
