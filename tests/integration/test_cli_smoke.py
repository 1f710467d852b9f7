"""End-to-end: the CLI runs the smoke preset for each method and writes the run-directory contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
METRIC_KEYS = {"round", "clients", "train_loss", "eval_loss", "upload_bytes", "download_bytes",
               "upload_params", "download_params", "compute_s", "per_client"}
SUMMARY_KEYS = {"method", "model", "dataset", "num_clients", "clients_per_round", "rounds_completed",
                "final_eval_loss", "upload_bytes", "download_bytes", "upload_params", "download_params", "wall_s"}


def _run(out: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ecolora", "run", "--config", str(ROOT / "configs" / "smoke.yaml"), "--out", str(out)]
    for o in overrides:
        cmd += ["--set", o]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)


def _check_run_dir(out: Path, method: str, rounds: int) -> tuple[list[dict], dict]:
    assert (out / "config.yaml").is_file()
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in metrics] == list(range(1, rounds + 1))
    for m in metrics:
        assert METRIC_KEYS <= set(m)
        assert m["upload_bytes"] == sum(c["upload_bytes"] for c in m["per_client"])
        assert m["download_bytes"] == sum(c["download_bytes"] for c in m["per_client"])
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["method"] == method and summary["rounds_completed"] == rounds
    assert summary["upload_bytes"] == sum(m["upload_bytes"] for m in metrics)
    assert (out / "plots" / "loss.png").stat().st_size > 1000
    assert (out / "plots" / "bytes.png").stat().st_size > 1000
    assert (out / "adapter" / "adapter_config.json").is_file()
    return metrics, summary


@pytest.mark.integration
def test_smoke_fedit_run_directory_and_adapter_loads(tmp_path):
    out = tmp_path / "fedit"
    proc = _run(out, "method=fedit")  # the preset runs fedit+ecolora; this pins the dense baseline
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics, summary = _check_run_dir(out, "fedit", 3)
    assert summary["final_eval_loss"] < summary["initial_eval_loss"]
    from peft import PeftModel

    from ecolora.client.model import load_base_model

    base, _ = load_base_model("tiny-llama")
    model = PeftModel.from_pretrained(base, str(out / "adapter"))
    assert any("lora_A" in n for n, _ in model.named_parameters())


@pytest.mark.integration
@pytest.mark.parametrize("method", ["fedit+ecolora", "ffa+ecolora", "flora+ecolora"])
def test_smoke_ecolora_methods(tmp_path, method):
    out = tmp_path / method.replace("+", "-")
    extra = ["flora.ranks=[8, 4]"] if method.startswith("flora") else []
    proc = _run(out, f"method={method}", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_run_dir(out, method, 3)


@pytest.mark.integration
def test_same_seed_same_numbers(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert _run(out, "method=fedit+ecolora", "fed.rounds=2").returncode == 0
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    for key in ("final_eval_loss", "upload_bytes", "download_bytes", "upload_params", "download_params"):
        assert sa[key] == sb[key], key


def test_cli_rejects_unknown_keys(tmp_path):
    proc = _run(tmp_path / "x", "fed.roundz=3")
    assert proc.returncode == 2
    assert "Unknown key(s) fed.roundz; valid keys" in proc.stderr
