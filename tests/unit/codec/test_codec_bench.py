"""Smoke test of the codec benchmark on a tiny LoRA (the real run is documented in docs/codec.md)."""

from __future__ import annotations

import json

import pytest

from ecolora.bench.codec import format_table, main, make_lora, run_codec_bench


def test_make_lora_shapes_and_names():
    lora = make_lora("heavy_tail", num_layers=2, hidden=64, rank=4)
    assert len(lora) == 8
    a = lora["base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"]
    b = lora["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"]
    assert a.shape == (4, 64) and b.shape == (64, 4)
    with pytest.raises(ValueError, match="case must be one of gaussian, heavy_tail; got 'x'"):
        make_lora("x")


def test_run_codec_bench_small():
    rows = run_codec_bench(
        (0.1, 0.95), ("gaussian",), 1, num_layers=1, hidden=512, zstd_levels=(3,)
    )
    assert [r["density"] for r in rows] == [0.1, 0.95]
    for r in rows:
        assert r["numel"] == 4 * 16 * 512
        assert r["nnz"] == round(r["density"] * 16 * 512) * 4
        assert r["bytes"] < r["bytes_raw_values"] < r["bytes_coo"]
        assert r["bytes"] < r["zstd3_bytes"] and r["bytes"] < r["zlib_bytes"]
        assert r["position_bits_per_nnz"] >= r["entropy_bits_per_nnz"]
    assert rows[0]["position_overhead_pct"] < 3.0
    table = format_table(rows)
    assert "zstd-3 B" in table and "zstd-19" not in table
    assert len(table.splitlines()) == 4


def test_main_json(capsys):
    main(["--json", "--densities", "0.3", "--cases", "gaussian", "--repeats", "1",
          "--num-layers", "1", "--zstd-levels"])  # fmt: skip
    (row,) = json.loads(capsys.readouterr().out)
    assert row["density"] == 0.3 and "zstd19_bytes" not in row


def test_golomb_choice_rows_small():
    from ecolora.bench.codec import format_golomb_table, golomb_choice_rows

    rows = golomb_choice_rows((0.05, 0.2), num_layers=1)
    assert [(r["rice_m"], r["optimal_m"]) for r in rows] == [(16, 14), (4, 3)]
    for r in rows:
        assert r["optimal_bits_per_nnz"] < r["rice_bits_per_nnz"]
        assert r["bound_bits_per_nnz"] < r["optimal_bits_per_nnz"] < 1.01 * r["bound_bits_per_nnz"]
    assert len(format_golomb_table(rows).splitlines()) == 3
