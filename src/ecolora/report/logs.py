"""Live training logs besides metrics.jsonl: TensorBoard (``log.tensorboard``) and Weights &
Biases (``log.wandb``), both optional extras fed the same per-round scalars
(:func:`ecolora.report.tensorboard.round_scalars`).

W&B runs offline by default (``WANDB_MODE`` overrides it) into ``RUN/wandb/``; ``wandb sync
RUN/wandb/offline-run-*`` uploads a finished run. A resumed run continues in a new W&B run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from ecolora.config import RunConfig
from ecolora.report.tensorboard import TensorBoardLog, require_tensorboard, round_scalars

__all__ = ["RoundLog", "WandbLog", "check_round_logs", "open_round_logs", "require_wandb"]


class RoundLog(Protocol):
    """A live log of a run: one call per round's metrics.jsonl record, then close."""

    def log_round(self, record: Mapping[str, Any], wall_s: float) -> None: ...

    def close(self) -> None: ...


def require_wandb() -> Any:
    try:
        import wandb
    except ImportError as exc:
        raise ImportError(
            "log.wandb needs the optional package wandb; pip install 'ecolora[wandb]' or set log.wandb=false",
            name="wandb",
        ) from exc
    return wandb


def check_round_logs(config: RunConfig) -> None:
    """Fail early, before the run directory exists, when a configured log's package is missing."""
    if config.log.tensorboard:
        require_tensorboard()
    if config.log.wandb:
        require_wandb()


def open_round_logs(config: RunConfig, run_dir: Path, history: Sequence[Mapping[str, Any]]) -> list[RoundLog]:
    """The logs ``config.log`` asks for; ``history`` holds the rounds before a resume."""
    logs: list[RoundLog] = []
    if config.log.tensorboard:
        logs.append(TensorBoardLog(run_dir, history))
    if config.log.wandb:
        logs.append(WandbLog(config, run_dir))
    return logs


class WandbLog:
    """Logs :func:`round_scalars` of each record to a W&B run (offline unless ``WANDB_MODE`` says)."""

    def __init__(self, config: RunConfig, run_dir: Path) -> None:
        wandb = require_wandb()
        self._run = wandb.init(
            project=config.log.wandb_project, name=Path(run_dir).name, dir=str(run_dir),
            config=config.to_dict(), mode=os.environ.get("WANDB_MODE", "offline"),
        )  # a resumed run logs to a new W&B run from its next round on

    def log_round(self, record: Mapping[str, Any], wall_s: float) -> None:
        scalars = dict(round_scalars(record))
        scalars["time/wall_s"] = wall_s
        self._run.log(scalars, step=int(record.get("round", record.get("step", 0))))

    def close(self) -> None:
        self._run.finish()
