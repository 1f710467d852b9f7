"""Run-directory safety and the stop flag of a run (no torch, no model code).

* :func:`claim_run_dir` is called before anything is loaded: a run never writes into a non-empty
  directory unless it continues it (``--resume``) or the user asked to move the old one aside
  (``--overwrite``: renamed to ``DIR.old-<time>``, never deleted); an unwritable location fails
  here, before the model and the data are loaded.
* :func:`request_stop` is what the CLI's SIGINT/SIGTERM handler calls; the round loops' shared
  :class:`~ecolora.sim.runner.RunJournal` checks :func:`stop_requested` after each round's
  checkpoint and raises :class:`RunStopped`, so a stopped run always ends on a checkpoint.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Literal

__all__ = [
    "RunDirError",
    "RunStopped",
    "SetupError",
    "claim_run_dir",
    "clear_stop",
    "request_stop",
    "stop_requested",
]

RunDirMode = Literal["new", "resume", "overwrite"]


class RunDirError(ValueError):
    """The run directory cannot be used; the message says why and what to pass instead."""


class SetupError(ValueError):
    """A run cannot be set up (model, data, LoRA modules, partitions); the message names the fix."""


class RunStopped(Exception):
    """The run stopped on request (SIGINT/SIGTERM) after ``step`` completed steps."""

    def __init__(self, step: int, unit: str = "round", checkpointed: bool = True) -> None:
        super().__init__(f"stopped after {unit} {step}")
        self.step, self.unit, self.checkpointed = step, unit, checkpointed


_stop = {"requested": False}


def request_stop() -> None:
    """Ask the running loop to stop after the current round (its checkpoint is written first)."""
    _stop["requested"] = True


def clear_stop() -> None:
    _stop["requested"] = False


def stop_requested() -> bool:
    return _stop["requested"]


def claim_run_dir(out_dir: Path, mode: RunDirMode = "new") -> Path | None:
    """Check that a run may write ``out_dir``; with ``overwrite`` move a non-empty one aside.

    Nothing is created here (the run creates the directory once its setup succeeded).

    Returns:
        Where the old directory was moved (``overwrite``), else None.

    Raises:
        RunDirError: ``out_dir`` is a file, is not empty (mode ``new``), is missing (``resume``),
            or its nearest existing parent is not writable.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunDirError(f"--out {out_dir} is a file, not a directory; pass a new directory name.")
    if mode == "resume":
        if not (out_dir / "config.yaml").is_file():
            raise RunDirError(f"{out_dir} has no config.yaml, so it is not a run directory; pass the directory a run wrote.")
        _check_writable(out_dir)
        return None
    _check_writable(out_dir)
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return None
    if mode == "new":
        held = ", ".join(sorted(p.name for p in out_dir.iterdir())[:4])
        raise RunDirError(
            f"{out_dir} is not empty (holds {held}); continue that run with `ecolora run --resume "
            f"{out_dir}`, or pass --overwrite to move it aside to {out_dir}.old-<time>, or choose another --out."
        )
    moved = out_dir.with_name(f"{out_dir.name}.old-{datetime.now():%Y%m%d-%H%M%S}")
    suffix = 1
    while moved.exists():
        moved, suffix = moved.with_name(f"{moved.name.split('~')[0]}~{suffix}"), suffix + 1
    out_dir.rename(moved)
    return moved


def _check_writable(out_dir: Path) -> None:
    existing = out_dir.resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(
            f"cannot write the run directory {out_dir}: {existing} is not writable; pass --out "
            "with a directory you can write to."
        )
