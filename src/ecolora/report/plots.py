"""PNG plots of runs: loss per round, cumulative bytes per round, quality against total bytes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ecolora.methods import parse_method  # noqa: E402
from ecolora.report.runs import load_run, run_labels  # noqa: E402

__all__ = ["plot_quality_vs_bytes", "plot_run", "save_figure"]


def plot_run(run_dir: Path) -> list[Path]:
    """Write plots/loss.png and plots/bytes.png for one run; return their paths."""
    run_dir = Path(run_dir)
    metrics, summary = load_run(run_dir)
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    rounds = [m["round"] for m in metrics]
    title = f"{summary.get('method', '')} · {summary.get('model', '')} · {summary.get('dataset', '')}"

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(rounds, [m["train_loss"] for m in metrics], marker="o", label="train loss (clients, weighted)")
    ev = [(m["round"], m["eval_loss"]) for m in metrics if m["eval_loss"] is not None]
    if summary.get("initial_eval_loss") is not None:
        ev = [(0, summary["initial_eval_loss"])] + ev
    if ev:
        ax.plot([r for r, _ in ev], [v for _, v in ev], marker="s", label="held-out eval loss (global)")
    ax.set(xlabel="round", ylabel="loss", title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    loss_png = out / "loss.png"
    fig.savefig(loss_png, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    up = _cumsum([m["upload_bytes"] / 1e6 for m in metrics])
    down = _cumsum([m["download_bytes"] / 1e6 for m in metrics])
    ax.plot(rounds, up, marker="o", label="upload (client→server)")
    ax.plot(rounds, down, marker="s", label="download (server→client)")
    ax.plot(rounds, [u + d for u, d in zip(up, down, strict=False)], linestyle="--", label="total")
    ax.set(xlabel="round", ylabel="cumulative MB", title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    bytes_png = out / "bytes.png"
    fig.savefig(bytes_png, dpi=120)
    plt.close(fig)
    return [loss_png, bytes_png]


def plot_quality_vs_bytes(run_dirs: Sequence[Path], path: Path) -> Path:
    """Eval loss against cumulative total MB, one line per run (the comparison plot)."""
    curves = []
    for run_dir, label in zip(run_dirs, run_labels(run_dirs), strict=True):
        metrics, summary = load_run(Path(run_dir))
        total = _cumsum([(m["upload_bytes"] + m["download_bytes"]) / 1e6 for m in metrics])
        pts = [(t, m["eval_loss"]) for t, m in zip(total, metrics, strict=False) if m["eval_loss"] is not None]
        curves.append((label, summary.get("initial_eval_loss"), pts, _compressed(summary.get("method"))))
    # Runs whose traffic differs by more than 20x (FLoRA's download) share a log axis; the start
    # (0 MB, initial loss) then has no place on it and is left out.
    ends = [pts[-1][0] for _, _, pts, _ in curves if pts and pts[-1][0] > 0]
    log_x = len(ends) > 1 and max(ends) > 20 * min(ends)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    cmap = matplotlib.colormaps["tab10" if len(curves) <= 10 else "tab20"]
    colors = [cmap(i) for i in range(cmap.N)]  # a qualitative map: its N listed colors
    for i, (label, initial, pts, dashed) in enumerate(curves):
        if initial is not None and not log_x:
            pts = [(0.0, initial)] + pts
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="os^Dv"[i % 5], color=colors[i % len(colors)],
                linestyle="--" if dashed else "-", label=label)
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel="cumulative total traffic (MB, up + down)" + (", log scale" if log_x else ""),
           ylabel="held-out eval loss", title="Quality vs bytes")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def save_figure(fig: Figure, path: Path) -> Path:
    """Lay out ``fig``, write it to ``path`` (PNG, 120 dpi, parent folders made) and close it."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _cumsum(values: Sequence[float]) -> list[float]:
    out, acc = [], 0.0
    for v in values:
        acc += v
        out.append(acc)
    return out


def _compressed(method: object) -> bool:
    """Whether a run's method is a ``+ecolora`` one (dashed in the comparison plot)."""
    try:
        return parse_method(str(method)).compressed
    except ValueError:  # a method this installation does not know
        return False
