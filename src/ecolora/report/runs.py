"""Reading run directories: their metrics and summary, and a readable name for each run."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ecolora.config import RunConfig

__all__ = ["flatten_config", "load_run", "run_labels"]

# Settings that never change what a run computes: left out of the labels.
_NOT_A_VARIANT = ("train.num_threads", "eval.batch_size")


def load_run(run_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read a run directory's metrics.jsonl and summary.json (summary may be absent mid-run)."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: metrics.jsonl is missing.")
    metrics = [json.loads(line) for line in metrics_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    return metrics, summary



def run_labels(run_dirs: Sequence[Path]) -> list[str]:
    """A name per run: its method, and where several runs share a method, the settings that set
    each apart from the defaults (``fedit+ecolora (ecolora.segments=False)``); the directory name
    when their configs do not tell them apart."""
    methods, flats = [], []
    for run_dir in run_dirs:
        _, summary = load_run(Path(run_dir))
        methods.append(summary.get("method") or Path(run_dir).name)
        path = Path(run_dir) / "config.yaml"
        config = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}
        flats.append(flatten_config(config or {}))
    defaults = flatten_config(RunConfig().to_dict())
    labels = []
    for i, method in enumerate(methods):
        peers = [flats[j] for j, m in enumerate(methods) if m == method]
        if len(peers) == 1:
            labels.append(method)
            continue
        differing = sorted({k for f in peers for k in f if any(g.get(k) != f.get(k) for g in peers)}
                           - set(_NOT_A_VARIANT))
        mine = [f"{k}={flats[i][k]}" for k in differing if k in flats[i] and flats[i][k] != defaults.get(k)]
        labels.append(f"{method} ({', '.join(mine)})" if mine else method)
    # Identical configs: the directory names tell them apart.
    return [f"{label} [{Path(run_dirs[i]).name}]" if labels.count(label) > 1 else label
            for i, label in enumerate(labels)]


def flatten_config(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as dotted keys: ``{"fed": {"rounds": 2}}`` -> ``{"fed.rounds": 2}``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
