"""`ecolora bench codec --quick --values N`: a size option, a progress hook and a column legend."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ecolora.bench.codec import lora_shape_for, run_codec_bench
from ecolora.cli import app


def test_lora_shape_for_values() -> None:
    assert lora_shape_for(8_388_608) == (32, 4096)
    assert lora_shape_for(1_000_000) == (4, 4096)
    assert lora_shape_for(16_384) == (1, 256)
    with pytest.raises(ValueError, match="--values must be >= 1"):
        lora_shape_for(0)


def test_progress_is_reported_per_cell() -> None:
    calls: list[tuple[int, int]] = []
    run_codec_bench((0.1, 0.5), ("gaussian",), repeats=1, num_layers=1, hidden=64, zstd_levels=(3,),
                    progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]


def test_cli_quick_prints_table_and_legend() -> None:
    result = CliRunner().invoke(app, ["bench", "codec", "--quick", "--values", "16384"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert sum(line.strip().startswith("gaussian") for line in lines) == 2  # densities 0.1 and 0.5
    assert "Columns:" in result.stdout and "entropy bound on positions" in result.stdout
