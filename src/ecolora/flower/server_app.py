"""The Flower ServerApp: the same run as ``ecolora run``, with clients on SuperNodes.

``flwr run .`` (simulation or deployment) loads ``ecolora.flower.server_app:app``. It

1. resolves the run config into a :class:`~ecolora.config.RunConfig` (:mod:`ecolora.flower.settings`),
2. waits for ``fed.num_clients`` SuperNodes and asks each for its ``partition-id`` (a QUERY message),
3. runs the method's own loop (:func:`ecolora.sim.get_runner`: the synchronous rounds, FedBuff's
   event loop or HierFedLoRA's groups), the loop ``ecolora run`` runs, with each client job sent to
   its SuperNode (:class:`~ecolora.flower.executor.FlowerExecutor`). The loop builds the server's
   model, data and strategy (:func:`ecolora.sim.setup.build_setup`, the same seeds as in-process)
   and writes the run directory: config.yaml, metrics.jsonl, checkpoints/, adapter/, summary.json.

Run-config ``resume = true`` continues the run in ``out-dir`` from its last checkpoint, as
``ecolora run --resume`` does (methods with ``MethodSpec.flower_resume``): the checkpoint holds every
client's state, fetched from the SuperNodes before it is written, and the ServerApp sends each
client its state back with its next message (docs/flower.md, "Checkpoints and resume").
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from ecolora.config import RunConfig
from ecolora.flower.executor import FlowerExecutor
from ecolora.flower.records import PARTITION_QUERY, record_int
from ecolora.flower.settings import FlowerSettings, resolve_settings
from ecolora.network.ledger import ByteLedger
from ecolora.rundir import RunDirError, claim_run_dir
from ecolora.sim import get_runner
from ecolora.sim.async_runner import write_summary_extras
from ecolora.sim.setup import RunSetup

logger = logging.getLogger("ecolora")

__all__ = ["app", "discover_partitions", "route_logs_to_flower", "run_server"]

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point Flower calls; everything else is in :func:`run_server`."""
    route_logs_to_flower()
    run_server(grid, resolve_settings(context.run_config))


def run_server(grid: Grid, settings: FlowerSettings) -> dict[str, Any]:
    """Run (or, with ``settings.resume``, continue) a whole experiment over ``grid``; return the summary.

    summary.json gets ``flower_timing``: ``round_end_s``, seconds from the loop's start to the
    start of the first round still to run and then to each round's (server step's) end, the time
    spent waiting for replies and the number of client jobs.
    """
    config = settings.config
    _refuse_unsupported(config, settings.resume)
    out_dir = settings.out_dir.expanduser().resolve()
    # As `ecolora run`: never into a non-empty out-dir unless resuming it (before any waiting).
    try:
        claim_run_dir(out_dir, "resume" if settings.resume else "new")
    except RunDirError as exc:
        raise RunDirError(f"{exc} On Flower: run config `resume=true` continues a run in out-dir, "
                          f"`out-dir='...'` names another.") from exc
    node_of = discover_partitions(
        grid, config.fed.num_clients, settings.node_wait_s, settings.round_timeout_s
    )
    made: list[FlowerExecutor] = []
    start, round_ends = time.perf_counter(), []

    def executor(setup: RunSetup, ledger: ByteLedger) -> FlowerExecutor:
        made.append(FlowerExecutor(grid, node_of, setup, ledger, settings.round_timeout_s))
        return made[-1]

    def progress(event: str, done: int, total: int) -> None:
        if event == "round":
            round_ends.append(time.perf_counter() - start)

    runner = get_runner(config)
    summary: dict[str, Any] = runner(config, out_dir, progress=progress, resume=settings.resume, executor=executor)
    timing = {"round_end_s": round_ends, "wait_s": made[0].wait_s, "jobs": made[0].num_jobs}
    logger.info("Flower run finished: %s (%s)", out_dir, timing)
    return write_summary_extras(out_dir, summary, {"flower_timing": timing})


def _refuse_unsupported(config: RunConfig, resume: bool) -> None:
    """Options a method does not support on Flower (``MethodSpec.flower_faults`` and
    ``flower_resume``; in-process its loop warns) stop a Flower run."""
    spec = config.parsed_method.spec
    if resume and not spec.flower_resume:
        raise ValueError(f"{config.method} cannot resume a Flower run (its clients keep state the ServerApp "
                         "does not checkpoint); drop `resume` and start over, or resume the run in-process.")
    if spec.flower_faults:
        return
    faults = config.faults
    ignored = [name for name in ("dropout", "straggler", "upload_failure", "nonfinite") if getattr(faults, name)]
    if ignored:
        raise ValueError(
            f"{config.method} on Flower does not simulate client faults; unset faults."
            f"{', faults.'.join(ignored)} (real failures are handled: error replies are logged and left out)."
        )


def discover_partitions(
    grid: Grid, num_clients: int, wait_s: float, timeout_s: float
) -> dict[int, int]:
    """Map partition ids 0..num_clients-1 to node ids, asking every connected SuperNode.

    Raises:
        RuntimeError: fewer than ``num_clients`` nodes connected within ``wait_s`` seconds, or the
            nodes' partition ids do not cover 0..num_clients-1 exactly once.
    """
    deadline = time.monotonic() + wait_s
    node_ids = sorted(grid.get_node_ids())
    while len(node_ids) < num_clients and time.monotonic() < deadline:
        time.sleep(0.5)
        node_ids = sorted(grid.get_node_ids())
    if len(node_ids) < num_clients:
        raise RuntimeError(
            f"{len(node_ids)} SuperNodes connected after {wait_s:.0f} s, fed.num_clients needs {num_clients}; "
            "start more SuperNodes or lower fed.num_clients."
        )
    queries = [
        Message(
            content=RecordDict({PARTITION_QUERY: ConfigRecord({"ask": "partition-id"})}),
            dst_node_id=node,
            message_type=MessageType.QUERY,
        )
        for node in node_ids
    ]
    partitions: dict[int, int] = {}
    for reply in grid.send_and_receive(queries, timeout=timeout_s):
        node = reply.metadata.src_node_id
        if reply.has_error():
            logger.warning(
                "SuperNode %d did not report its partition: %s", node, reply.error.reason
            )
            continue
        pid = record_int(reply.content.config_records[PARTITION_QUERY]["partition-id"], "partition-id")
        if pid in partitions:
            raise RuntimeError(
                f"Partition {pid} is held by nodes {partitions[pid]} and {node}; give each SuperNode "
                "its own --node-config partition-id."
            )
        partitions[pid] = node
    missing = sorted(set(range(num_clients)) - set(partitions))
    if missing:
        raise RuntimeError(
            f"No SuperNode holds partition(s) {missing}; partitions seen: {sorted(partitions)}."
        )
    extra = sorted(set(partitions) - set(range(num_clients)))
    if extra:
        logger.warning(
            "SuperNodes with partition(s) %s >= fed.num_clients=%d stay idle", extra, num_clients
        )
    return {pid: partitions[pid] for pid in range(num_clients)}


def route_logs_to_flower() -> None:
    """Show ecolora's INFO logs in Flower's log stream (``flwr run --stream``, ``flwr log``)."""
    ours, flwr_logger = logging.getLogger("ecolora"), logging.getLogger("flwr")
    ours.setLevel(logging.INFO)
    for handler in flwr_logger.handlers:
        if handler not in ours.handlers:
            ours.addHandler(handler)
    ours.propagate = False if ours.handlers else ours.propagate
