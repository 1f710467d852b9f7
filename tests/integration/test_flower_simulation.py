"""``flwr run .`` on Flower's simulation engine (Ray) with 10 virtual SuperNodes.

A private SuperLink in simulation mode on a free loopback port, a private FLWR_HOME, and the repo's
own ``[tool.flwr.app]``: the same command a user types. The run must write the run-directory
contract and reproduce the in-process run of the same config bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecolora.flower.launch import simulate
from ecolora.flower.settings import resolve_settings
from ecolora.sim import run_experiment
from ecolora.strategies.base import Strategy

from .test_cli_smoke import _check_run_dir

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = [
    "method=fedit+ecolora",
    "fed.rounds=2",
    "fed.num_clients=10",
    "lora.dropout=0",
    "train.num_threads=1",
    "data.limit=120",
    "data.eval_size=16",
    "data.max_seq_len=64",
]


def _upload_without_timing(record: dict) -> list[int]:
    """Upload bytes per client minus what the measured ``compute_s`` adds to the reply header
    (wall time differs between runs; with fixed-width metrics that part is a constant)."""
    return [c["upload_bytes"] - len(Strategy.pack_config({}, 0, {"compute_s": c["compute_s"]}))
            for c in record["per_client"]]  # fmt: skip


@pytest.mark.flower
@pytest.mark.integration
def test_simulation_engine_with_ten_virtual_clients_matches_in_process(tmp_path):
    out = tmp_path / "flower"
    run_config = {
        "config": str(ROOT / "configs" / "smoke.yaml"),
        "overrides": ";".join(OVERRIDES),
        "out-dir": str(out),
        "round-timeout": 300.0,
    }
    proc, superlink_log, flower_s = simulate(ROOT, tmp_path, run_config, 10, timeout_s=900)
    # `flwr run` exits 0 even when the run failed: judge by the run directory.
    assert (out / "summary.json").is_file(), (proc.stdout[-4000:], superlink_log[-4000:])
    metrics, summary = _check_run_dir(out, "fedit+ecolora", 2)
    assert summary["num_clients"] == 10 and all(
        m["dropped"] == m["rejected"] == [] for m in metrics
    )

    config = resolve_settings(run_config).config
    reference = run_experiment(config, tmp_path / "inproc")
    ref_metrics = [
        json.loads(line)
        for line in (tmp_path / "inproc" / "metrics.jsonl").read_text().splitlines()
    ]
    for key in ("final_eval_loss", "download_bytes", "upload_params", "download_params"):
        assert summary[key] == reference[key], key
    for fr, ir in zip(metrics, ref_metrics, strict=True):
        assert fr["clients"] == ir["clients"] and fr["eval_loss"] == ir["eval_loss"]
        assert _upload_without_timing(fr) == _upload_without_timing(ir)
    from safetensors.torch import load_file

    a = load_file(out / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "inproc" / "adapter" / "adapter_model.safetensors")
    assert sorted(a) == sorted(b) and all((a[k] == b[k]).all() for k in a)
    print(
        f"flower simulation: {flower_s:.1f} s wall, server {summary['wall_s']:.1f} s; "  # noqa: T201
        f"in-process {reference['wall_s']:.1f} s"
    )
