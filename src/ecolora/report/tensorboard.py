"""TensorBoard scalars of a run (``log.tensorboard: true``), written next to metrics.jsonl.

One point per round for every number in the round's metrics.jsonl record, under tags grouped by
kind: ``loss/train``, ``loss/eval``, ``bytes/upload``, ``bytes/download`` (and their running
totals ``bytes/cumulative_*``), ``time/compute_s``, ``time/wall_s``, the method's own numbers
(EcoLoRA's densities, FedBuff's staleness, ...) under ``method/<key>``, network times under
``net/<scenario>/<field>`` and suite scores under ``eval/<suite>/<metric>``. ``tensorboard --logdir
runs/`` then shows every run. TensorBoard is an optional extra: ``pip install 'ecolora[tensorboard]'``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["TENSORBOARD_DIR", "TensorBoardLog", "require_tensorboard", "round_scalars"]

TENSORBOARD_DIR = "tensorboard"  # inside the run directory
_NAMED = {"train_loss": "loss/train", "eval_loss": "loss/eval", "upload_bytes": "bytes/upload",
          "download_bytes": "bytes/download", "upload_params": "params/upload",
          "download_params": "params/download", "compute_s": "time/compute_s"}
_SKIP = {"round", "step", "clients", "per_client", "dropped", "rejected"}


def require_tensorboard() -> None:
    """Fail early (before the run directory exists) when the optional package is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "log.tensorboard needs the optional package tensorboard; pip install 'ecolora[tensorboard]' "
            "or set log.tensorboard=false", name="tensorboard"
        ) from exc


def round_scalars(record: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    """``(tag, value)`` for every number of one metrics.jsonl record (see the module docstring)."""
    for key, value in record.items():
        if key in _SKIP:
            continue
        if key in _NAMED:
            if _is_number(value):
                yield _NAMED[key], float(value)
        elif key == "net" and isinstance(value, Mapping):
            for scenario, timing in value.items():
                yield from _nested(f"net/{_tag(scenario)}", timing)
        elif key == "eval_suites" and isinstance(value, Mapping):
            for suite, scores in value.items():
                yield from _nested(f"eval/{suite}", scores)
        else:
            yield from _nested(f"method/{key}", value)


def _nested(prefix: str, value: Any) -> Iterator[tuple[str, float]]:
    if _is_number(value):
        yield prefix, float(value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _nested(f"{prefix}/{_tag(key)}", item)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _tag(key: Any) -> str:
    return str(key).replace("/", "_")  # scenario names such as 1/5 are one tag level


class TensorBoardLog:
    """Writes :func:`round_scalars` of each record, plus running byte totals and wall time."""

    def __init__(self, run_dir: Path, history: Sequence[Mapping[str, Any]] = ()) -> None:
        """``history``: the records before a resume (their byte totals carry over)."""
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR))
        self._totals = {key: float(sum(r.get(key) or 0 for r in history)) for key in ("upload_bytes", "download_bytes")}

    def log_round(self, record: Mapping[str, Any], wall_s: float) -> None:
        step = int(record.get("round", record.get("step", 0)))
        for tag, value in round_scalars(record):
            self._writer.add_scalar(tag, value, step)
        for key in self._totals:
            self._totals[key] += float(record.get(key) or 0.0)
            self._writer.add_scalar(f"bytes/cumulative_{key.split('_')[0]}", self._totals[key], step)
        self._writer.add_scalar("time/wall_s", wall_s, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
