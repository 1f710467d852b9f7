"""``ecolora bench codec``: sizes and speed of the wire format on a Llama2-7B-shaped LoRA.

The LoRA has rank 16 on ``q_proj`` and ``v_proj`` of 32 layers with hidden size 4096: 128
tensors, 8,388,608 values. ``A`` entries are Kaiming-uniform (peft's init, bound ``1/sqrt(4096)``),
``B`` entries small Gaussians (std 1e-3). The ``heavy_tail`` case replaces the Gaussians by
Student-t with 3 degrees of freedom (same scale) and adds t3 noise (scale bound/10) to ``A``.
Each tensor is sparsified to the density with :func:`ecolora.compress.sparsify_topk`.

Per (case, density) the benchmark reports pack and unpack time (best of ``repeats``, wall and
CPU), throughput in MB/s of fp32 input, payload bytes, the bits per non-zero spent on positions
against the entropy bound ``log2 C(n, nnz) / nnz``, and the same sparse fp16 tensors (dense
layout, zeros included) compressed with zstd (levels 3 and 19) and zlib (level 6).

Run ``python -m ecolora.bench.codec`` (``--json`` for machines); pin it to one core with
``taskset -c 0`` to measure single-core speed.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ecolora.codec import (
    describe,
    expected_golomb_bits,
    optimal_golomb_parameter,
    pack,
    position_entropy_bits,
    rice_parameter,
    unpack,
)
from ecolora.codec.golomb import golomb_num_bytes
from ecolora.compress import sparsify_topk, topk_mask

__all__ = [
    "CASES",
    "DENSITIES",
    "QUICK",
    "format_legend",
    "lora_shape_for",
    "format_golomb_table",
    "format_table",
    "golomb_choice_rows",
    "make_lora",
    "run_codec_bench",
]

DENSITIES = (0.05, 0.1, 0.3, 0.5, 0.6, 0.95)
CASES = ("gaussian", "heavy_tail")
# --quick: seconds instead of minutes (one case, two densities, one repeat, zstd level 3 only).
QUICK: dict[str, Any] = {"densities": (0.1, 0.5), "cases": ("gaussian",), "repeats": 1, "zstd_levels": (3,)}
_MB = 1e6
_RANK = 16


def lora_shape_for(num_values: int, hidden: int = 4096) -> tuple[int, int]:
    """``(num_layers, hidden)`` of a q/v rank-16 LoRA with about ``num_values`` values.

    Layers of the 7B shape (262,144 values each) while at least one fits, else one layer with a
    smaller hidden size (at least 64).
    """
    if num_values < 1:
        raise ValueError(f"--values must be >= 1, got {num_values}.")
    per_layer = 2 * 2 * _RANK * hidden  # q and v, A (r, d) and B (d, r)
    if num_values >= per_layer:
        return round(num_values / per_layer), hidden
    return 1, max(64, num_values // (4 * _RANK))


def _student_t3(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    z = torch.randn(shape, generator=gen)
    chi2 = torch.randn((3, *shape), generator=gen).square().sum(0)
    return z / torch.sqrt(chi2 / 3)


def make_lora(
    case: str, *, num_layers: int = 32, rank: int = 16, hidden: int = 4096, seed: int = 0
) -> dict[str, torch.Tensor]:
    """peft-named fp32 LoRA tensors, A: (rank, hidden), B: (hidden, rank), q and v per layer."""
    if case not in CASES:
        raise ValueError(f"case must be one of {', '.join(CASES)}; got {case!r}")
    gen = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(hidden)  # kaiming_uniform_(a=sqrt(5)) on fan_in = hidden
    out: dict[str, torch.Tensor] = {}
    for layer in range(num_layers):
        for proj in ("q", "v"):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{proj}_proj"
            a = (torch.rand(rank, hidden, generator=gen) * 2 - 1) * bound  # (r, d_in)
            if case == "gaussian":
                b = torch.randn(hidden, rank, generator=gen) * 1e-3  # (d_out, r)
            else:
                a = a + _student_t3((rank, hidden), gen) * (bound / 10)
                b = _student_t3((hidden, rank), gen) * 1e-3
            out[f"{prefix}.lora_A.weight"] = a
            out[f"{prefix}.lora_B.weight"] = b
    return out


def _best_time(fn: Any, repeats: int) -> tuple[float, float, Any]:
    """(best wall seconds, best CPU seconds, last result) over ``repeats`` calls."""
    wall, cpu, result = math.inf, math.inf, None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu, result


def _baselines(sparse: dict[str, torch.Tensor], zstd_levels: Sequence[int]) -> dict[str, int]:
    raw = b"".join(t.half().numpy().tobytes() for t in sparse.values())
    sizes = {"zlib_bytes": len(zlib.compress(raw, 6))}
    if zstd_levels:
        import zstandard

        for level in zstd_levels:
            sizes[f"zstd{level}_bytes"] = len(zstandard.ZstdCompressor(level=level).compress(raw))
    return sizes


def _one(
    case: str,
    density: float,
    lora: dict[str, torch.Tensor],
    repeats: int,
    zstd_levels: Sequence[int],
) -> dict[str, Any]:
    sparse = {name: sparsify_topk(t, density) for name, t in lora.items()}
    numel = sum(t.numel() for t in sparse.values())
    pack_s, pack_cpu, payload = _best_time(lambda: pack(sparse), repeats)
    unpack_s, unpack_cpu, decoded = _best_time(lambda: unpack(payload), repeats)
    for name, t in sparse.items():  # the benchmark is also a correctness check
        if not torch.equal(decoded[name], t.half().float()):
            raise AssertionError(f"round trip changed {name}")
    rows = describe(payload)
    nnz = sum(r["nnz"] for r in rows)
    position_bits = 8 * sum(r["position_num_bytes"] for r in rows)
    entropy = sum(position_entropy_bits(math.prod(r["shape"]), r["nnz"]) for r in rows)
    value_bits = 8 * sum(r["num_bytes"] - r["position_num_bytes"] for r in rows)
    raw_values = pack(sparse, value_coding="raw")
    encodings = Counter(
        f"{r['encoding']}" + (f"/{r['coded']}/M={r['coder_param']}" if r["coded"] else "")
        + f"+{r['value_coding']}"
        for r in rows
    )  # fmt: skip
    fp32_mb = 4 * numel / _MB
    row: dict[str, Any] = {
        "case": case,
        "density": density,
        "num_tensors": len(rows),
        "numel": numel,
        "nnz": nnz,
        "bytes": len(payload),
        "bytes_raw_values": len(raw_values),
        "bytes_coo": len(pack(sparse, encoding="coo")),
        "bytes_dense_fp16": len(pack(sparse, encoding="dense")),
        "pack_s": pack_s,
        "unpack_s": unpack_s,
        "pack_cpu_s": pack_cpu,
        "unpack_cpu_s": unpack_cpu,
        "pack_mb_per_s": fp32_mb / pack_s,
        "unpack_mb_per_s": fp32_mb / unpack_s,
        "position_bits_per_nnz": position_bits / nnz if nnz else 0.0,
        "entropy_bits_per_nnz": entropy / nnz if nnz else 0.0,
        "value_bits_per_nnz": value_bits / nnz if nnz else 0.0,
        "encodings": dict(encodings),
    }
    row["position_overhead_pct"] = 100.0 * (position_bits / entropy - 1.0) if entropy else 0.0
    row.update(_baselines(sparse, zstd_levels))
    return row


def run_codec_bench(
    densities: Sequence[float] = DENSITIES,
    cases: Sequence[str] = CASES,
    repeats: int = 3,
    seed: int = 0,
    *,
    num_layers: int = 32,
    hidden: int = 4096,
    zstd_levels: Sequence[int] = (3, 19),
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """One result dict per (case, density); see the module docstring for the fields.

    Uses one torch thread; the caller pins the process to a core for single-core numbers.
    ``num_layers``/``hidden`` shrink the model (:func:`lora_shape_for`); ``progress(done, total)``
    is called after each (case, density).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    torch.set_num_threads(1)
    results: list[dict[str, Any]] = []
    for case in cases:
        lora = make_lora(case, num_layers=num_layers, hidden=hidden, seed=seed)
        for density in densities:
            results.append(_one(case, float(density), lora, repeats, zstd_levels))
            if progress is not None:
                progress(len(results), len(cases) * len(densities))
    return results


_COLUMNS = (
    ("case", "case", "{}"),
    ("density", "k", "{:.2f}"),
    ("bytes", "ours B", "{:,}"),
    ("bytes_raw_values", "fp16 vals B", "{:,}"),
    ("bytes_coo", "coo B", "{:,}"),
    ("zstd3_bytes", "zstd-3 B", "{:,}"),
    ("zstd19_bytes", "zstd-19 B", "{:,}"),
    ("zlib_bytes", "zlib B", "{:,}"),
    ("position_bits_per_nnz", "pos b/nz", "{:.3f}"),
    ("entropy_bits_per_nnz", "H b/nz", "{:.3f}"),
    ("position_overhead_pct", "pos +%", "{:.2f}"),
    ("value_bits_per_nnz", "val b/nz", "{:.2f}"),
    ("pack_s", "pack s", "{:.3f}"),
    ("unpack_s", "unpack s", "{:.3f}"),
    ("pack_cpu_s", "pack cpu", "{:.3f}"),
    ("unpack_cpu_s", "unpack cpu", "{:.3f}"),
    ("pack_mb_per_s", "pack MB/s", "{:.0f}"),
    ("unpack_mb_per_s", "unpk MB/s", "{:.0f}"),
)


_LEGEND = {
    "k": "density: the fraction of values top-k keeps",
    "ours B": "payload bytes of pack(sparse), the defaults (Golomb positions, coded values)",
    "fp16 vals B": "the same positions with raw fp16 values (the paper's scheme)",
    "coo B": "int32 index + fp16 value per kept value",
    "zstd-3 B": "the dense fp16 tensors (zeros included) through zstd level 3",
    "zstd-19 B": "the same through zstd level 19",
    "zlib B": "the same through zlib level 6",
    "pos b/nz": "bits per kept value spent on positions",
    "H b/nz": "entropy bound on positions, log2 C(n, nnz) / nnz",
    "pos +%": "position bits above that bound, in percent",
    "val b/nz": "bits per kept value spent on values",
    "pack s": "pack time, best wall seconds",
    "unpack s": "unpack time, best wall seconds",
    "pack cpu": "pack CPU seconds",
    "unpack cpu": "unpack CPU seconds",
    "pack MB/s": "pack throughput, MB of fp32 input per second",
    "unpk MB/s": "unpack throughput, MB of fp32 input per second",
}


def format_legend(rows: Sequence[dict[str, Any]]) -> str:
    """What each column of :func:`format_table` means (only the columns it shows)."""
    shown = [c[1] for c in _COLUMNS if c[1] in _LEGEND and any(c[0] in r for r in rows)]
    width = max((len(name) for name in shown), default=0)
    return "\n".join(["Columns:"] + [f"  {name.ljust(width)}  {_LEGEND[name]}" for name in shown])


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of :func:`run_codec_bench` results (missing columns are skipped)."""
    columns = [c for c in _COLUMNS if any(c[0] in r for r in rows)]
    cells = [[c[1] for c in columns]]
    for r in rows:
        cells.append([c[2].format(r[c[0]]) if c[0] in r else "-" for c in columns])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def golomb_choice_rows(
    densities: Sequence[float] = (0.01, 0.05, 0.1, 0.2, 0.3),
    case: str = "gaussian",
    seed: int = 0,
    *,
    num_layers: int = 32,
) -> list[dict[str, Any]]:
    """Rice ``2^b*`` against the optimal Golomb ``M``: expected and measured bits per non-zero.

    Measured on the benchmark LoRA's top-k masks, against ``log2 C(n, nnz)`` summed per tensor.
    """
    lora = make_lora(case, num_layers=num_layers, seed=seed)
    rows = []
    for p in densities:
        m_rice, m_opt = 1 << rice_parameter(p), optimal_golomb_parameter(p)
        bits = {"rice": 0, "optimal": 0}
        bound, nnz = 0.0, 0
        for t in lora.values():
            mask = topk_mask(t, p).numpy().reshape(-1)
            positions = np.flatnonzero(mask)
            gaps = np.diff(positions, prepend=-1) - 1
            bound += position_entropy_bits(mask.size, positions.size)
            nnz += positions.size
            for label, m in (("rice", m_rice), ("optimal", m_opt)):
                bits[label] += 8 * sum(golomb_num_bytes(gaps, m))
        entropy = -(p * math.log2(p) + (1 - p) * math.log2(1 - p)) / p
        rows.append({
            "density": p,
            "rice_m": m_rice,
            "optimal_m": m_opt,
            "entropy_bits": entropy,
            "rice_expected_bits": expected_golomb_bits(p, m_rice),
            "optimal_expected_bits": expected_golomb_bits(p, m_opt),
            "bound_bits_per_nnz": bound / nnz,
            "rice_bits_per_nnz": bits["rice"] / nnz,
            "optimal_bits_per_nnz": bits["optimal"] / nnz,
        })  # fmt: skip
    return rows


def format_golomb_table(rows: Sequence[dict[str, Any]]) -> str:
    """Plain-text table of :func:`golomb_choice_rows` (percentages over the bounds)."""
    lines = ["   p  Rice M  opt M  H(p)/p  Rice exp      opt exp       Rice meas  opt meas"]
    for r in rows:
        h, b = r["entropy_bits"], r["bound_bits_per_nnz"]
        lines.append(
            f"{r['density']:4.2f}  {r['rice_m']:6d}  {r['optimal_m']:5d}  {h:6.3f}  "
            f"{r['rice_expected_bits']:.3f} {100 * (r['rice_expected_bits'] / h - 1):+.2f}%  "
            f"{r['optimal_expected_bits']:.3f} {100 * (r['optimal_expected_bits'] / h - 1):+.2f}%  "
            f"{100 * (r['rice_bits_per_nnz'] / b - 1):+8.2f}%  "
            f"{100 * (r['optimal_bits_per_nnz'] / b - 1):+7.2f}%"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry: ``python -m ecolora.bench.codec [--json] ...``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--densities", type=float, nargs="+", default=list(DENSITIES))
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-layers", type=int, default=32)
    parser.add_argument("--zstd-levels", type=int, nargs="*", default=[3, 19])
    parser.add_argument(
        "--golomb", action="store_true", help="compare Rice and optimal Golomb parameters instead"
    )
    args = parser.parse_args(argv)
    if args.golomb:
        golomb = golomb_choice_rows()
        print(json.dumps(golomb, indent=2) if args.json else format_golomb_table(golomb))
        return
    rows = run_codec_bench(
        args.densities,
        args.cases,
        args.repeats,
        args.seed,
        num_layers=args.num_layers,
        zstd_levels=args.zstd_levels,
    )
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))


if __name__ == "__main__":
    main()
