"""Kill a smoke run with SIGKILL at several moments, resume it, and get the uninterrupted run.

Moments: (1) in the middle of writing the round-2 checkpoint (``ECOLORA_TEST_CHECKPOINT_PAUSE``
stops the write after half of its bytes), (2) a seeded random delay after the round-2 checkpoint
appeared (round 3's local training or evaluation), then the run resumes to the end. The resumed
run must save a bitwise identical adapter and the same summary.json and metrics.jsonl apart from
timing fields (wall and compute seconds, and what is derived from them: network round times and
the bytes of the ``compute_s`` number in each reply's JSON header). Client faults are on, so the
seeded fault draws are checked across the restarts too.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = ["method=fedit+ecolora", "fed.rounds=3", "train.num_threads=1", "train.local_steps=1",
             "data.limit=120", "data.eval_size=16", "data.max_seq_len=64", "faults.dropout=0.2",
             "faults.upload_failure=0.2"]
TIMING_KEYS = {"wall_s", "compute_s", "network", "net"}


def _start(args: list[str], log: Path, pause: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "ECOLORA_TEST_CHECKPOINT_PAUSE"}
    if pause:
        env["ECOLORA_TEST_CHECKPOINT_PAUSE"] = pause
    cmd = [sys.executable, "-m", "ecolora", "run", *args]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def _fresh(out: Path) -> list[str]:
    args = ["--config", str(ROOT / "configs" / "smoke.yaml"), "--out", str(out)]
    for o in OVERRIDES:
        args += ["--set", o]
    return args


def _wait_for(proc: subprocess.Popen, log: Path, ready, timeout_s: float = 400.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) too early:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def _sigkill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def _finish(proc: subprocess.Popen, log: Path) -> None:
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]


def _header_digits(row: dict) -> int:
    """Bytes that depend on measured time: none, metrics travel as fixed-width strings."""
    return 0


def _normalized(run: Path) -> tuple[dict, list[dict]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    timing_bytes = 0
    out = []
    for record in records:
        rows = []
        for row in record["per_client"]:
            digits = _header_digits(row)
            timing_bytes += digits
            rows.append({**{k: v for k, v in row.items() if k not in TIMING_KEYS},
                         "upload_bytes": row.get("upload_bytes", 0) - digits})
        record_digits = sum(_header_digits(r) for r in record["per_client"])
        out.append({**{k: v for k, v in record.items() if k not in TIMING_KEYS},
                    "per_client": rows, "upload_bytes": record["upload_bytes"] - record_digits})
    summary = json.loads((run / "summary.json").read_text())
    summary = {k: v for k, v in summary.items() if k not in TIMING_KEYS}
    summary["upload_bytes"] -= timing_bytes
    return summary, out


def test_sigkill_at_several_moments_then_resume_equals_uninterrupted(tmp_path):
    ref, chain = tmp_path / "ref", tmp_path / "chain"
    ckpts = chain / "checkpoints"
    reference = _start(_fresh(ref), tmp_path / "ref.log")

    # (1) killed in the middle of writing the round-2 checkpoint
    log_a = tmp_path / "a.log"
    a = _start(_fresh(chain), log_a, pause="2:300")
    _wait_for(a, log_a, lambda: any(p.stat().st_size > 0 for p in ckpts.glob(".round-000002.safetensors.tmp-*")))
    _sigkill(a)
    assert sorted(p.name for p in ckpts.glob("round-*")) == ["round-000001.safetensors"]
    assert len((chain / "metrics.jsonl").read_text().splitlines()) == 2  # round 2 logged, not checkpointed

    # (2) resumed from round 1, killed at a random moment after the round-2 checkpoint
    log_b = tmp_path / "b.log"
    b = _start(["--resume", str(chain)], log_b)
    _wait_for(b, log_b, lambda: (ckpts / "round-000002.safetensors").exists())
    time.sleep(random.Random(7).uniform(0.0, 2.0))
    _sigkill(b)
    assert "Resuming" in log_b.read_text() and "after round 1 of 3" in log_b.read_text()

    # (3) resumed to the end
    log_c = tmp_path / "c.log"
    c = _start(["--resume", str(chain)], log_c)
    _finish(c, log_c)
    _finish(reference, tmp_path / "ref.log")

    want = load_file(ref / "adapter" / "adapter_model.safetensors")
    got = load_file(chain / "adapter" / "adapter_model.safetensors")
    assert sorted(want) == sorted(got)
    assert all(torch.equal(want[k], got[k]) for k in want), "adapters differ"
    ref_summary, ref_records = _normalized(ref)
    chain_summary, chain_records = _normalized(chain)
    assert chain_records == ref_records
    assert chain_summary == ref_summary
    assert ref_summary["rounds_completed"] == 3
    assert not list(ckpts.glob(".*tmp*"))
