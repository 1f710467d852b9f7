"""`ecolora bench train`: exclusive phase timing and a tiny end-to-end report; the run summary's note."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecolora.bench import train as bench
from ecolora.bench.train import PhaseTimer, format_report, run_train_bench
from ecolora.client.shapes import SHAPE_NOTE
from ecolora.config import load_config
from ecolora.sim import run_experiment

ROOT = Path(__file__).parents[3]
TINY = [
    "model.name=smollm2-135m-shape", "model.num_layers=1", "train.device=cpu",
    f"data.source={ROOT / 'configs/data/gpu_check.jsonl'}", "data.eval_size=4", "data.max_seq_len=64",
    "fed.num_clients=2", "fed.clients_per_round=2", "ecolora.num_segments=2", "train.local_steps=1",
    "train.batch_size=2", "fed.rounds=1", "fed.checkpoint_every=0",
]  # fmt: skip


def test_phase_timer_is_exclusive(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 1.0, 3.0, 10.0])  # outer starts, inner starts, inner ends, outer ends
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    timer = PhaseTimer()
    with timer.phase("client_other"), timer.phase("train"):
        pass
    assert timer.seconds["train"] == 2.0 and timer.seconds["client_other"] == 8.0


def test_phase_timer_wraps_and_restores() -> None:
    class Thing:
        def work(self, x: int) -> int:
            return x + 1

    thing, timer = Thing(), PhaseTimer()
    undo = timer.wrap(thing, "work", "pack")
    assert thing.work(1) == 2 and timer.seconds["pack"] > 0
    undo()
    assert "work" not in vars(thing)


def test_bench_train_reports_a_round() -> None:
    config = load_config(ROOT / "configs/bench_train.yaml", TINY)
    report = run_train_bench(config, rounds=1, warmup_rounds=0)
    assert report["note"] == SHAPE_NOTE and report["placement"] == "cpu float32"
    assert report["tokens_per_s"] > 0 and report["up_bytes_per_round"] > 0
    phases = report["phases_s"]
    assert phases["train"] > 0 and phases["pack"] > 0 and phases["eval"] > 0
    assert sum(phases.values()) == pytest.approx(report["round_s"], rel=0.05)
    assert 0 < report["overhead_share"] < report["non_train_share"] < 1
    assert "runner overhead" in format_report(report)


def test_run_summary_says_shape_model(tmp_path: Path) -> None:
    config = load_config(ROOT / "configs/bench_train.yaml", [*TINY, "method=fedit"])
    summary = run_experiment(config, tmp_path / "run")
    assert summary["model_note"] == SHAPE_NOTE and summary["placement"] == "cpu float32"
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["model_note"] == SHAPE_NOTE
