"""The synchronous round loop, in-process or on Flower: sample, local work, streaming aggregation.

Round t: ``fed.clients_per_round`` clients are sampled (:func:`~ecolora.sim.runner.sample_clients`,
their order is their position j); the strategy configures one message per client; every client's
job starts at once on the executor (:mod:`ecolora.sim.executor`: in this process, or on Flower
SuperNodes); the replies are received in sampling order, each under its seeded fault
(:mod:`ecolora.sim.faults`), validated and folded into the aggregate, then dropped; the round's
record is evaluated and written, and a checkpoint saved when due (:class:`~ecolora.sim.runner.RunJournal`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ecolora.config import RunConfig
from ecolora.network.ledger import ByteLedger
from ecolora.sim.executor import (
    ClientExecutor,
    ExecutorFactory,
    InProcessExecutor,
    Job,
    receive_reply,
)
from ecolora.sim.faults import draw_fault, fault_reply, runtime_fault
from ecolora.sim.runner import ProgressHook, RunJournal, finish_round, sample_clients
from ecolora.sim.setup import build_setup
from ecolora.strategies.base import Message, Strategy
from ecolora.strategies.validation import reason_code

logger = logging.getLogger("ecolora")

__all__ = ["play_round", "run_sync"]

_LOST = ("no_reply", "error")  # reply codes of a client that is dropped, not rejected


def run_sync(
    config: RunConfig, out_dir: Path, progress: ProgressHook | None = None, resume: bool = False,
    executor: ExecutorFactory | None = None,
) -> dict[str, Any]:
    """The synchronous round loop (:func:`ecolora.sim.run_experiment` of a ``sync`` method).

    ``executor`` builds where the clients work (:mod:`ecolora.sim.executor`; default: in this
    process, Flower's ServerApp passes its SuperNodes); sampling, faults, aggregation, records
    and checkpoints happen here either way. Before a checkpoint the executor hands over every
    client's state (``borrow``: on Flower the SuperNodes send it), so the checkpoint holds it;
    after a resume it sends each client its restored state with its next job (``lend``).
    """
    journal = RunJournal(config, out_dir, resume)
    setup = build_setup(config)
    ledger = ByteLedger()
    work = (executor or InProcessExecutor)(setup, ledger)
    rng = np.random.default_rng(config.seed)
    fed = config.fed
    done = journal.begin(setup, rng, ledger)
    if journal.restored is not None:  # the restored client states go back with the next messages
        work.lend(range(fed.num_clients))
    if progress:
        progress("round", done, fed.rounds)  # the rounds already done: the loop starts
    for server_round in range(done + 1, fed.rounds + 1):
        # ---- sample, then local work and streaming aggregation, each message through bytes ----
        sampled = sample_clients(rng, fed.num_clients, fed.clients_per_round)
        arrived, per_client, strategy_metrics = play_round(config, setup.strategy, work, ledger, server_round,
                                                           sampled, progress)  # fmt: skip
        # ---- evaluate, record, checkpoint ------------------------------------------------------
        journal.append(finish_round(
            config, setup, ledger, server_round, sampled, arrived, per_client, strategy_metrics
        ))
        journal.checkpoint(server_round, fed.checkpoint_every, setup, rng, ledger, lambda: _client_states(work, fed.num_clients))
        if progress:
            progress("round", server_round, fed.rounds)
    return journal.finish(setup, ledger)


def _client_states(work: ClientExecutor, num_clients: int) -> dict[str, Any]:
    """Before a checkpoint: every client's current state into the setup's clients (on Flower the
    SuperNodes send theirs), which the checkpoint then holds; no loop state of its own."""
    work.borrow(range(num_clients))
    return {}


def play_round(
    config: RunConfig,
    strategy: Strategy,
    work: ClientExecutor,
    ledger: ByteLedger,
    server_round: int,
    sampled: list[int],
    progress: ProgressHook | None,
) -> tuple[dict[int, Message], list[dict[str, Any]], dict[str, Any]]:
    """One round's jobs, faults and streaming aggregation, in sampling order.

    Every sampled client's job starts at once; the replies are received and folded into the
    aggregate one at a time in sampling order (running sums in another order would differ in the
    last bits), each dropped after folding. Returns the accepted replies without tensors (for the
    record), the per-client rows and the strategy's metrics plus ``dropped: [{client, reason}]``.
    """
    messages = strategy.configure_round(server_round, sampled)
    faults = {cid: draw_fault(config.faults, config.seed, server_round, cid) for cid in sampled}
    jobs = [Job(cid, messages.pop(cid), as_seen=runtime_fault(faults[cid])) for cid in sampled]
    tickets = work.start(server_round, jobs)
    strategy.aggregate_begin(server_round)
    arrived: dict[int, Message] = {}
    per_client: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    for done, (job, ticket) in enumerate(zip(jobs, tickets, strict=True)):
        got = work.wait([ticket])[ticket]
        cid = job.client
        row: dict[str, Any] = {"client": cid, "compute_s": got.metrics.get("compute_s", 0.0),
                               "train_loss": got.metrics.get("train_loss"), **got.timing}
        got, lost = fault_reply(got, faults[cid])
        message, reason = receive_reply(strategy, ledger, server_round, got)
        if lost is None and message is None and reason_code(reason or "") in _LOST:
            lost = reason
        if lost is not None:
            dropped.append({"client": cid, "reason": lost})
            row["status"] = f"dropped: {lost}"
        elif message is None:
            strategy.aggregate_reject(cid, reason or "payload: nothing decodable arrived")
            row["status"] = f"rejected: {reason}"
        elif (reason := strategy.aggregate_add(cid, message)) is not None:
            row["status"] = f"rejected: {reason}"
        else:
            arrived[cid] = Message(config=message.config, num_examples=message.num_examples, metrics=message.metrics)
        per_client.append(row)
        if progress:
            progress("client", done + 1, len(sampled))
    if dropped:
        logger.info("round %d: %d client(s) dropped: %s", server_round, len(dropped), dropped)
    return arrived, per_client, {**strategy.aggregate_end(server_round), "dropped": dropped}
