"""Run plots: rounds on the x axis get whole-number ticks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from ecolora.report import plots


def test_round_axes_have_integer_ticks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"round": r, "train_loss": 2.0 - r / 10, "eval_loss": 2.1 - r / 10, "upload_bytes": 1000,
             "download_bytes": 2000} for r in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "summary.json").write_text(json.dumps({"method": "fedit", "initial_eval_loss": 2.2}))
    figures: list[Figure] = []
    real_close = plots.plt.close
    monkeypatch.setattr(plots.plt, "close", lambda fig: (figures.append(fig), real_close(fig)))
    plots.plot_run(tmp_path)
    assert len(figures) == 2
    for fig in figures:
        ticks = fig.axes[0].get_xticks()
        assert len(ticks) >= 3 and all(float(t).is_integer() for t in ticks), ticks


def test_resumed_progress_starts_at_the_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from ecolora.config import load_config
    from ecolora.report import progress

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "round-000002.safetensors").write_bytes(b"")
    (tmp_path / "metrics.jsonl").write_text("")
    monkeypatch.setattr(progress, "run_experiment", lambda *a, **k: {"resume": k["resume"]})
    out = io.StringIO()
    summary = progress.run_with_progress(load_config(None, ["fed.rounds=3"]), tmp_path,
                                         Console(file=out, force_terminal=True, width=100), resume=True)
    assert summary == {"resume": True}
    assert "2/3" in out.getvalue()
