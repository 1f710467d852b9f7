"""The optional lm-eval bridge: a clear error without lm-eval, and its wiring (with a stub)."""

from __future__ import annotations

import sys
import types

import pytest

from ecolora.eval import evaluate_with_lm_eval


def test_missing_lm_eval_names_the_install_command(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval -> ImportError
    with pytest.raises(ImportError, match="pip install lm-eval"):
        evaluate_with_lm_eval("some/model", None, ["arc_easy"], 10)


def _stub_lm_eval(monkeypatch) -> dict:
    calls: dict = {}

    class HFLM:
        def __init__(self, **kwargs) -> None:
            calls["hflm"] = kwargs

    def simple_evaluate(**kwargs):
        calls["simple_evaluate"] = kwargs
        return {
            "results": {"arc_easy": {"alias": "arc_easy", "acc,none": 0.5, "acc_norm,none": 0.75}}
        }

    lm_eval = types.ModuleType("lm_eval")
    lm_eval.simple_evaluate = simple_evaluate
    models = types.ModuleType("lm_eval.models")
    huggingface = types.ModuleType("lm_eval.models.huggingface")
    huggingface.HFLM = HFLM
    for name, module in (("lm_eval", lm_eval), ("lm_eval.models", models),
                         ("lm_eval.models.huggingface", huggingface)):  # fmt: skip
        monkeypatch.setitem(sys.modules, name, module)
    return calls


def test_bridge_passes_model_adapter_and_tasks(monkeypatch, tmp_path) -> None:
    calls = _stub_lm_eval(monkeypatch)
    out = evaluate_with_lm_eval(
        "org/base", tmp_path, ["arc_easy", "arc_challenge"], 20, batch_size=4
    )
    assert out == {"arc_easy": {"acc,none": 0.5, "acc_norm,none": 0.75}}
    assert calls["hflm"] == {
        "pretrained": "org/base",
        "peft": str(tmp_path),
        "batch_size": 4,
        "device": "cpu",
    }
    assert calls["simple_evaluate"]["tasks"] == ["arc_easy", "arc_challenge"]
    assert calls["simple_evaluate"]["limit"] == 20


def test_bridge_argument_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="needs at least one task"):
        evaluate_with_lm_eval("org/base", None, [], None)
    with pytest.raises(ValueError, match=r"Adapter folder .*missing does not exist"):
        evaluate_with_lm_eval("org/base", tmp_path / "missing", ["arc_easy"], None)
