"""``ecolora compare --seeds``: runs that differ only by seed become one row with mean ± sd."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from ecolora.config import load_config
from ecolora.report.seeds import (
    format_seed_table,
    group_seed_runs,
    plot_seed_curves,
    summarize_seeds,
)


def _write_run(root: Path, name: str, overrides: list[str], evals: list[float | None], up: int) -> Path:
    run = root / name
    run.mkdir()
    config = load_config(None, overrides)
    (run / "config.yaml").write_text(yaml.safe_dump(config.to_dict()), encoding="utf-8")
    rows = []
    for i, e in enumerate(evals, start=1):
        per_client = [{"client": c, "upload_bytes": up // 2, "download_bytes": up // 2, "compute_s": 1.0} for c in (0, 1)]
        rows.append({"round": i, "clients": [0, 1], "train_loss": 1.0, "eval_loss": e, "upload_bytes": up,
                     "download_bytes": up, "upload_params": up // 2, "download_params": up // 2,
                     "per_client": per_client})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    summary = {"method": config.method, "rounds_completed": len(rows), "initial_eval_loss": 2.0,
               "final_eval_loss": [e for e in evals if e is not None][-1],
               "upload_bytes": up * len(rows), "download_bytes": up * len(rows),
               "upload_params": 0, "download_params": 0}
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return run


def test_runs_are_grouped_by_config_ignoring_seed_and_threads(tmp_path):
    a0 = _write_run(tmp_path, "a0", ["method=fedit", "seed=0"], [1.5, 1.2], 1000)
    a1 = _write_run(tmp_path, "a1", ["method=fedit", "seed=1", "train.num_threads=1"], [1.5, 1.4], 1000)
    b0 = _write_run(tmp_path, "b0", ["method=fedit+ecolora", "seed=0"], [1.6, 1.3], 100)
    c0 = _write_run(tmp_path, "c0", ["method=fedit+ecolora", "seed=0", "ecolora.num_segments=2"], [1.6, 1.3], 100)
    groups = group_seed_runs([a0, b0, a1, c0])
    assert [g.seeds for g in groups] == [[0, 1], [0], [0]]
    assert groups[0].label == "fedit"
    assert groups[1].label == "fedit+ecolora (ecolora.num_segments=5)"
    assert groups[2].label == "fedit+ecolora (ecolora.num_segments=2)"


def test_mean_sd_and_time_to_the_baselines_mean_final_loss(tmp_path):
    runs = [_write_run(tmp_path, f"f{s}", ["method=fedit", f"seed={s}"], [1.5, loss], 1_000_000)
            for s, loss in enumerate([1.2, 1.3, 1.4])]
    eco = [_write_run(tmp_path, f"e{s}", ["method=fedit+ecolora", f"seed={s}"], [loss, 1.35], 100_000)
           for s, loss in enumerate([1.25, 1.5])]
    rows = summarize_seeds([*runs, *eco], scenario="1/5")
    assert rows[0]["final_eval_loss"] == pytest.approx(1.3)
    assert rows[0]["final_eval_loss_sd"] == pytest.approx(statistics.stdev([1.2, 1.3, 1.4]))
    assert rows[0]["target_eval_loss"] == pytest.approx(1.3)
    # fedit reaches 1.3 at round 2 in two of three seeds; ecolora seed 0 at round 1, seed 1 never.
    assert rows[0]["target_reached"] == "2/3" and rows[1]["target_reached"] == "1/2"
    assert rows[1]["target_s"] < rows[0]["target_s"]
    assert rows[1]["upload_mb"] == pytest.approx(0.2)
    table = format_seed_table(rows)
    assert "1.3000 ± 0.1000" in table and "| fedit+ecolora | 0,1 |" in table
    with pytest.raises(ValueError, match="is neither a group nor one of its runs"):
        summarize_seeds(runs, baseline="ffa")
    # the baseline named by one of its runs (the second group), or an explicit target
    by_run = summarize_seeds([*runs, *eco], scenario="1/5", baseline=eco[1])
    assert by_run[0]["target_eval_loss"] == pytest.approx(1.35) and by_run[0]["target_reached"] == "2/3"  # seed 2 ends at 1.4
    assert summarize_seeds([*runs, *eco], baseline="fedit+ecolora")[0]["target_eval_loss"] == pytest.approx(1.35)
    explicit = summarize_seeds([*runs, *eco], target_eval_loss=1.25)
    assert [r["target_reached"] for r in explicit] == ["1/3", "1/2"]
    png = plot_seed_curves([*runs, *eco], tmp_path / "plots" / "seeds.png")
    assert png.stat().st_size > 1000
    assert plot_seed_curves([*runs, *eco], tmp_path / "t.png", scenario="1/5").stat().st_size > 1000


def test_a_run_without_config_is_refused(tmp_path):
    run = _write_run(tmp_path, "r", ["method=fedit"], [1.0], 10)
    (run / "config.yaml").unlink()
    with pytest.raises(ValueError, match="has no config.yaml"):
        group_seed_runs([run])


def test_cli_compare_seeds_prints_the_table_and_plots(tmp_path):
    from typer.testing import CliRunner

    from ecolora.cli import app

    runs = [_write_run(tmp_path, f"f{s}", ["method=fedit", f"seed={s}"], [1.5, 1.2 + s / 10], 1000) for s in (0, 1)]
    result = CliRunner().invoke(app, ["compare", "--seeds", *map(str, runs), "--plot", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    assert "| fedit | 0,1 | 1.2500 ± 0.0707 |" in result.output
    assert (tmp_path / "s.png").is_file() and (tmp_path / "s_time.png").is_file()
    eco = _write_run(tmp_path, "e0", ["method=fedit+ecolora", "seed=0"], [1.5, 1.3], 100)
    result = CliRunner().invoke(app, ["compare", "--seeds", str(eco), *map(str, runs), "--baseline", str(runs[1])])
    assert result.exit_code == 0 and "to an eval loss of 1.2500" in result.output, result.output
