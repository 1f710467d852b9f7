"""Network time for a whole run: per-round and total ``comm_s`` / ``round_s`` per scenario.

Reads the run-directory contract (``metrics.jsonl``: one row per round with a ``per_client``
list of ``client``, ``upload_bytes``, ``download_bytes``, ``compute_s``; ``summary.json``) and
times every round with :func:`ecolora.network.timing.round_timing`. Rounds are independent: the
run's total training time is the sum of its round times (Liu et al., arXiv 2506.02001, Table 3).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ecolora.network.link import (
    LinkProfile,
    ProfileSpec,
    assign_profiles,
    parse_scenario,
    scenario_key,
)
from ecolora.network.timing import RoundTiming, round_timing

__all__ = [
    "TOTAL_KEYS",
    "annotate_metrics",
    "normalize_scenarios",
    "read_metrics",
    "simulate_run",
    "time_rounds",
    "time_to_target",
]

logger = logging.getLogger("ecolora")

TOTAL_KEYS = ("comm_s", "round_s", "download_s", "compute_s", "upload_s")

Scenarios = str | LinkProfile | Sequence[str | LinkProfile] | Mapping[str, ProfileSpec]


def normalize_scenarios(scenarios: Scenarios) -> dict[str, ProfileSpec]:
    """``["1/5", LinkProfile(...)]`` -> ``{"1/5": profile, ...}``; a mapping is kept as is.

    A mapping ``{label: spec}`` allows heterogeneous clients: ``spec`` is anything
    :func:`ecolora.network.link.assign_profiles` accepts (a list, a ``LogNormalProfiles``).
    """
    if isinstance(scenarios, Mapping):
        if not scenarios:
            raise ValueError("scenarios must not be empty")
        return {str(k): v for k, v in scenarios.items()}
    if isinstance(scenarios, str | LinkProfile):
        scenarios = [scenarios]
    out: dict[str, ProfileSpec] = {}
    for item in scenarios:
        profile = parse_scenario(item)
        key = scenario_key(profile)
        if key in out:
            raise ValueError(f"scenario {key!r} given twice")
        out[key] = profile
    if not out:
        raise ValueError("scenarios must not be empty; e.g. ['1/5'] or a preset from SCENARIOS")
    return out


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of ``RUN_DIR/metrics.jsonl`` (blank lines skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"no metrics.jsonl in {run_dir}: expected a run directory written by the runner"
        )
    rows = []
    with path.open() as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
    return rows


def _per_client(row: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if "per_client" not in row:
        raise ValueError(
            f"round {row.get('round', '?')}: metrics row has no 'per_client' list "
            "(client, upload_bytes, download_bytes, compute_s); cannot time its transfers"
        )
    per_client: list[Mapping[str, Any]] = row["per_client"]
    return per_client


def time_rounds(
    metrics: Sequence[Mapping[str, Any]],
    scenarios: Scenarios,
    *,
    backend: str = "analytic",
    compute_scale: float = 1.0,
    seed: int = 0,
    server_uplink_mbps: float | None = None,
    server_downlink_mbps: float | None = None,
) -> dict[str, list[RoundTiming]]:
    """Time every round of ``metrics`` under each scenario: ``{key: [RoundTiming, ...]}``."""
    specs = normalize_scenarios(scenarios)
    records = [_per_client(row) for row in metrics]
    client_ids = sorted({int(r["client"]) for rows in records for r in rows})
    out: dict[str, list[RoundTiming]] = {}
    for key, spec in specs.items():
        profiles = assign_profiles(client_ids, spec, seed)
        out[key] = [
            round_timing(
                rows,
                profiles,
                backend=backend,
                compute_scale=compute_scale,
                server_uplink_mbps=server_uplink_mbps,
                server_downlink_mbps=server_downlink_mbps,
            )
            for rows in records
        ]
        logger.debug(
            "network %s (%s): %d rounds, comm %.1f s, total %.1f s",
            key,
            backend,
            len(out[key]),
            sum(t.comm_s for t in out[key]),
            sum(t.round_s for t in out[key]),
        )
    return out


def _totals(timings: Sequence[RoundTiming]) -> dict[str, float | int]:
    totals: dict[str, float | int] = {
        k: float(sum(getattr(t, k) for t in timings)) for k in TOTAL_KEYS
    }
    totals["rounds"] = len(timings)
    return totals


def annotate_metrics(
    metrics: Sequence[Mapping[str, Any]],
    scenarios: Scenarios,
    backend: str = "analytic",
    **kwargs: Any,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, float | int]]]:
    """Add ``row["net"][key] = {comm_s, round_s, download_s, compute_s, upload_s, ...}``.

    Returns new rows (the input is not modified; an existing ``net`` entry is extended) and the
    per-scenario totals ``{key: {comm_s, round_s, download_s, compute_s, upload_s, rounds}}``
    for ``summary.json``. ``kwargs`` go to :func:`time_rounds` (``compute_scale``, ``seed``,
    ``server_uplink_mbps``, ``server_downlink_mbps``).
    """
    timed = time_rounds(metrics, scenarios, backend=backend, **kwargs)
    rows = [dict(row) for row in metrics]
    for i, row in enumerate(rows):
        net = dict(row.get("net", {}))
        for key, timings in timed.items():
            net[key] = timings[i].to_dict()
        row["net"] = net
    return rows, {key: _totals(timings) for key, timings in timed.items()}


def simulate_run(
    run_dir: str | Path,
    scenarios: Scenarios,
    backend: str = "analytic",
    compute_scale: float = 1.0,
    **kwargs: Any,
) -> dict[str, Any]:
    """Network time of an existing run, for ``ecolora netsim``.

    Returns ``{"run_dir", "method", "backend", "compute_scale", "rounds", "scenarios": {key:
    {"rounds": [{"round", "comm_s", "round_s", ...}], "total": {...}}}}``. ``kwargs`` go to
    :func:`time_rounds`.
    """
    metrics = read_metrics(run_dir)
    summary_path = Path(run_dir) / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    timed = time_rounds(metrics, scenarios, backend=backend, compute_scale=compute_scale, **kwargs)
    result: dict[str, Any] = {
        "run_dir": str(run_dir),
        "method": summary.get("method"),
        "backend": backend,
        "compute_scale": compute_scale,
        "rounds": len(metrics),
        "scenarios": {},
    }
    for key, timings in timed.items():
        per_round = [
            {"round": row.get("round", i + 1), **t.to_dict()}
            for i, (row, t) in enumerate(zip(metrics, timings, strict=True))
        ]
        result["scenarios"][key] = {"rounds": per_round, "total": _totals(timings)}
    return result


def time_to_target(
    metrics: Sequence[Mapping[str, Any]],
    scenario: str | LinkProfile,
    target_eval_loss: float,
) -> float | None:
    """Cumulative ``round_s`` up to and including the first round with ``eval_loss <= target``.

    ``metrics`` must be annotated (:func:`annotate_metrics`). Rounds without ``eval_loss`` still
    count towards the time. Returns ``None`` when the target is never reached.
    """
    key = scenario if isinstance(scenario, str) else scenario_key(scenario)
    elapsed = 0.0
    for row in metrics:
        net = row.get("net", {})
        if key not in net:
            raise ValueError(
                f"round {row.get('round', '?')} has no network timing for scenario {key!r} "
                f"(have {sorted(net)}); run annotate_metrics with that scenario first"
            )
        elapsed += float(net[key]["round_s"])
        loss = row.get("eval_loss")
        if loss is not None and float(loss) <= target_eval_loss:
            return elapsed
    return None
