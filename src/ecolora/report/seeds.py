"""Runs that differ only in ``seed``, summarized as mean ± sd: ``ecolora compare --seeds``.

A quality difference between two methods is only worth reporting when it is larger than the
spread between seeds of one method. This module groups run directories whose configs are equal
except for ``seed`` (and settings that never change what a run computes, such as
``train.num_threads``), and reports per group: the final held-out loss as mean ± sample standard
deviation, bytes, and the time to reach the baseline group's mean final loss under one link
scenario; and it plots each group's held-out loss curve with a ±1 sd band.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ecolora.network.runs import annotate_metrics, normalize_scenarios, time_to_target  # noqa: E402
from ecolora.report.plots import save_figure  # noqa: E402
from ecolora.report.runs import flatten_config, load_run  # noqa: E402

__all__ = ["SeedGroup", "format_seed_table", "group_seed_runs", "plot_seed_curves", "summarize_seeds"]

# Keys that never change what a run computes, plus the one that groups are made across.
_IGNORED_KEYS = frozenset({"seed", "train.num_threads", "eval.batch_size", "train.device"})


@dataclass
class SeedGroup:
    """Runs of one configuration that differ only in their seed."""

    label: str
    run_dirs: list[Path] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)


def _read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ValueError(f"{run_dir} has no config.yaml: `--seeds` groups runs by their configs.")
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return flatten_config(loaded)


def group_seed_runs(run_dirs: Sequence[Path]) -> list[SeedGroup]:
    """Group ``run_dirs`` by configuration, ignoring ``seed``; groups keep first-seen order.

    Each group is labelled by its method and, where several groups share a method, the settings
    that set it apart from the others (``fedit+ecolora (ecolora.aggregate=paper)``).
    """
    if not run_dirs:
        raise ValueError("Give at least one run directory.")
    keys: list[tuple[tuple[str, str], ...]] = []
    groups: list[SeedGroup] = []
    flats: list[dict[str, Any]] = []
    for run_dir in map(Path, run_dirs):
        flat = _read_config(run_dir)
        key = tuple(sorted((k, repr(v)) for k, v in flat.items() if k not in _IGNORED_KEYS))
        if key not in keys:
            keys.append(key)
            flats.append(flat)
            groups.append(SeedGroup(label=str(flat.get("method", run_dir.name))))
        group = groups[keys.index(key)]
        group.run_dirs.append(run_dir)
        group.seeds.append(int(flat.get("seed", 0)))
    methods = [g.label for g in groups]
    for i, group in enumerate(groups):
        peers = [j for j, m in enumerate(methods) if m == methods[i]]
        if len(peers) > 1:
            differing = sorted(
                {k for j in peers for k in flats[j] if k not in _IGNORED_KEYS
                 and any(flats[m].get(k) != flats[j].get(k) for m in peers)}
            )
            group.label += " (" + ", ".join(f"{k}={flats[i].get(k)}" for k in differing) + ")"
    return groups


def _mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, sd


def _run_row(run_dir: Path, scenario: str, target: float | None) -> dict[str, Any]:
    metrics, summary = load_run(run_dir)
    if not summary:
        raise ValueError(f"{run_dir} has no summary.json (unfinished run?).")
    timed, totals = annotate_metrics(metrics, [scenario])
    key = next(iter(totals))
    reached = time_to_target(timed, key, target) if target is not None else None
    return {
        "final_eval_loss": summary.get("final_eval_loss"),
        "upload_mb": summary["upload_bytes"] / 1e6,
        "total_mb": (summary["upload_bytes"] + summary["download_bytes"]) / 1e6,
        "comm_s": float(totals[key]["comm_s"]),
        "train_s": float(totals[key]["round_s"]),
        "target_s": reached,
    }


def summarize_seeds(
    run_dirs: Sequence[Path],
    *,
    scenario: str = "1/5",
    baseline: str | Path | None = None,
    target_eval_loss: float | None = None,
) -> list[dict[str, Any]]:
    """One row per seed group: mean ± sd of final eval loss and times, mean bytes, and the time to
    a target eval loss: ``target_eval_loss``, else the baseline group's mean final eval loss.

    ``baseline``: a group's label, or one of its run directories (default: the first group).
    """
    groups = group_seed_runs(run_dirs)
    key = next(iter(normalize_scenarios([scenario])))
    base = groups[0]
    if baseline is not None:
        named = [
            g for g in groups
            if g.label == str(baseline) or any(Path(d).resolve() == Path(baseline).resolve() for d in g.run_dirs)
        ]
        if not named:
            raise ValueError(
                f"Baseline {str(baseline)!r} is neither a group nor one of its runs; groups: "
                f"{[g.label for g in groups]}."
            )
        base = named[0]
    target = target_eval_loss
    if target is None:
        base_losses = [_run_row(d, key, None)["final_eval_loss"] for d in base.run_dirs]
        target, _ = _mean_sd([float(v) for v in base_losses if v is not None])
    rows = []
    for group in groups:
        runs = [_run_row(d, key, target) for d in group.run_dirs]
        row: dict[str, Any] = {"label": group.label, "seeds": group.seeds, "scenario": key,
                               "target_eval_loss": target}
        for col in ("final_eval_loss", "upload_mb", "total_mb", "comm_s", "train_s"):
            row[col], row[f"{col}_sd"] = _mean_sd([float(r[col]) for r in runs if r[col] is not None])
        reached = [float(r["target_s"]) for r in runs if r["target_s"] is not None]
        row["target_s"], row["target_s_sd"] = _mean_sd(reached)
        row["target_reached"] = f"{len(reached)}/{len(runs)}"
        rows.append(row)
    return rows


def _pm(mean: float | None, sd: float | None, digits: int) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if sd is not None else f"{mean:.{digits}f}"


def format_seed_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of :func:`summarize_seeds` rows (mean ± sample sd over seeds)."""
    if not rows:
        return ""
    target = rows[0]["target_eval_loss"]
    lines = [
        f"Mean ± sd over seeds; times under {rows[0]['scenario']} Mbps (analytic TCP model); "
        f"time to target = to an eval loss of {target:.4f}." if target is not None else "",
        "",
        "| method | seeds | final eval loss | up MB | total MB | comm s | train s | time to target s | reached |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {','.join(map(str, r['seeds']))} | {_pm(r['final_eval_loss'], r['final_eval_loss_sd'], 4)} "
            f"| {_pm(r['upload_mb'], None, 2)} | {_pm(r['total_mb'], None, 2)} | {_pm(r['comm_s'], r['comm_s_sd'], 1)} "
            f"| {_pm(r['train_s'], r['train_s_sd'], 1)} | {_pm(r['target_s'], r['target_s_sd'], 1)} | {r['target_reached']} |"
        )
    return "\n".join(lines)


def _eval_curve(run_dir: Path, scenario: str | None = None) -> dict[int, tuple[float, float]]:
    """``{round: (x, eval loss)}``: x is the round, or the communication time so far under
    ``scenario`` (bytes through the link model only: measured compute time depends on the machine's
    load, and both methods do the same local work per round)."""
    metrics, summary = load_run(run_dir)
    elapsed: dict[int, float] = {0: 0.0}
    if scenario is not None:
        timed, _ = annotate_metrics(metrics, [scenario])
        key = next(iter(normalize_scenarios([scenario])))
        total = 0.0
        for row in timed:
            total += float(row["net"][key]["comm_s"])
            elapsed[int(row["round"])] = total
    curve = {int(m["round"]): (elapsed[int(m["round"])] if scenario else float(m["round"]), float(m["eval_loss"]))
             for m in metrics if m.get("eval_loss") is not None}
    if summary.get("initial_eval_loss") is not None:
        curve[0] = (0.0, float(summary["initial_eval_loss"]))
    return curve


def plot_seed_curves(run_dirs: Sequence[Path], path: Path, *, scenario: str | None = None) -> Path:
    """Held-out loss per seed group (mean, ±1 sd band) against the round, or, with ``scenario``,
    against the communication time under that link (mean over seeds; analytic TCP model)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for group in group_seed_runs(run_dirs):
        curves = [_eval_curve(d, scenario) for d in group.run_dirs]
        rounds = sorted(set.intersection(*(set(c) for c in curves)))
        xs = [statistics.fmean(c[r][0] for c in curves) for r in rounds]
        stats = [_mean_sd([c[r][1] for c in curves]) for r in rounds]
        means = [m if m is not None else math.nan for m, _ in stats]
        sds = [s if s is not None else 0.0 for _, s in stats]
        (line,) = ax.plot(xs, means, marker="o", label=f"{group.label} (n={len(curves)})")
        ax.fill_between(xs, [m - s for m, s in zip(means, sds, strict=True)],
                        [m + s for m, s in zip(means, sds, strict=True)], color=line.get_color(), alpha=0.2)
    if scenario is None:
        ax.set(xlabel="round", ylabel="held-out loss", title="mean ± 1 sd over seeds")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        key = next(iter(normalize_scenarios([scenario])))
        ax.set(xlabel=f"communication time (s) under {key} Mbps links", ylabel="held-out loss",
               title="mean ± 1 sd over seeds, against communication time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
