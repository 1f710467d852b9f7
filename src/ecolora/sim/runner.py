"""The in-process runner: K simulated clients, one base model, every message through real bytes.

Run directory contract (later tools rely on it):
    config.yaml      the fully resolved config
    metrics.jsonl    one JSON object per round (round, clients, train_loss, eval_loss, bytes, ...)
    summary.json     totals and final quality
    adapter/         the final global LoRA in PEFT format
    plots/           loss and cumulative-bytes PNGs
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ecolora.config import RunConfig
from ecolora.network.ledger import ByteLedger
from ecolora.sim.runtime import SimClient
from ecolora.sim.setup import RunSetup, build_setup
from ecolora.sim.transport import InProcessTransport
from ecolora.strategies.base import Message

logger = logging.getLogger("ecolora")

__all__ = [
    "ProgressHook",
    "evaluate_global",
    "finish_round",
    "finish_run",
    "run_experiment",
    "sample_clients",
    "start_run_dir",
]

ProgressHook = Callable[[str, int, int], None]  # (event, done, total): "round" / "client"


def run_experiment(
    config: RunConfig, out_dir: Path, progress: ProgressHook | None = None
) -> dict[str, Any]:
    """Run one federated fine-tuning experiment and write its run directory; return the summary."""
    wall_start = time.perf_counter()
    out_dir = Path(out_dir)
    metrics_path = start_run_dir(config, out_dir)
    setup = build_setup(config)
    ledger = ByteLedger()
    transport = InProcessTransport(setup.strategy, ledger)
    rng = np.random.default_rng(config.seed)
    fed = config.fed
    history: list[dict[str, Any]] = []
    initial_eval = evaluate_global(setup)
    logger.info("Initial eval loss of the global adapter: %.4f", initial_eval)

    for server_round in range(1, fed.rounds + 1):
        # ---- sample and configure ------------------------------------------------------------
        sampled = sample_clients(rng, fed.num_clients, fed.clients_per_round)
        messages = setup.strategy.configure_round(server_round, sampled)
        replies: dict[int, Message] = {}
        per_client: list[dict[str, Any]] = []
        # ---- local work, each message through bytes -------------------------------------------
        for done, cid in enumerate(sampled):
            client: SimClient = setup.clients[cid]
            received = transport.send(server_round, cid, "down", messages[cid])
            reply = setup.strategy.client_round(client, received)
            replies[cid] = transport.send(server_round, cid, "up", reply)
            per_client.append(
                {
                    "client": cid,
                    "compute_s": reply.metrics.get("compute_s", 0.0),
                    "train_loss": reply.metrics.get("train_loss"),
                }
            )
            if progress:
                progress("client", done + 1, len(sampled))
        # ---- aggregate and evaluate -----------------------------------------------------------
        strategy_metrics = setup.strategy.aggregate_round(server_round, replies)
        record = finish_round(
            config, setup, ledger, server_round, sampled, replies, per_client, strategy_metrics
        )
        history.append(record)
        with metrics_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if progress:
            progress("round", server_round, fed.rounds)

    return finish_run(
        config, setup, out_dir, history, ledger, initial_eval, time.perf_counter() - wall_start
    )


# ---- pieces shared with the Flower ServerApp (ecolora.flower), which writes the same contract ------
def sample_clients(rng: np.random.Generator, num_clients: int, clients_per_round: int) -> list[int]:
    """One round's participants, drawn without replacement; their order is their position j."""
    return [int(c) for c in rng.choice(num_clients, size=clients_per_round, replace=False)]


def start_run_dir(config: RunConfig, out_dir: Path) -> Path:
    """Create ``out_dir``, write config.yaml and an empty metrics.jsonl; return the latter's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(
        yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8"
    )
    metrics_path = out_dir / "metrics.jsonl"
    metrics_path.write_text("", encoding="utf-8")
    return metrics_path


def evaluate_global(setup: RunSetup) -> float:
    """Held-out loss of the strategy's current global model."""
    setup.strategy.prepare_eval(setup.eval_client)
    with torch.no_grad():
        return setup.eval_fn()


def finish_round(
    config: RunConfig,
    setup: RunSetup,
    ledger: ByteLedger,
    server_round: int,
    sampled: list[int],
    replies: dict[int, Message],
    per_client: list[dict[str, Any]],
    strategy_metrics: dict[str, Any],
) -> dict[str, Any]:
    """Evaluate when due, build the round's metrics.jsonl record (bytes from ``ledger``) and log it."""
    fed = config.fed
    due = fed.eval_every > 0 and server_round % fed.eval_every == 0
    eval_loss = evaluate_global(setup) if due or server_round == fed.rounds else None
    record = _round_record(
        server_round, sampled, replies, per_client, ledger, eval_loss, strategy_metrics
    )
    if eval_loss is not None:
        from ecolora.sim.setup import eval_extra

        record.update(eval_extra)
    suites_due = config.eval.suites and (
        server_round == fed.rounds
        or (config.eval.every > 0 and server_round % config.eval.every == 0)
    )
    if suites_due:
        record["eval_suites"] = _run_suites(setup, config)
    record = _with_network_time(record, config)
    _log_round(record, fed.rounds)
    return record


def finish_run(
    config: RunConfig,
    setup: RunSetup,
    out_dir: Path,
    history: list[dict[str, Any]],
    ledger: ByteLedger,
    initial_eval: float,
    wall_s: float,
) -> dict[str, Any]:
    """Save the global adapter, summary.json and plots; return the summary."""
    setup.save_adapter(out_dir / "adapter")
    summary = _summary(config, setup, history, ledger, initial_eval, wall_s)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    try:
        from ecolora.report.plots import plot_run

        plot_run(out_dir)
    except Exception as exc:  # plots must never lose a finished run
        logger.warning("Could not draw plots for %s: %s", out_dir, exc)
    return summary


def _round_record(
    server_round: int,
    sampled: list[int],
    replies: dict[int, Message],
    per_client: list[dict[str, Any]],
    ledger: ByteLedger,
    eval_loss: float | None,
    strategy_metrics: dict[str, Any],
) -> dict[str, Any]:
    bytes_by_client = ledger.per_client(server_round)
    for row in per_client:
        row.update(bytes_by_client.get(row["client"], {}))
    weights = [replies[c].num_examples for c in replies]
    losses = [replies[c].metrics.get("train_loss", math.nan) for c in replies]
    train_loss = float(np.average(losses, weights=weights)) if replies else None
    return {
        "round": server_round,
        "clients": sampled,
        "train_loss": train_loss,
        "eval_loss": eval_loss,
        **ledger.round_totals(server_round),
        "compute_s": float(sum(r["compute_s"] for r in per_client)),
        "per_client": per_client,
        **{k: v for k, v in strategy_metrics.items()},
    }


def _run_suites(setup: RunSetup, config: RunConfig) -> dict[str, Any]:
    """Score the global adapter on each configured suite (multiple choice, preference, ...)."""
    from ecolora.eval import run_suite

    setup.strategy.prepare_eval(setup.eval_client)
    scores = {}
    with torch.no_grad():
        for name in config.eval.suites:
            result = run_suite(
                name,
                setup.shared.model,
                setup.tokenizer,
                limit=config.eval.limit,
                batch_size=config.eval.batch_size,
                beta=config.train.dpo_beta,
            )
            scores[name] = {k: v for k, v in result.items() if k != "subsets"}
            logger.info(
                "suite %s: %s",
                name,
                {k: v for k, v in scores[name].items() if isinstance(v, float)},
            )
    return scores


def _with_network_time(record: dict[str, Any], config: RunConfig) -> dict[str, Any]:
    """Add per-scenario ``net`` timings (download + compute + upload, slowest client)."""
    if not config.network.scenarios:
        return record
    from ecolora.network import annotate_metrics

    rows, _ = annotate_metrics(
        [record],
        config.network.scenarios,
        backend=config.network.backend,
        compute_scale=config.network.compute_scale,
        seed=config.seed,
    )
    return rows[0]


def _network_totals(history: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    totals: dict[str, dict[str, float]] = {}
    for record in history:
        for key, timing in record.get("net", {}).items():
            acc = totals.setdefault(
                key, {"comm_s": 0.0, "round_s": 0.0, "upload_s": 0.0, "download_s": 0.0}
            )
            for name in acc:
                acc[name] += float(timing.get(name, 0.0))
    return totals


def _log_round(record: dict[str, Any], total_rounds: int) -> None:
    ev = record["eval_loss"]
    logger.info(
        "round %d/%d | clients %s | train %.4f | eval %s | up %.3f MB | down %.3f MB",
        record["round"],
        total_rounds,
        record["clients"],
        record["train_loss"] or math.nan,
        f"{ev:.4f}" if ev is not None else "-",
        record["upload_bytes"] / 1e6,
        record["download_bytes"] / 1e6,
    )


def _summary(
    config: RunConfig,
    setup: RunSetup,
    history: list[dict[str, Any]],
    ledger: ByteLedger,
    initial_eval: float,
    wall_s: float,
) -> dict[str, Any]:
    evals = [r["eval_loss"] for r in history if r["eval_loss"] is not None]
    return {
        "method": config.method,
        "model": config.model.name,
        "dataset": config.data.source,
        "objective": config.train.objective,
        "seed": config.seed,
        "num_clients": config.fed.num_clients,
        "clients_per_round": config.fed.clients_per_round,
        "rounds_completed": len(history),
        "initial_eval_loss": initial_eval,
        "final_eval_loss": evals[-1] if evals else None,
        "best_eval_loss": min(evals) if evals else None,
        **ledger.totals(),
        "lora_params": setup.lora_numel,
        "num_train_examples": setup.num_train_examples,
        "num_eval_examples": setup.num_eval_examples,
        "compute_s": float(sum(r["compute_s"] for r in history)),
        "network": _network_totals(history),
        "eval_suites": next(
            (r["eval_suites"] for r in reversed(history) if "eval_suites" in r), {}
        ),
        "wall_s": wall_s,
    }
