"""``ecolora compare``: runs side by side in the paper's Table 1 / Table 3 form."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ecolora.methods import parse_method
from ecolora.network import time_to_target
from ecolora.network.runs import TOTAL_KEYS, annotate_metrics, normalize_scenarios
from ecolora.report.runs import load_run, run_labels

__all__ = ["compare_runs", "format_markdown", "format_netsim"]

def compare_runs(
    run_dirs: Sequence[Path],
    *,
    baseline: Path | None = None,
    target_eval_loss: float | None = None,
    scenario: str = "1/5",
) -> list[dict[str, Any]]:
    """One row per run: quality, params and bytes (up/total), time under ``scenario``, ratios."""
    if not run_dirs:
        raise ValueError("Give at least one run directory.")
    rows = []
    for run_dir in run_dirs:
        metrics, summary = load_run(Path(run_dir))
        if not summary:
            raise ValueError(f"{run_dir} has no summary.json (unfinished run?).")
        timed, totals = _timings(metrics, summary, scenario, run_dir)
        key = next(iter(totals))
        row: dict[str, Any] = {
            "run": str(run_dir),
            "method": summary["method"],
            "rounds": summary["rounds_completed"],
            "final_eval_loss": summary.get("final_eval_loss"),
            "upload_params_m": summary["upload_params"] / 1e6,
            "total_params_m": (summary["upload_params"] + summary["download_params"]) / 1e6,
            "upload_mb": summary["upload_bytes"] / 1e6,
            "total_mb": (summary["upload_bytes"] + summary["download_bytes"]) / 1e6,
            "scenario": key,
            "upload_s": totals[key]["upload_s"],
            "comm_s": totals[key]["comm_s"],
            "train_s": totals[key]["round_s"],
        }
        for name, value in (summary.get("eval_suites") or {}).items():
            if isinstance(value, dict) and "acc" in value:
                row[f"{name}_acc"] = value["acc"]
        if target_eval_loss is not None:
            row.update(_to_target(timed, key, target_eval_loss, time_to_target))
        rows.append(row)
    for row, label in zip(rows, run_labels(run_dirs), strict=True):
        row["label"] = label
    base = rows[0]
    if baseline is not None:
        matches = [r for r in rows if Path(r["run"]) == Path(baseline)]
        if not matches:
            raise ValueError(f"Baseline {baseline} is not among the compared runs.")
        base = matches[0]
    for row in rows:
        for col in ("upload_params_m", "total_params_m", "upload_mb", "total_mb", "comm_s", "train_s"):
            row[f"{col}_vs_base"] = row[col] / base[col] if base[col] else None
    return rows


def _timings(metrics: list[dict[str, Any]], summary: Mapping[str, Any], scenario: str,
             run_dir: Path) -> tuple[list[dict[str, Any]], dict[str, dict[str, float | int]]]:
    """Round times under ``scenario``: the run's own ``net`` entries when every round has one
    (FedBuff's event loop and HierFedLoRA's group rounds time themselves; a synchronous run's
    entries come from the same model as a recomputation), else the synchronous-round model over
    the recorded bytes and compute times."""
    key = next(iter(normalize_scenarios([scenario])))
    if metrics and all(key in m.get("net", {}) for m in metrics):
        totals: dict[str, float | int] = {k: float(sum(m["net"][key].get(k, 0.0) for m in metrics)) for k in TOTAL_KEYS}
        totals["rounds"] = len(metrics)
        return metrics, {key: totals}
    method = str(summary.get("method", ""))
    if _own_timing(method):
        base = parse_method(method).spec.name
        have = sorted({k for m in metrics for k in m.get("net", {})})
        raise ValueError(f"{run_dir}: {base} times its rounds itself and has no timing for {key} (it has {have}); "
                         f"compare it under one of those, or re-run it with that link (fedbuff.link / network.scenarios).")
    return annotate_metrics(metrics, [scenario])


def _to_target(metrics: list[dict[str, Any]], key: str, target: float, time_to_target: Any) -> dict[str, Any]:
    up_p = tot_p = up_b = tot_b = 0
    for m in metrics:
        up_p += m["upload_params"]
        tot_p += m["upload_params"] + m["download_params"]
        up_b += m["upload_bytes"]
        tot_b += m["upload_bytes"] + m["download_bytes"]
        if m["eval_loss"] is not None and m["eval_loss"] <= target:
            return {
                "target_round": m["round"], "target_total_params_m": tot_p / 1e6, "target_upload_params_m": up_p / 1e6,
                "target_total_mb": tot_b / 1e6, "target_upload_mb": up_b / 1e6,
                "target_train_s": time_to_target(metrics, key, target),
            }
    return {"target_round": None, "target_total_params_m": None, "target_upload_params_m": None,
            "target_total_mb": None, "target_upload_mb": None, "target_train_s": None}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_markdown(rows: list[dict[str, Any]]) -> str:
    """A markdown table: quality, params, bytes, time and ratios against the baseline."""
    cols = [
        ("label", "method"), ("final_eval_loss", "eval loss"), ("upload_params_m", "up params (M)"),
        ("total_params_m", "total params (M)"), ("upload_mb", "up MB"), ("total_mb", "total MB"),
        ("upload_mb_vs_base", "up vs base"), ("total_mb_vs_base", "total vs base"),
        ("upload_s", "upload s"), ("comm_s", "comm s"), ("train_s", "train s"), ("train_s_vs_base", "train vs base"),
    ]
    extra = sorted({k for r in rows for k in r if k.endswith("_acc")})
    cols += [(k, k) for k in extra]
    if any("target_round" in r for r in rows):
        cols += [("target_round", "rounds to target"), ("target_total_params_m", "params to target (M)"),
                 ("target_total_mb", "MB to target"), ("target_train_s", "time to target s")]
    scen = rows[0].get("scenario", "") if rows else ""
    lines = [f"Times under {scen} Mbps (uplink/downlink) links, analytic TCP model.", "",
             "| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k)) for k, _ in cols) + " |")
    return "\n".join(lines)


def format_netsim(result: dict[str, Any]) -> str:
    lines = [f"{result.get('method') or result['run_dir']} ({result['backend']} backend, {result['rounds']} rounds)", "",
             "| scenario | upload s | download s | comm s | compute s | total train s |", "|---|---|---|---|---|---|"]
    for key, data in result["scenarios"].items():
        t = data["total"]
        lines.append(f"| {key} | {t['upload_s']:.1f} | {t['download_s']:.1f} | {t['comm_s']:.1f} | {t['compute_s']:.1f} | {t['round_s']:.1f} |")
    return "\n".join(lines)


def _own_timing(method: str) -> bool:
    """Whether a run's loop times its rounds itself (every loop but the synchronous one)."""
    try:
        return parse_method(method).spec.loop != "sync"
    except ValueError:  # a run of a method this installation does not know
        return False
