"""Rich progress bars for a run (rounds, clients in the round) and the per-round table after it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ecolora.config import RunConfig
from ecolora.sim import run_experiment
from ecolora.sim.checkpoint import CHECKPOINT_DIR, list_checkpoints

__all__ = ["round_table", "run_with_progress"]


def run_with_progress(
    config: RunConfig, out_dir: Path, console: Console, resume: bool = False
) -> dict[str, Any]:
    """Run (or, with ``resume``, continue) with two progress bars, then print the per-round table."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        saved = list_checkpoints(Path(out_dir) / CHECKPOINT_DIR) if resume else []
        rounds = bar.add_task("rounds", total=config.fed.rounds, completed=saved[-1][0] if saved else 0)
        clients = bar.add_task("clients", total=config.fed.clients_per_round)

        def hook(event: str, done: int, total: int) -> None:
            if event == "round":
                bar.update(rounds, completed=done)
                bar.reset(clients, total=config.fed.clients_per_round)
            else:
                bar.update(clients, completed=done, total=total)

        summary = run_experiment(config, out_dir, progress=hook, resume=resume)
    Console().print(round_table(out_dir))
    return summary


def round_table(run_dir: Path) -> Table:
    """The per-round table of a run directory: losses, bytes and cumulative traffic."""
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line]
    summary_path = Path(run_dir) / "summary.json"
    title = Path(run_dir).name
    if summary_path.exists():
        s = json.loads(summary_path.read_text())
        title = f"{s['method']} on {s['model']} / {s['dataset']}"
    table = Table(title=title)
    for col in ("round", "clients", "train loss", "eval loss", "up MB", "down MB", "cum. MB", "compute s"):
        table.add_column(col, justify="right")
    cumulative = 0
    for r in rows:
        cumulative += r["upload_bytes"] + r["download_bytes"]
        table.add_row(
            str(r["round"]), ",".join(map(str, r["clients"])),
            f"{r['train_loss']:.4f}" if r["train_loss"] is not None else "-",
            f"{r['eval_loss']:.4f}" if r["eval_loss"] is not None else "-",
            f"{r['upload_bytes'] / 1e6:.3f}", f"{r['download_bytes'] / 1e6:.3f}",
            f"{cumulative / 1e6:.2f}", f"{r['compute_s']:.1f}",
        )
    return table
