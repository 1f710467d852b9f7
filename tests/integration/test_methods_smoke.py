"""End-to-end: the CLI runs FLASC, FedBuff and HierFedLoRA (alone and +ecolora) on the smoke preset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Each run stays under 90 s on 2 busy cores: 2 rounds, 1 local step of 2 short sequences, small eval.
FAST = ["fed.rounds=2", "fed.eval_every=0", "train.local_steps=1", "train.batch_size=2", "data.max_seq_len=64",
        "data.eval_size=16"]


def _run(out: Path, *overrides: str) -> tuple[list[dict], dict]:
    cmd = [sys.executable, "-m", "ecolora", "run", "--config", str(ROOT / "configs" / "smoke.yaml"), "--out", str(out)]
    for o in (*FAST, *overrides):
        cmd += ["--set", o]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert [m["round"] for m in metrics] == [1, 2] and summary["rounds_completed"] == 2
    for m in metrics:
        assert m["upload_bytes"] == sum(c["upload_bytes"] for c in m["per_client"]) > 0
        assert m["download_bytes"] == sum(c["download_bytes"] for c in m["per_client"]) > 0
        assert m["net"]["1/5"]["round_s"] > 0
    assert summary["upload_bytes"] == sum(m["upload_bytes"] for m in metrics)
    assert summary["final_eval_loss"] is not None
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "plots" / "loss.png").is_file()
    return metrics, summary


@pytest.mark.integration
def test_smoke_flasc_densities(tmp_path):
    metrics, summary = _run(tmp_path / "flasc", "method=flasc", "flasc.upload_density=0.25",
                            "flasc.download_density=0.5")
    assert summary["method"] == "flasc"
    lora = summary["lora_params"]
    for m in metrics:  # top-k keeps round(d * numel) per tensor; entries that did not move are zeros, not sent
        assert 0 < m["upload_params"] <= 3 * lora * 0.25 + 3 * 8
        assert m["download_params"] <= 3 * lora * 0.5 + 3 * 8


@pytest.mark.integration
@pytest.mark.parametrize("method", ["fedbuff", "fedbuff+ecolora"])
def test_smoke_fedbuff(tmp_path, method):
    metrics, summary = _run(tmp_path / method.replace("+", "-"), f"method={method}", "fedbuff.buffer_size=2",
                            "fedbuff.concurrency=2", "fedbuff.step_time_s=1.0")
    assert summary["method"] == method
    times = [m["sim_time_s"] for m in metrics]
    assert times == sorted(times) and times[0] > 0 and summary["sim_time_s"] == times[-1]
    assert all(len(m["clients"]) == 2 and len(m["staleness"]) == 2 for m in metrics)
    assert summary["network"]["1/5"]["round_s"] == pytest.approx(times[-1])
    assert summary["jobs_dispatched"] == 2 * 2 + summary["jobs_discarded"]


@pytest.mark.integration
@pytest.mark.parametrize("method", ["hierfedlora", "hierfedlora+ecolora"])
def test_smoke_hierfedlora(tmp_path, method):
    out = tmp_path / method.replace("+", "-")
    metrics, summary = _run(out, f"method={method}", "hier.num_groups=2", "hier.max_intra_rounds=2",
                            "hier.intra_link=20/100")
    assert summary["method"] == method
    groups = json.loads((out / "groups.json").read_text())
    assert sorted(c for g in groups for c in g["members"]) == list(range(6))
    for m in metrics:
        assert 0 < m["intra_group_bytes"] < m["upload_bytes"] + m["download_bytes"]
        assert {g["group"] for g in m["groups"]} <= {0, 1}
    assert summary["intra_group_bytes"] == sum(m["intra_group_bytes"] for m in metrics)


@pytest.mark.integration
@pytest.mark.parametrize("aggregate", ["delta", "paper"])
def test_smoke_ecolora_nonfinite_fault_is_rejected_and_the_run_completes(tmp_path, aggregate):
    """faults.nonfinite end to end: NaN/Inf in a client's trained LoRA with sparsification on used
    to crash the run (top-k); now the reply is rejected as non_finite and the others aggregated."""
    metrics, summary = _run(tmp_path / aggregate, "method=fedit+ecolora", f"ecolora.aggregate={aggregate}",
                            "faults.nonfinite=0.5")
    rejected = [r for m in metrics for r in m["rejected"]]
    assert rejected and all(r["reason"].startswith("non_finite: ") for r in rejected)
    assert all(m["upload_density"] is not None for m in metrics if not m["no_update"])
    assert summary["final_eval_loss"] is not None
