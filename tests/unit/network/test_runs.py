"""Whole-run timing from a run directory: simulate_run, annotate_metrics, time_to_target."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from ecolora.network import (
    SCENARIOS,
    LogNormalProfiles,
    annotate_metrics,
    read_metrics,
    round_timing,
    simulate_run,
    time_to_target,
)
from ecolora.network.runs import normalize_scenarios


def _row(rnd: int, clients: list[int], up: int, down: int, compute: float, **extra) -> dict:
    per_client = [
        {"client": c, "upload_bytes": up * (1 + i), "download_bytes": down,
         "compute_s": compute + i}
        for i, c in enumerate(clients)
    ]
    return {
        "round": rnd, "clients": clients,
        "upload_bytes": sum(p["upload_bytes"] for p in per_client),
        "download_bytes": down * len(clients),
        "compute_s": sum(p["compute_s"] for p in per_client),
        "per_client": per_client, "intra_group_bytes": 0, **extra,
    }


METRICS = [
    _row(1, [0, 1], 2_000_000, 4_000_000, 30.0, eval_loss=2.0),
    _row(2, [2, 3], 1_000_000, 4_000_000, 31.0),
    _row(3, [1, 2], 1_000_000, 4_000_000, 29.0, eval_loss=1.5),
    _row(4, [0, 3], 1_000_000, 4_000_000, 30.0, eval_loss=1.0),
]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in METRICS) + "\n")
    (tmp_path / "summary.json").write_text(json.dumps({"method": "fedit", "rounds_completed": 4}))
    return tmp_path


def test_simulate_run_sums_rounds(run_dir: Path) -> None:
    out = simulate_run(run_dir, ["1/5", SCENARIOS["0.2/1"]])
    assert (out["method"], out["backend"], out["rounds"]) == ("fedit", "analytic", 4)
    assert list(out["scenarios"]) == ["1/5", "0.2/1"]
    for key, res in out["scenarios"].items():
        expected = [round_timing(r["per_client"], SCENARIOS[key]) for r in METRICS]
        assert [r["round"] for r in res["rounds"]] == [1, 2, 3, 4]
        assert [r["round_s"] for r in res["rounds"]] == pytest.approx([t.round_s for t in expected])
        assert [r["comm_s"] for r in res["rounds"]] == pytest.approx([t.comm_s for t in expected])
        total = res["total"]
        assert total["rounds"] == 4
        assert total["round_s"] == pytest.approx(sum(t.round_s for t in expected))
        assert total["comm_s"] == pytest.approx(sum(t.comm_s for t in expected))
        assert total["compute_s"] + total["comm_s"] == pytest.approx(total["round_s"])
    slow, fast = out["scenarios"]["0.2/1"]["total"], out["scenarios"]["1/5"]["total"]
    assert slow["comm_s"] > 4 * fast["comm_s"]


def test_simulate_run_compute_scale(run_dir: Path) -> None:
    base = simulate_run(run_dir, ["5/25"])["scenarios"]["5/25"]["total"]
    fast = simulate_run(run_dir, ["5/25"], compute_scale=0.5)["scenarios"]["5/25"]["total"]
    assert fast["compute_s"] == pytest.approx(0.5 * base["compute_s"])
    assert fast["round_s"] < base["round_s"]


def test_annotate_metrics_adds_net_and_totals() -> None:
    before = copy.deepcopy(METRICS)
    rows, totals = annotate_metrics(METRICS, ["1/5", "2/10"])
    assert METRICS == before  # input untouched
    for row, src in zip(rows, METRICS, strict=True):
        assert set(row["net"]) == {"1/5", "2/10"}
        want = round_timing(src["per_client"], "1/5")
        assert row["net"]["1/5"]["round_s"] == pytest.approx(want.round_s)
        assert row["net"]["1/5"]["comm_s"] == pytest.approx(want.comm_s)
        assert row["intra_group_bytes"] == 0  # unknown keys pass through
    assert totals["2/10"]["round_s"] == pytest.approx(sum(r["net"]["2/10"]["round_s"] for r in rows))
    assert totals["1/5"]["comm_s"] > totals["2/10"]["comm_s"]
    again, _ = annotate_metrics(rows, ["5/25"])  # extends an existing "net"
    assert set(again[0]["net"]) == {"1/5", "2/10", "5/25"}


def test_time_to_target() -> None:
    rows, _ = annotate_metrics(METRICS, ["1/5"])
    cum = [sum(r["net"]["1/5"]["round_s"] for r in rows[: i + 1]) for i in range(4)]
    assert time_to_target(rows, "1/5", 2.0) == pytest.approx(cum[0])
    assert time_to_target(rows, "1/5", 1.6) == pytest.approx(cum[2])  # round 2 has no eval
    assert time_to_target(rows, SCENARIOS["1/5"], 1.0) == pytest.approx(cum[3])
    assert time_to_target(rows, "1/5", 0.5) is None
    with pytest.raises(ValueError, match=r"no network timing for scenario '2/10' \(have \['1/5'\]\)"):
        time_to_target(rows, "2/10", 1.0)


def test_heterogeneous_scenario_mapping(run_dir: Path) -> None:
    spec = {"lognormal-1/5": LogNormalProfiles(SCENARIOS["1/5"], sigma=0.8), "1/5": "1/5"}
    out = simulate_run(run_dir, spec, seed=1)
    het, homo = out["scenarios"]["lognormal-1/5"]["total"], out["scenarios"]["1/5"]["total"]
    assert het["round_s"] != pytest.approx(homo["round_s"])
    assert simulate_run(run_dir, spec, seed=1)["scenarios"]["lognormal-1/5"]["total"] == het


def test_scenario_errors() -> None:
    with pytest.raises(ValueError, match="scenario '1/5' given twice"):
        normalize_scenarios(["1/5", SCENARIOS["1/5"]])
    with pytest.raises(ValueError, match="scenarios must not be empty"):
        normalize_scenarios([])
    assert list(normalize_scenarios("2/10")) == ["2/10"]


def test_run_dir_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl in"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"round": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2: not valid JSON"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"round": 1, "clients": [0]}\n')
    with pytest.raises(ValueError, match="round 1: metrics row has no 'per_client' list"):
        simulate_run(tmp_path, ["1/5"])
