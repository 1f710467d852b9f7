"""Ctrl-C (SIGINT) stops a run after the round, with a checkpoint, a resume hint and exit 130."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = ["fed.rounds=4", "train.num_threads=1", "train.local_steps=1", "data.limit=120",
             "data.eval_size=16", "data.max_seq_len=64"]


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ecolora", "run", *args]


def test_sigint_stops_after_the_round_and_resume_finishes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["--config", str(ROOT / "configs" / "smoke.yaml"), "--out", str(out)]
    for item in OVERRIDES:
        args += ["--set", item]
    proc = subprocess.Popen(_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and metrics.read_text().strip()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-3000:]
    done = len(metrics.read_text().splitlines())
    assert 1 <= done < 4
    assert f"stopped after round {done}; resume with: ecolora run --resume {out}" in " ".join(stderr.split())
    assert (out / "checkpoints" / f"round-{done:06d}.safetensors").is_file()
    assert not (out / "summary.json").exists()

    resumed = subprocess.run(_cmd("--resume", str(out)), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds_completed"] == 4
