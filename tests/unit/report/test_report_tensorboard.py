"""log.tensorboard: TensorBoard scalars next to metrics.jsonl; a clear error without the extra."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ecolora.cli import app
from ecolora.config import load_config
from ecolora.report.tensorboard import TENSORBOARD_DIR, round_scalars
from ecolora.sim import run_experiment

ROOT = Path(__file__).resolve().parents[3]
SMALL = ["fed.rounds=2", "data.limit=60", "data.eval_size=8", "data.max_seq_len=48", "train.local_steps=1",
         "log.tensorboard=true"]


def test_round_scalars_tags() -> None:
    record = {"round": 3, "clients": [1, 2], "train_loss": 2.5, "eval_loss": None, "upload_bytes": 100,
              "download_bytes": 50, "compute_s": 1.5, "per_client": [{"client": 1}], "next_density_a": 0.8,
              "net": {"1/5": {"round_s": 2.0}}, "eval_suites": {"mc": {"acc": 0.5, "n": 4}}, "no_update": False}
    assert dict(round_scalars(record)) == {
        "loss/train": 2.5, "bytes/upload": 100.0, "bytes/download": 50.0, "time/compute_s": 1.5,
        "method/next_density_a": 0.8, "net/1_5/round_s": 2.0, "eval/mc/acc": 0.5, "eval/mc/n": 4.0}


def test_run_writes_tensorboard_scalars(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = load_config(ROOT / "configs" / "smoke.yaml", SMALL)
    run_experiment(config, tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / TENSORBOARD_DIR))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/train", "loss/eval", "bytes/upload", "bytes/download", "bytes/cumulative_upload",
            "time/compute_s", "time/wall_s"} <= tags
    assert any(tag.startswith("method/") for tag in tags), tags  # EcoLoRA's densities
    assert [e.step for e in events.Scalars("loss/train")] == [1, 2]
    assert (tmp_path / "run" / "metrics.jsonl").is_file()


def test_missing_tensorboard_is_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    args = ["run", "--config", str(ROOT / "configs" / "smoke.yaml"), "--out", str(tmp_path / "run")]
    for item in SMALL:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "error: log.tensorboard needs the optional package tensorboard; pip install 'ecolora[tensorboard]'" in result.stderr
    assert not (tmp_path / "run").exists()


class _FakeRun:
    def __init__(self, **kwargs: object) -> None:
        self.init, self.logged, self.finished = kwargs, [], False

    def log(self, scalars: dict, step: int) -> None:
        self.logged.append((step, scalars))

    def finish(self) -> None:
        self.finished = True


def test_wandb_gets_the_same_scalars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    runs: list[_FakeRun] = []
    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: runs.append(_FakeRun(**kwargs)) or runs[-1]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    config = load_config(ROOT / "configs" / "smoke.yaml", [*SMALL[:-1], "log.wandb=true"])
    run_experiment(config, tmp_path / "run")
    (run,) = runs
    assert run.init["mode"] == "offline" and run.init["dir"] == str(tmp_path / "run")
    assert [step for step, _ in run.logged] == [1, 2] and run.finished
    assert {"loss/train", "bytes/upload", "time/wall_s"} <= set(run.logged[0][1])


def test_missing_wandb_is_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)
    args = ["run", "--config", str(ROOT / "configs" / "smoke.yaml"), "--out", str(tmp_path / "run"),
            "--set", "log.wandb=true"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "error: log.wandb needs the optional package wandb; pip install 'ecolora[wandb]'" in result.stderr
    assert not (tmp_path / "run").exists()
