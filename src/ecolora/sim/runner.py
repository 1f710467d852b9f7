"""The in-process runner: K simulated clients, one base model, every message through real bytes.

Run directory contract (later tools rely on it):
    config.yaml      the fully resolved config
    metrics.jsonl    one JSON object per round (round, clients, train_loss, eval_loss, bytes, ...)
    summary.json     totals and final quality
    adapter/         the final global LoRA in PEFT format
    plots/           loss and cumulative-bytes PNGs
    checkpoints/     the last complete checkpoints (``ecolora run --resume DIR``)

Each round's record also lists ``dropped: [{client, reason}]`` (client faults, ``faults.*``) and
``rejected: [{client, reason}]`` (updates that failed validation or decoding), and sets
``no_update`` when nothing usable arrived (the global model is then unchanged). See
docs/reliability.md.
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

from ecolora.client.shapes import model_note
from ecolora.config import RunConfig
from ecolora.eval.suites import run_suite
from ecolora.network.ledger import ByteLedger
from ecolora.network.runs import annotate_metrics
from ecolora.report.logs import RoundLog, check_round_logs, open_round_logs
from ecolora.report.plots import plot_run
from ecolora.rundir import RunStopped, stop_requested
from ecolora.sim.checkpoint import (
    CHECKPOINT_DIR,
    capture_run,
    checkpoint_due,
    config_json,
    restore_run,
    resume_state,
    rewrite_metrics,
    save_checkpoint,
)
from ecolora.sim.setup import RunSetup
from ecolora.strategies.base import Message

logger = logging.getLogger("ecolora")

__all__ = [
    "ProgressHook",
    "RunJournal",
    "evaluate_global",
    "finish_round",
    "finish_run",
    "sample_clients",
    "start_run_dir",
]

ProgressHook = Callable[[str, int, int], None]  # (event, done, total): "round" / "client"


class RunJournal:
    """A run directory as every training loop keeps it (synchronous, hierarchical, asynchronous).

    It starts the directory (config.yaml, empty metrics.jsonl) or, with ``resume``, finds its last
    complete checkpoint; :meth:`begin` then evaluates the initial global model or restores the
    checkpoint; :meth:`append` writes each round's record, :meth:`checkpoint` saves when due, and
    :meth:`finish` writes summary.json, the adapter and the plots. Wall time adds up over resumes.
    """

    def __init__(self, config: RunConfig, out_dir: Path, resume: bool = False) -> None:
        self._wall_start = time.perf_counter()
        self.config, self.out_dir = config, Path(out_dir)
        check_round_logs(config)  # a missing extra fails before the directory exists
        self.restored = resume_state(config, self.out_dir) if resume else None
        self.metrics_path = self.out_dir / "metrics.jsonl"  # the directory starts in begin()
        self._logs: list[RoundLog] = []  # TensorBoard, W&B (config.log)
        self.history: list[dict[str, Any]] = []
        self.initial_eval = math.nan
        self._prior_wall_s = 0.0
        self._unit = "round"

    def begin(self, setup: RunSetup, sampler: np.random.Generator, ledger: ByteLedger, unit: str = "round") -> int:
        """Evaluate the initial global model, or restore the checkpoint; return the rounds already done."""
        state, self._unit = self.restored, unit
        if state is None:
            start_run_dir(self.config, self.out_dir)  # only now: a failed setup leaves nothing
            self._logs = open_round_logs(self.config, self.out_dir, self.history)
            self.initial_eval = evaluate_global(setup)
            logger.info("Initial eval loss of the global adapter: %.4f", self.initial_eval)
            return 0
        restore_run(state, setup, sampler, ledger)
        self.history, self.initial_eval = list(state["history"]), float(state["initial_eval"])
        self._prior_wall_s = float(state["wall_s"])
        rewrite_metrics(self.metrics_path, self.history)
        done = int(state["round"])
        self._logs = open_round_logs(self.config, self.out_dir, self.history)
        logger.info("Resuming %s after %s %d of %d", self.out_dir, unit, done, self.config.fed.rounds)
        return done

    def append(self, record: dict[str, Any]) -> None:
        """Add one round's record to the history and to metrics.jsonl."""
        self.history.append(record)
        with self.metrics_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        for log in self._logs:
            log.log_round(record, self.wall_s)

    def checkpoint(self, step: int, every: int, setup: RunSetup, sampler: np.random.Generator,
                   ledger: ByteLedger, loop_state: Callable[[], dict[str, Any]] | None = None) -> None:
        """Save the run after ``step`` if a checkpoint is due; ``loop_state()`` adds the loop's own
        state (called only then: FedBuff's waits for the jobs in flight). After a stop request
        (:func:`~ecolora.rundir.request_stop`) it saves if checkpoints are on, then raises
        :class:`~ecolora.rundir.RunStopped`."""
        stop = stop_requested() and step < self.config.fed.rounds
        if checkpoint_due(step, every, self.config.fed.rounds) or (stop and every > 0):
            extra = {"config_json": config_json(self.config), "initial_eval": self.initial_eval,
                     "wall_s": self.wall_s, **(loop_state() if loop_state else {})}
            save_checkpoint(self.out_dir / CHECKPOINT_DIR, step,
                            capture_run(setup, step, sampler, ledger, self.history, extra))
        if stop:
            raise RunStopped(step, self._unit, checkpointed=every > 0)

    @property
    def wall_s(self) -> float:
        """Seconds spent on this run, over all its resumes."""
        return self._prior_wall_s + time.perf_counter() - self._wall_start

    def finish(self, setup: RunSetup, ledger: ByteLedger) -> dict[str, Any]:
        """Write summary.json, the adapter and the plots (:func:`finish_run`); return the summary."""
        for log in self._logs:
            log.close()
        return finish_run(self.config, setup, self.out_dir, self.history, ledger, self.initial_eval, self.wall_s)


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
        "model_note": model_note(config.model.name),  # "shape model: timing only" for shape models
        "placement": setup.shared.trainer.placement.describe(),
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
