"""``run_heldout`` re-draws a run's held-out split from its config.yaml (SFT and DPO runs)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from tiny_lm import make_model, make_tokenizer, wrap_lora

from ecolora.eval.heldout import run_heldout

PAIRS = [
    {"prompt": "the sky is", "chosen": "blue", "rejected": "green", "category": "a"},
    {"prompt": "is the grass green ?", "chosen": "yes", "rejected": "no", "category": "a"},
    {"prompt": "the capital of france is", "chosen": "paris", "rejected": "rome", "category": "b"},
    {"prompt": "the cat sits on the", "chosen": "mat", "rejected": "dog", "category": "b"},
]


@pytest.fixture(autouse=True)
def _runner_importable() -> None:
    try:
        import ecolora.sim.setup  # noqa: F401 - run_heldout re-uses the runner's build_task
    except ImportError as err:
        pytest.skip(f"the runner does not import: {err}")


def _run_dir(tmp_path, objective: str):
    source = tmp_path / "pairs.jsonl"
    source.write_text("\n".join(json.dumps(p) for p in PAIRS), encoding="utf-8")
    config = {"train": {"objective": objective, "dpo_beta": 0.5},
              "data": {"source": str(source), "eval_size": 2, "max_seq_len": 32}}  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return run


def test_dpo_run_gets_reward_metrics_on_its_split(tmp_path) -> None:
    run = _run_dir(tmp_path, "dpo")
    result = run_heldout(wrap_lora(make_model()), make_tokenizer(), run, batch_size=1)
    assert result["suite"] == "heldout" and result["kind"] == "preference" and result["n"] == 2
    assert abs(result["reward_margin"]) > 1e-4  # the perturbed adapter differs from the base
    fresh = run_heldout(wrap_lora(make_model(), perturb=False), make_tokenizer(), run)
    assert fresh["dpo_loss"] == pytest.approx(0.693147, abs=1e-5)


def test_missing_run_directory(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"No config.yaml in .*use the 'loss' suite with a path"):
        run_heldout(torch.nn.Linear(1, 1), make_tokenizer(), tmp_path)


def test_sft_run_gets_the_held_out_loss(tmp_path) -> None:
    rows = [
        {"instruction": f"the sky is {w}", "input": "", "output": w}
        for w in ("blue", "green", "red", "blue")
    ]
    source = tmp_path / "alpaca.json"
    source.write_text(json.dumps(rows), encoding="utf-8")
    run = _run_dir(tmp_path, "sft")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["source"] = str(source)
    (run / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    model = make_model()
    result = run_heldout(model, make_tokenizer(), run)
    assert result["kind"] == "loss" and result["n"] == 2
    assert result["perplexity"] == pytest.approx(
        torch.tensor(result["loss"]).exp().item(), rel=1e-5
    )
    assert 0 < result["loss"] < 10  # a random 54-token model: about log(54) = 4
