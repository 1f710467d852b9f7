"""Figure-3-style stacked bars."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecolora.network import plot_time_breakdown

RESULTS = {
    "FedIT": {k: {"compute_s": 3600.0, "comm_s": c} for k, c in
              [("0.2/1", 40000.0), ("1/5", 8000.0), ("2/10", 4000.0), ("5/25", 1600.0)]},
    "EcoLoRA": {k: {"compute_s": 3700.0, "comm_s": c} for k, c in
                [("0.2/1", 8000.0), ("1/5", 1700.0), ("2/10", 900.0), ("5/25", 400.0)]},
}


def test_plot_writes_png(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "fig3.png"
    plot_time_breakdown(RESULTS, path, title="time breakdown")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_plot_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"results\['FedIT'\]\['1/5'\] lacks \['comm_s'\]"):
        plot_time_breakdown({"FedIT": {"1/5": {"compute_s": 1.0}}}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="unit must be one of s, min, h; got 'd'"):
        plot_time_breakdown(RESULTS, tmp_path / "x.png", unit="d")
    with pytest.raises(ValueError, match="results must hold at least one run"):
        plot_time_breakdown({}, tmp_path / "x.png")
