"""A Flower ``Strategy`` that runs any ecolora algorithm (FedIT, FFA-LoRA, FLoRA, +EcoLoRA).

Flower owns the round loop (``flwr.serverapp.strategy.Strategy.start``: configure_train ->
send_and_receive -> aggregate_train -> configure_evaluate -> ... -> evaluate_fn); this class only
fills its hooks with the engine-independent code the in-process runner calls:

* ``configure_train``: sample clients exactly as :func:`ecolora.sim.runner.sample_clients` (same
  seeded generator, same draw, position order kept), ask the ecolora strategy for one message per
  client (``configure_round``), pack each with the strategy's codec and wrap it in a *fresh*
  RecordDict addressed to the SuperNode that holds that partition. The ledger records each
  message's ``len(payload) + len(header)``.
* ``aggregate_train``: record each reply's size, decode it and stream it into the strategy in
  sampling order (``aggregate_begin`` / ``aggregate_add`` / ``aggregate_reject`` /
  ``aggregate_end``), which validates every update (:mod:`ecolora.strategies.validation`): a
  malformed or mismatched reply is rejected with its reason and the round goes on without it.
* ``evaluate_round`` (passed as ``evaluate_fn``): evaluate the global adapter and write the round's
  metrics.jsonl record with :func:`ecolora.sim.runner.finish_round`, as the in-process runner does.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy as FlowerBaseStrategy

from ecolora.config import RunConfig
from ecolora.flower.records import (
    METRICS_RECORD,
    PayloadError,
    decode_message,
    encode_message,
    from_recorddict,
    to_recorddict,
)
from ecolora.network.ledger import ByteLedger
from ecolora.sim.runner import evaluate_global, finish_round, sample_clients
from ecolora.sim.setup import RunSetup
from ecolora.sim.transport import count_params, safe_count_params
from ecolora.strategies.base import Message as EcoMessage

logger = logging.getLogger("ecolora")

__all__ = ["EcoloraFlowerStrategy"]


class EcoloraFlowerStrategy(FlowerBaseStrategy):
    """Flower's Message-API strategy over ``setup.strategy``; writes ``metrics.jsonl`` per round.

    Args:
        config: the resolved run config (both apps build it from the same run config).
        setup: the server's :func:`ecolora.sim.setup.build_setup` (strategy, eval model, adapter).
        node_of: partition id (ecolora client id) -> Flower node id.
        metrics_path: the run directory's metrics.jsonl (:func:`ecolora.sim.runner.start_run_dir`).
    """

    def __init__(
        self, config: RunConfig, setup: RunSetup, node_of: Mapping[int, int], metrics_path: Path
    ) -> None:
        self.config = config
        self.setup = setup
        self.strategy = setup.strategy
        self.node_of = dict(node_of)
        self.client_of = {node: cid for cid, node in self.node_of.items()}
        self.metrics_path = metrics_path
        self.ledger = ByteLedger()
        self.rng = np.random.default_rng(config.seed)
        self.history: list[dict[str, Any]] = []
        self.initial_eval: float | None = None
        self._round: dict[str, Any] = {}

    def summary(self) -> None:
        logger.info(
            "ecolora strategy %s over %d SuperNodes (partition -> node: %s)",
            self.strategy.name, len(self.node_of), self.node_of,
        )  # fmt: skip

    # ---- train -------------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One fresh Message per sampled client: codec payload Array + JSON header (module doc)."""
        del arrays, config  # the global state lives in the ecolora strategy, not in Flower records
        start = time.perf_counter()
        fed = self.config.fed
        sampled = sample_clients(self.rng, fed.num_clients, fed.clients_per_round)
        messages = self.strategy.configure_round(server_round, sampled)
        out = []
        for cid in sampled:
            wire = encode_message(self.strategy, messages[cid], "down")
            self.ledger.record(
                server_round, cid, "down", wire.num_bytes, count_params(wire.payload)
            )
            content = to_recorddict(wire, messages[cid].config, partition_id=cid)
            out.append(Message(content=content, dst_node_id=self.node_of[cid],
                               message_type=MessageType.TRAIN, group_id=str(server_round)))  # fmt: skip
        now = time.perf_counter()
        self._round = {
            "sampled": sampled,
            "start": start,
            "configure_s": now - start,
            "sent_at": now,
        }
        return out

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Decode the replies and stream them into the strategy in sampling order."""
        received_at = time.perf_counter()
        sampled: list[int] = self._round["sampled"]
        by_client: dict[int, Message] = {}
        for reply in replies:
            cid = self.client_of.get(reply.metadata.src_node_id)
            if cid is None or cid not in sampled or cid in by_client:
                logger.warning("round %d: ignoring an unexpected reply from node %d",
                               server_round, reply.metadata.src_node_id)  # fmt: skip
                continue
            by_client[cid] = reply
        # Replies arrive in any order; fold them in sampling order, as the in-process runner does
        # (running sums in another order would differ in the last bits).
        self.strategy.aggregate_begin(server_round)
        arrived: dict[int, EcoMessage] = {}
        rows: dict[int, dict[str, Any]] = {}
        dropped: list[dict[str, Any]] = []
        for cid in sampled:
            rows[cid] = row = {"client": cid, "compute_s": 0.0, "train_loss": None}
            reply = by_client.pop(cid, None)
            if reply is None or reply.has_error():
                reason = (
                    "no_reply: none within round-timeout"
                    if reply is None
                    else f"error: {reply.error.reason}"
                )
                dropped.append({"client": cid, "reason": reason})
                row["status"] = f"dropped: {reason}"
                logger.warning("round %d: client %d dropped: %s", server_round, cid, reason)
                continue
            message, reason = self._decode(server_round, cid, reply)
            if message is not None:
                row.update(
                    compute_s=message.metrics.get("compute_s", 0.0),
                    train_loss=message.metrics.get("train_loss"),
                )
                reason = self.strategy.aggregate_add(cid, message)
                if reason is None:
                    arrived[cid] = EcoMessage(config=message.config, num_examples=message.num_examples,
                                              metrics=message.metrics)  # fmt: skip
            else:
                self.strategy.aggregate_reject(cid, reason)
            if reason is not None:
                row["status"] = f"rejected: {reason}"
            row.update(_client_timing(reply))
        strategy_metrics = {**self.strategy.aggregate_end(server_round), "dropped": dropped}
        self._round.update(arrived=arrived, rows=rows, metrics=strategy_metrics,
                           wait_s=received_at - self._round["sent_at"],
                           aggregate_s=time.perf_counter() - received_at)  # fmt: skip
        global_lora = self.strategy.global_lora()
        summary = {"num-accepted": len(arrived), "num-rejected": len(strategy_metrics.get("rejected", [])),
                   "num-dropped": len(dropped)}  # fmt: skip
        return (ArrayRecord(global_lora) if global_lora else ArrayRecord()), MetricRecord(summary)

    def _decode(
        self, server_round: int, cid: int, reply: Message
    ) -> tuple[EcoMessage | None, str | None]:
        """Record the reply's bytes and decode it; (None, "<code>: <why>") when that fails."""
        try:
            wire, partition = from_recorddict(reply.content)
        except PayloadError as exc:
            return None, f"payload: {exc}"
        self.ledger.record(
            server_round, cid, "up", wire.num_bytes, safe_count_params(wire.payload)
        )
        if partition != cid:
            return (
                None,
                f"config: reply is for partition {partition}, sent by the node of partition {cid}",
            )
        try:
            return decode_message(self.strategy, wire), None
        except PayloadError as exc:
            return None, f"payload: {exc}"

    # ---- evaluation and records ----------------------------------------------------------------
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """No federated evaluation: the server evaluates the global adapter (``evaluate_round``)."""
        return []

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return None

    def evaluate_round(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """``evaluate_fn`` of ``Strategy.start``: initial eval (round 0), then each round's record."""
        del arrays
        if server_round == 0:
            self.initial_eval = evaluate_global(self.setup)
            logger.info("Initial eval loss of the global adapter: %.4f", self.initial_eval)
            return MetricRecord({"eval_loss": self.initial_eval})
        r = self._round
        per_client = [r["rows"][cid] for cid in r["sampled"]]
        eval_start = time.perf_counter()
        record = finish_round(self.config, self.setup, self.ledger, server_round, r["sampled"], r["arrived"],
                              per_client, r["metrics"])  # fmt: skip
        record["flower_timing"] = {
            "configure_s": r["configure_s"], "wait_s": r["wait_s"], "aggregate_s": r["aggregate_s"],
            "eval_s": time.perf_counter() - eval_start, "round_s": time.perf_counter() - r["start"],
        }  # fmt: skip
        self.history.append(record)
        with self.metrics_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        eval_loss = record["eval_loss"]
        return MetricRecord({"eval_loss": eval_loss}) if eval_loss is not None else None


def _client_timing(reply: Message) -> dict[str, float]:
    """The ClientApp's own timing from the reply's MetricRecord (not in the ledgered header)."""
    record = reply.content.metric_records.get(METRICS_RECORD)
    if record is None:
        return {}
    names = {
        "client-setup-s": "client_setup_s",
        "client-total-s": "client_total_s",
        "setup-reused": "setup_reused",
    }
    return {ours: float(record[theirs]) for theirs, ours in names.items() if theirs in record}
