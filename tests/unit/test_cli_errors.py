"""Expected failures of `ecolora run`: one `error: <cause>; <fix>` line, exit code 2, no run directory.

Run in-process with typer's CliRunner on the smoke preset (tiny-llama); each case fails in setup,
before round 1, so a case takes a second or two.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ecolora.cli import app

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke.yaml")


def _run(out: Path, *overrides: str, extra: tuple[str, ...] = ()) -> tuple[int, str]:
    args = ["run", "--config", SMOKE, "--out", str(out), *extra]
    for item in overrides:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.stderr


def _assert_one_error_line(code: int, stderr: str, *needles: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2, stderr[-2000:]
    assert len(errors) == 1, stderr[-2000:]
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_bad_model_name(tmp_path: Path) -> None:
    code, err = _run(tmp_path / "run", "model.name=no-such-model")
    _assert_one_error_line(code, err, "cannot load model 'no-such-model'", "set model.name to")
    assert not (tmp_path / "run").exists()


def test_hub_model_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err = _run(tmp_path / "run", "model.name=no-such-org/no-such-model")
    _assert_one_error_line(code, err, "cannot load model", "HF_HUB_OFFLINE")
    assert not (tmp_path / "run").exists()


def test_hub_dataset_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    code, err = _run(tmp_path / "run", "data.source=no-such-org/no-such-dataset")
    _assert_one_error_line(code, err, "cannot read data 'no-such-org/no-such-dataset'", "pass a local")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "does not exist"),
        ("", "is empty"),
        ('{"instruction": "a", "output": \n', "Invalid JSON on line 1"),
        ('{"instruction": "a", "context": "b", "category": "c"}\n' * 40, "Missing field `response`"),
    ],
    ids=["missing", "empty", "malformed", "no-response-column"],
)
def test_bad_data_file(tmp_path: Path, content: str | None, needle: str) -> None:
    data = tmp_path / "data.jsonl"
    if content is not None:
        data.write_text(content, encoding="utf-8")
    code, err = _run(tmp_path / "run", f"data.source={data}")
    _assert_one_error_line(code, err, "cannot read data", needle, "set data.source to")
    assert not (tmp_path / "run").exists()


def test_bad_target_modules(tmp_path: Path) -> None:
    code, err = _run(tmp_path / "run", "lora.target_modules=[qq_proj]")
    _assert_one_error_line(code, err, "qq_proj", "q_proj", "set lora.target_modules")
    assert not (tmp_path / "run").exists()


def test_out_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    code, err = _run(tmp_path / "afile" / "run")
    _assert_one_error_line(code, err, "is not writable", "pass --out")


def test_unwritable_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_access = os.access  # root may write anywhere: deny tmp_path by hand
    monkeypatch.setattr(os, "access", lambda p, mode: not str(p).startswith(str(tmp_path)) and real_access(p, mode))
    code, err = _run(tmp_path / "run")
    _assert_one_error_line(code, err, "is not writable")


def test_missing_optional_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_extra(*args: object, **kwargs: object) -> None:
        raise ModuleNotFoundError("No module named 'tensorboard'", name="tensorboard")

    monkeypatch.setattr("ecolora.report.progress.run_experiment", no_extra)
    code, err = _run(tmp_path / "run")
    _assert_one_error_line(code, err, "`tensorboard` is not installed", "pip install 'ecolora[tensorboard]'")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["run", "--config", SMOKE, "--out", str(tmp_path / "run"), "--debug", "--set", "model.name=nope"]
    )
    assert result.exit_code != 0
    assert "SetupError" in type(result.exception).__name__


def test_non_empty_out_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    _write_jsonl(out / "metrics.jsonl", [{"round": 1}, {"round": 2}])
    code, err = _run(out)
    _assert_one_error_line(code, err, "is not empty", "--resume", "--overwrite")
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_overwrite_moves_the_old_run_aside(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"round": 1}\n')
    code, err = _run(out, "model.name=no-such-model", extra=("--overwrite",))
    assert code == 2
    (moved,) = tmp_path.glob("run.old-*")
    assert (moved / "metrics.jsonl").read_text() == '{"round": 1}\n'
    assert not out.exists()  # the failed setup left nothing behind


def test_bare_ecolora_prints_help() -> None:
    result = CliRunner().invoke(app, [])
    assert "Usage" in result.output and "run" in result.output


def test_verbose_has_help_text() -> None:
    result = CliRunner().invoke(app, ["run", "--help"])
    assert "Debug-level log lines" in " ".join(result.output.split())


def test_smoke_preset_runs_ecolora() -> None:
    from ecolora.config import load_config

    assert load_config(SMOKE).method == "fedit+ecolora"


def test_resume_shows_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ecolora.config import load_config
    from ecolora.sim.runner import start_run_dir

    start_run_dir(load_config(SMOKE), tmp_path)
    calls: list[dict[str, object]] = []

    def fake_run(config: object, out_dir: Path, progress: object = None, resume: bool = False) -> dict[str, object]:
        calls.append({"progress": progress, "resume": resume})
        return {"method": "fedit+ecolora", "final_eval_loss": 1.0, "upload_bytes": 1, "download_bytes": 1, "wall_s": 0.0}

    monkeypatch.setattr("ecolora.report.progress.run_experiment", fake_run)
    result = CliRunner().invoke(app, ["run", "--resume", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert calls and calls[0]["resume"] is True and callable(calls[0]["progress"])
