"""``evaluate_adapter``: base model from the run's config.yaml, adapter loading, heldout split."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from tiny_lm_eval import make_model, make_tokenizer, wrap_lora

import ecolora.client.model as model_module
from ecolora.eval.cli import evaluate_adapter, known_suites

PAIRS = [
    {"prompt": "the sky is", "chosen": "blue", "rejected": "green", "category": "a"},
    {"prompt": "is the grass green ?", "chosen": "yes", "rejected": "no", "category": "a"},
    {"prompt": "the capital of france is", "chosen": "paris", "rejected": "rome", "category": "b"},
    {"prompt": "the cat sits on the", "chosen": "mat", "rejected": "dog", "category": "b"},
]


@pytest.fixture()
def run_dir(tmp_path, monkeypatch):
    """A run directory with config.yaml and a perturbed adapter; load_base_model is stubbed."""
    torch.manual_seed(0)
    state = make_model().state_dict()
    loaded: list[str] = []

    def fake_load_base_model(name, **kwargs):
        loaded.append(name)
        model = make_model()
        model.load_state_dict(state)
        return model.eval(), make_tokenizer()

    monkeypatch.setattr(model_module, "load_base_model", fake_load_base_model)
    base = make_model()
    base.load_state_dict(state)
    wrap_lora(base).save_pretrained(str(tmp_path / "run" / "adapter"))
    source = tmp_path / "pairs.jsonl"
    source.write_text("\n".join(json.dumps(p) for p in PAIRS), encoding="utf-8")
    config = {"model": {"name": "fake-base"}, "train": {"objective": "dpo", "dpo_beta": 0.5},
              "data": {"source": str(source), "eval_size": 2, "max_seq_len": 32}}  # fmt: skip
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return tmp_path / "run", loaded


def test_adapter_on_a_multiple_choice_file(run_dir, tmp_path) -> None:
    run, loaded = run_dir
    items = tmp_path / "items.jsonl"
    items.write_text(
        json.dumps({"question": "the sky is", "choices": ["blue", "green"], "answer": 0})
    )
    result = evaluate_adapter(adapter=run / "adapter", suite="mc", path=str(items))
    assert loaded == ["fake-base"]  # from the run's config.yaml
    assert result["model"] == "fake-base" and result["adapter"] == str(run / "adapter")
    assert result["suite"] == "mc" and result["n"] == 1 and set(result["subsets"]) == {"items"}


def test_heldout_redraws_the_runs_split(run_dir) -> None:
    try:
        import ecolora.sim.setup  # noqa: F401 - heldout re-uses the runner's build_task
    except ImportError as err:
        pytest.skip(f"the runner does not import: {err}")
    run, _ = run_dir
    result = evaluate_adapter(adapter=run / "adapter", suite="heldout")
    assert result["kind"] == "preference" and result["n"] == 2
    assert abs(result["reward_margin"]) > 1e-4  # the adapter differs from the base


def test_argument_errors(run_dir, tmp_path) -> None:
    run, loaded = run_dir
    with pytest.raises(FileNotFoundError, match="No PEFT adapter in"):
        evaluate_adapter(adapter=tmp_path, suite="mc")
    with pytest.raises(ValueError, match="Unknown suite 'nope'"):
        evaluate_adapter(adapter=run / "adapter", suite="nope")
    with pytest.raises(ValueError, match="compares an adapter with its base model: pass --adapter"):
        evaluate_adapter(adapter=None, suite="bigbench-pref")
    with pytest.raises(ValueError, match="Suite 'heldout' needs --adapter inside a run directory"):
        evaluate_adapter(adapter=None, suite="heldout", model="fake-base")
    assert loaded == []  # every error comes before the model loads
    assert "heldout" in known_suites() and "bigbench-mc" in known_suites()
