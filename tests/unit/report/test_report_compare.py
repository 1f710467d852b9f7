"""``ecolora compare``: ratios, rounds to a target, labels of runs that share a method, timings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ecolora.config import load_config
from ecolora.report.compare import compare_runs, format_markdown
from ecolora.report.plots import plot_quality_vs_bytes
from ecolora.report.runs import run_labels


def _write_run(root: Path, name: str, method: str, up: list[int], down: list[int], evals: list[float | None],
               overrides: tuple[str, ...] = (), net: dict | None = None) -> Path:
    """A run directory as the runners write it: config.yaml, metrics.jsonl, summary.json."""
    run = root / name
    run.mkdir()
    config = load_config(None, [f"method={method}", *overrides])
    (run / "config.yaml").write_text(yaml.safe_dump(config.to_dict()), encoding="utf-8")
    rows = []
    for i, (u, d, e) in enumerate(zip(up, down, evals, strict=True), start=1):
        per_client = [{"client": c, "upload_bytes": u // 2, "download_bytes": d // 2, "compute_s": 1.0} for c in (0, 1)]
        row = {"round": i, "clients": [0, 1], "train_loss": 1.0, "eval_loss": e, "upload_bytes": u,
               "download_bytes": d, "upload_params": u // 2, "download_params": d // 2, "per_client": per_client}
        if net is not None:
            row["net"] = {"1/5": net}
        rows.append(row)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    summary = {"method": method, "rounds_completed": len(rows), "initial_eval_loss": 2.0,
               "final_eval_loss": [e for e in evals if e is not None][-1],
               "upload_bytes": sum(up), "download_bytes": sum(down),
               "upload_params": sum(u // 2 for u in up), "download_params": sum(d // 2 for d in down)}
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return run


def test_ratios_and_rounds_to_target_against_the_baseline(tmp_path):
    base = _write_run(tmp_path, "a", "fedit", [1000, 1000], [1000, 1000], [1.5, 1.2])
    eco = _write_run(tmp_path, "b", "fedit+ecolora", [100, 200], [300, 400], [1.6, 1.25])
    rows = compare_runs([base, eco], target_eval_loss=1.3)
    assert rows[1]["upload_mb"] == pytest.approx(300e-6)
    assert rows[1]["upload_mb_vs_base"] == pytest.approx(300 / 2000)
    assert rows[1]["total_mb_vs_base"] == pytest.approx(1000 / 4000)
    assert rows[1]["upload_params_m"] == pytest.approx(150e-6)
    assert (rows[0]["target_round"], rows[1]["target_round"]) == (2, 2)
    assert rows[1]["target_total_mb"] == pytest.approx(1000e-6)
    # Another baseline flips the ratios; one that is not compared is refused.
    again = compare_runs([base, eco], baseline=eco)
    assert again[0]["upload_mb_vs_base"] == pytest.approx(2000 / 300)
    with pytest.raises(ValueError, match="not among the compared runs"):
        compare_runs([base], baseline=eco)
    never = compare_runs([eco], target_eval_loss=1.0)
    assert never[0]["target_round"] is None and "| - |" in format_markdown(never)


def test_runs_sharing_a_method_are_labelled_by_the_settings_that_differ(tmp_path):
    runs = [
        _write_run(tmp_path, "full", "fedit+ecolora", [1], [1], [1.0]),
        _write_run(tmp_path, "noseg", "fedit+ecolora", [1], [1], [1.0], ("ecolora.segments=false",)),
        _write_run(tmp_path, "fixed", "fedit+ecolora", [1], [1], [1.0],
                   ("ecolora.sparsification=fixed", "ecolora.fixed_density=0.8", "train.num_threads=1")),
        _write_run(tmp_path, "fedit", "fedit", [1], [1], [1.0]),
    ]
    assert run_labels(runs) == [
        "fedit+ecolora",
        "fedit+ecolora (ecolora.segments=False)",
        "fedit+ecolora (ecolora.fixed_density=0.8, ecolora.sparsification=fixed)",
        "fedit",
    ]
    twin = _write_run(tmp_path, "twin", "fedit", [1], [1], [1.0])
    assert run_labels([runs[3], twin]) == ["fedit [fedit]", "fedit [twin]"]
    table = format_markdown(compare_runs(runs))
    assert "| fedit+ecolora (ecolora.segments=False) |" in table
    png = plot_quality_vs_bytes(runs, tmp_path / "plot.png")
    assert png.stat().st_size > 1000


def test_a_run_that_timed_its_own_rounds_keeps_its_times(tmp_path):
    own = {"round_s": 50.0, "comm_s": 20.0, "download_s": 5.0, "compute_s": 30.0, "upload_s": 15.0}
    async_run = _write_run(tmp_path, "fb", "fedbuff", [1000, 1000], [10, 10], [1.5, 1.2], net=own)
    row = compare_runs([async_run], scenario="1/5")[0]
    assert (row["comm_s"], row["train_s"], row["upload_s"]) == (40.0, 100.0, 30.0)
    with pytest.raises(ValueError, match="times its rounds itself"):
        compare_runs([async_run], scenario="0.2/1")
    # A synchronous run without stored timings is timed from its bytes (slowest client per round).
    sync = _write_run(tmp_path, "sync", "fedit", [1_000_000, 1_000_000], [10, 10], [1.5, 1.2])
    slow, fast = compare_runs([sync], scenario="0.2/1")[0], compare_runs([sync], scenario="5/25")[0]
    assert slow["upload_s"] > 10 * fast["upload_s"] > 0


def test_a_directory_without_a_summary_is_refused(tmp_path):
    run = _write_run(tmp_path, "r", "fedit", [1], [1], [1.0])
    (run / "summary.json").unlink()
    with pytest.raises(ValueError, match="no summary.json"):
        compare_runs([run])
