"""Rank x density search for FLASC under a byte budget, in the spirit of FLASC-Search (Kuo, Raje,
Rajesh, Smith, "Federated LoRA with Sparse Communication", arXiv 2406.05233).

FLASC-Search walks the grid of LoRA ranks and densities from the cheapest corner, comparing two
configurations at a time on short runs:

1. Start at the smallest rank and the smallest density (one density for download and upload).
2. From the current configuration (r, d), the two candidates are (next rank, d) and
   (r, next density): one step up in capacity or in communication. Each is trained for
   ``short_rounds`` rounds (runs are cached; a configuration is never run twice).
3. A candidate whose projected bytes, ``(upload + download bytes of the short run) / short_rounds
   x full rounds`` (``fed.rounds`` of the base config), exceed the budget is out. The better of
   the remaining candidates (lower final eval loss, then fewer bytes) becomes the current one.
4. Stop when no candidate is left (grid edge or budget).

Reported: every configuration that ran, the path of winners, the quality-vs-bytes frontier
(configurations no other one beats on both loss and bytes) and the best configuration within the
budget, as a markdown table (``search.md``), JSON (``search.json``) and a plot (``search.png``).

Run ``python -m ecolora.bench.flasc_search --config configs/methods/flasc.yaml --ranks 4,8,16
--densities 0.0625,0.125,0.25,0.5,1 --budget-mb 2 --rounds 2 --out runs/flasc-search``.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ecolora.config import RunConfig, load_config
from ecolora.sim import run_experiment

logger = logging.getLogger("ecolora")

__all__ = ["SearchPoint", "SearchResult", "flasc_search", "format_markdown", "main", "plot_search"]

RunFn = Callable[[RunConfig, Path], dict[str, Any]]


@dataclass
class SearchPoint:
    """One configuration's short run."""

    rank: int
    density: float
    final_eval_loss: float
    total_bytes: int
    projected_bytes: float
    within_budget: bool
    run_dir: str

    @property
    def key(self) -> tuple[int, float]:
        return self.rank, self.density


@dataclass
class SearchResult:
    points: list[SearchPoint]
    path: list[tuple[int, float]]
    frontier: list[tuple[int, float]]
    best: tuple[int, float] | None
    budget_bytes: float | None
    full_rounds: int
    short_rounds: int

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "points": [asdict(p) for p in self.points]}


def flasc_search(
    base: RunConfig,
    ranks: Sequence[int],
    densities: Sequence[float],
    *,
    out_dir: Path,
    byte_budget: float | None = None,
    short_rounds: int = 2,
    run_fn: RunFn | None = None,
) -> SearchResult:
    """Walk the rank x density grid pairwise (module docstring); write search.{json,md,png}."""
    ranks, densities = sorted(set(int(r) for r in ranks)), sorted(set(float(d) for d in densities))
    if not ranks or not densities:
        raise ValueError(f"Give at least one rank and one density, got ranks {ranks} and densities {densities}.")
    if short_rounds < 1:
        raise ValueError(f"short_rounds must be >= 1, got {short_rounds}.")
    if run_fn is None:
        run_fn = run_experiment
    out_dir = Path(out_dir)
    cache: dict[tuple[int, float], SearchPoint] = {}

    def evaluate(i: int, j: int) -> SearchPoint:
        key = (ranks[i], densities[j])
        if key not in cache:
            cache[key] = _short_run(base, key, out_dir, byte_budget, short_rounds, run_fn)
        return cache[key]

    i = j = 0
    current = evaluate(i, j)
    path = [current.key] if current.within_budget else []
    while current.within_budget:
        steps = [(i + 1, j), (i, j + 1)]
        candidates = [(a, b, evaluate(a, b)) for a, b in steps if a < len(ranks) and b < len(densities)]
        candidates = [c for c in candidates if c[2].within_budget]
        if not candidates:
            break
        i, j, current = min(candidates, key=lambda c: (c[2].final_eval_loss, c[2].total_bytes))
        path.append(current.key)
        logger.info("FLASC-Search: r=%d density=%g wins (loss %.4f, %.2f MB projected)", current.rank,
                    current.density, current.final_eval_loss, current.projected_bytes / 1e6)
    points = list(cache.values())
    within = [p for p in points if p.within_budget]
    result = SearchResult(
        points=points, path=path, frontier=_frontier(points),
        best=min(within, key=lambda p: (p.final_eval_loss, p.total_bytes)).key if within else None,
        budget_bytes=byte_budget, full_rounds=base.fed.rounds, short_rounds=short_rounds,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "search.json").write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    (out_dir / "search.md").write_text(format_markdown(result), encoding="utf-8")
    plot_search(result, out_dir / "search.png")
    return result


def _short_run(base: RunConfig, key: tuple[int, float], out_dir: Path, byte_budget: float | None,
               short_rounds: int, run_fn: RunFn) -> SearchPoint:
    rank, density = key
    data = base.to_dict()
    data["method"] = "flasc"
    data["lora"]["r"] = rank
    data["flasc"].update(download_density=density, upload_density=density)
    data["fed"]["rounds"] = short_rounds
    run_dir = out_dir / f"r{rank}-d{density:g}"
    summary = run_fn(RunConfig.from_dict(data), run_dir)
    total = int(summary["upload_bytes"]) + int(summary["download_bytes"])
    projected = total / short_rounds * base.fed.rounds
    return SearchPoint(rank, density, float(summary["final_eval_loss"]), total, projected,
                       byte_budget is None or projected <= byte_budget, str(run_dir))


def _frontier(points: list[SearchPoint]) -> list[tuple[int, float]]:
    """Configurations no other one beats on both loss and bytes (ties: both stay), by bytes."""
    def dominated(p: SearchPoint) -> bool:
        return any(q.final_eval_loss <= p.final_eval_loss and q.projected_bytes <= p.projected_bytes
                   and (q.final_eval_loss, q.projected_bytes) != (p.final_eval_loss, p.projected_bytes) for q in points)

    return [p.key for p in sorted(points, key=lambda p: p.projected_bytes) if not dominated(p)]


def format_markdown(result: SearchResult) -> str:
    """One row per configuration that ran, cheapest first."""
    budget = f"{result.budget_bytes / 1e6:.3f} MB" if result.budget_bytes is not None else "none"
    lines = [
        f"FLASC-Search: {result.short_rounds}-round runs, bytes projected to {result.full_rounds} rounds, "
        f"budget {budget}; best within budget: " + (f"r={result.best[0]}, density {result.best[1]:g}" if result.best else "none"),
        "",
        "| rank | density | eval loss | bytes (short run) | projected MB | within budget | path | frontier |",
        "|---:|---:|---:|---:|---:|:---:|:---:|:---:|",
    ]
    for p in sorted(result.points, key=lambda p: (p.projected_bytes, p.rank)):
        step = result.path.index(p.key) + 1 if p.key in result.path else None
        lines.append(
            f"| {p.rank} | {p.density:g} | {p.final_eval_loss:.4f} | {p.total_bytes:,} | {p.projected_bytes / 1e6:.3f} "
            f"| {'yes' if p.within_budget else 'no'} | {step or ''} | {'*' if p.key in result.frontier else ''} |"
        )
    return "\n".join(lines) + "\n"


def plot_search(result: SearchResult, path: Path) -> None:
    """Eval loss against projected bytes: all runs, the frontier, the search path, the budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    by_key = {p.key: p for p in result.points}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.scatter([p.projected_bytes / 1e6 for p in result.points], [p.final_eval_loss for p in result.points],
               color="0.6", label="short runs", zorder=2)
    for p in result.points:
        ax.annotate(f"r{p.rank}/{p.density:g}", (p.projected_bytes / 1e6, p.final_eval_loss), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    front = [by_key[k] for k in result.frontier]
    ax.plot([p.projected_bytes / 1e6 for p in front], [p.final_eval_loss for p in front], "-o", color="C0",
            label="frontier", zorder=3)
    walk = [by_key[k] for k in result.path]
    ax.plot([p.projected_bytes / 1e6 for p in walk], [p.final_eval_loss for p in walk], "--", color="C1",
            label="search path", zorder=4)
    if result.budget_bytes is not None:
        ax.axvline(result.budget_bytes / 1e6, color="C3", linestyle=":", label="budget")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_xlabel(f"projected bytes over {result.full_rounds} rounds (MB, log)")
    ax.set_ylabel("final eval loss (short run)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> SearchResult:
    parser = argparse.ArgumentParser(prog="python -m ecolora.bench.flasc_search", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/methods/flasc.yaml"), help="Base preset.")
    parser.add_argument("--ranks", default="4,8,16", help="Comma-separated LoRA ranks.")
    parser.add_argument("--densities", default="0.0625,0.125,0.25,0.5,1", help="Comma-separated densities (both directions).")
    parser.add_argument("--budget-mb", type=float, default=None, help="Byte budget of a full run in MB (1e6 bytes).")
    parser.add_argument("--rounds", type=int, default=2, help="Rounds of each short run.")
    parser.add_argument("--out", type=Path, default=Path("runs/flasc-search"), help="Output folder.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="Override a key of the base preset.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = flasc_search(
        load_config(args.config, args.overrides), [int(r) for r in args.ranks.split(",")],
        [float(d) for d in args.densities.split(",")], out_dir=args.out,
        byte_budget=args.budget_mb * 1e6 if args.budget_mb is not None else None, short_rounds=args.rounds,
    )
    print(format_markdown(result))  # noqa: T201 - the entry point's output
    return result


if __name__ == "__main__":
    main()
