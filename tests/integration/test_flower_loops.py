"""``flwr run .`` on Flower's simulation engine (Ray) for fedbuff+ecolora, the loop with its own clock.

The FedBuff event loop runs in the ServerApp; each dispatched job goes to the virtual SuperNode of
its partition and the replies of the jobs in flight are pulled when the loop needs the next arrival.
The run must write the run directory and reproduce the in-process run bit for bit (same adapter,
same clients per server step, same bytes, same simulated time).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from ecolora.flower.launch import simulate
from ecolora.flower.settings import resolve_settings
from ecolora.sim import run_experiment

from .test_cli_smoke import _check_run_dir

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = [  # configs/methods/fedbuff.yaml: 6 clients, 3 jobs in flight, a step every 2 arrivals
    "method=fedbuff+ecolora",
    "fed.rounds=3",
    "lora.dropout=0",
    "train.num_threads=1",
    "data.limit=120",
    "data.eval_size=16",
    "data.max_seq_len=64",
]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.flower
@pytest.mark.integration
def test_fedbuff_ecolora_on_the_simulation_engine_matches_in_process(tmp_path):
    out = tmp_path / "flower"
    run_config = {
        "config": str(ROOT / "configs" / "methods" / "fedbuff.yaml"),
        "overrides": ";".join(OVERRIDES),
        "out-dir": str(out),
        "round-timeout": 300.0,
    }
    proc, superlink_log, flower_s = simulate(ROOT, tmp_path, run_config, 6, timeout_s=600)
    # `flwr run` exits 0 even when the run failed: judge by the run directory.
    assert (out / "summary.json").is_file(), (proc.stdout[-4000:], superlink_log[-4000:])
    metrics, summary = _check_run_dir(out, "fedbuff+ecolora", 3)
    assert all(m["dropped"] == m["rejected"] == [] for m in metrics)

    reference = run_experiment(resolve_settings(run_config).config, tmp_path / "inproc")
    for key in ("final_eval_loss", "upload_bytes", "download_bytes", "upload_params", "download_params",
                "sim_time_s", "jobs_dispatched", "mean_staleness"):  # fmt: skip
        assert summary[key] == reference[key], key
    for fr, ir in zip(metrics, _rows(tmp_path / "inproc" / "metrics.jsonl"), strict=True):
        assert fr["clients"] == ir["clients"] and fr["eval_loss"] == ir["eval_loss"]
        assert [(c["client"], c["upload_bytes"], c["download_bytes"]) for c in fr["per_client"]] == [
            (c["client"], c["upload_bytes"], c["download_bytes"]) for c in ir["per_client"]]
    a = load_file(out / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "inproc" / "adapter" / "adapter_model.safetensors")
    assert sorted(a) == sorted(b) and all((a[k] == b[k]).all() for k in a)
    timing = summary["flower_timing"]
    ends = timing["round_end_s"]
    print(  # noqa: T201
        f"fedbuff+ecolora on Ray, 6 virtual nodes: flwr run {flower_s:.1f} s, server {summary['wall_s']:.1f} s, "
        f"{timing['jobs']} jobs, server steps end at {[round(e, 1) for e in ends]} s after the loop's start, "
        f"waiting for replies {timing['wait_s']:.1f} s; in-process {reference['wall_s']:.1f} s"
    )
