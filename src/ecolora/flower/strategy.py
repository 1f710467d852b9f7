"""A Flower ``Strategy`` that runs any ecolora algorithm (FedIT, FFA-LoRA, FLoRA, +EcoLoRA).

Flower owns the round loop (``flwr.serverapp.strategy.Strategy.start``: configure_train ->
send_and_receive -> aggregate_train -> configure_evaluate -> ... -> evaluate_fn); this class only
fills its hooks with the engine-independent code the in-process runner calls:

* ``configure_train``: sample clients exactly as :func:`ecolora.sim.runner.sample_clients` (same
  seeded generator, same draw, position order kept), ask the ecolora strategy for one message per
  client (``configure_round``), pack each with the strategy's codec and wrap it in a *fresh*
  RecordDict addressed to the SuperNode that holds that partition. The ledger records each
  message's ``len(payload) + len(header)``.
* ``aggregate_train``: record each reply's size, decode it, validate it against what was sent
  (:mod:`ecolora.flower.validate`), drop bad replies with a logged reason, and fold the rest in
  with ``aggregate_round``.
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

from ecolora import codec
from ecolora.config import RunConfig
from ecolora.flower.records import (
    PayloadError,
    decode_message,
    encode_message,
    from_recorddict,
    to_recorddict,
)
from ecolora.flower.validate import ReplyError, validate_reply
from ecolora.network.ledger import ByteLedger
from ecolora.sim.runner import evaluate_global, finish_round, sample_clients
from ecolora.sim.setup import RunSetup
from ecolora.sim.transport import count_params
from ecolora.strategies.base import AggregationError
from ecolora.strategies.base import Message as EcoMessage

logger = logging.getLogger("ecolora")

__all__ = ["EcoloraFlowerStrategy"]


class EcoloraFlowerStrategy(FlowerBaseStrategy):
    """Flower's Message-API strategy over ``setup.strategy``; writes ``metrics.jsonl`` per round.

    Args:
        config: the resolved run config (both apps build it from the same run config).
        setup: the server's :func:`ecolora.sim.setup.build_setup` (strategy, eval model, adapter).
        node_of: partition id (ecolora client id) -> Flower node id.
        metrics_path: the run directory's metrics.jsonl (see :func:`ecolora.sim.runner.start_run_dir`).
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
            self.strategy.name,
            len(self.node_of),
            self.node_of,
        )

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
            out.append(
                Message(
                    content=content,
                    dst_node_id=self.node_of[cid],
                    message_type=MessageType.TRAIN,
                    group_id=str(server_round),
                )
            )
        self._round = {
            "sampled": sampled,
            "sent": messages,
            "start": start,
            "configure_s": time.perf_counter() - start,
            "sent_at": time.perf_counter(),
        }
        return out

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Decode, validate and aggregate the replies with the ecolora strategy's own code."""
        received_at = time.perf_counter()
        sent: dict[int, EcoMessage] = self._round["sent"]
        accepted: dict[int, EcoMessage] = {}
        status: dict[int, str] = {cid: "no reply" for cid in sent}
        for reply in replies:
            cid = self.client_of.get(reply.metadata.src_node_id)
            if cid is None or cid not in sent:
                logger.warning(
                    "round %d: ignoring a reply from node %d, which was not asked",
                    server_round,
                    reply.metadata.src_node_id,
                )
                continue
            status[cid] = self._accept(server_round, cid, reply, sent[cid], accepted)
        # Replies arrive in any order; aggregate them in sampling order, as the in-process runner.
        accepted = {cid: accepted[cid] for cid in self._round["sampled"] if cid in accepted}
        try:
            strategy_metrics = self.strategy.aggregate_round(server_round, accepted)
        except AggregationError as exc:
            logger.error(
                "round %d: aggregation failed, global model unchanged: %s", server_round, exc
            )
            strategy_metrics = {"aggregation_error": str(exc)}
        self._round.update(
            accepted=accepted,
            status=status,
            metrics=strategy_metrics,
            wait_s=received_at - self._round["sent_at"],
            aggregate_s=time.perf_counter() - received_at,
        )
        metrics = {
            "num-accepted": len(accepted),
            "num-dropped": sum(s != "ok" for s in status.values()),
        }
        global_lora = self.strategy.global_lora()
        return (ArrayRecord(global_lora) if global_lora else ArrayRecord()), MetricRecord(metrics)

    def _accept(
        self,
        server_round: int,
        cid: int,
        reply: Message,
        sent: EcoMessage,
        accepted: dict[int, EcoMessage],
    ) -> str:
        """Record the reply's bytes; add it to ``accepted`` if valid; return its status line."""
        if reply.has_error():
            reason = f"error reply: {reply.error.reason}"
        else:
            try:
                wire, partition = from_recorddict(reply.content)
                params = _safe_count_params(wire.payload)
                self.ledger.record(server_round, cid, "up", wire.num_bytes, params)
                if partition != cid:
                    raise ReplyError(f"Reply is from partition {partition}, expected {cid}.")
                message = decode_message(self.strategy, wire)
                validate_reply(self.strategy, sent, message)
                accepted[cid] = message
                return "ok"
            except (PayloadError, ReplyError) as exc:
                reason = str(exc)
        logger.warning(
            "round %d: dropped the reply of client %d (node %d): %s",
            server_round,
            cid,
            reply.metadata.src_node_id,
            reason,
        )
        return f"dropped: {reason}"

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
        per_client = [
            _client_row(cid, r["accepted"].get(cid), r["status"][cid]) for cid in r["sampled"]
        ]
        eval_start = time.perf_counter()
        record = finish_round(
            self.config,
            self.setup,
            self.ledger,
            server_round,
            r["sampled"],
            r["accepted"],
            per_client,
            r["metrics"],
        )
        record["dropped"] = {str(cid): s for cid, s in r["status"].items() if s != "ok"}
        record["flower_timing"] = {
            "configure_s": r["configure_s"],
            "wait_s": r["wait_s"],
            "aggregate_s": r["aggregate_s"],
            "eval_s": time.perf_counter() - eval_start,
            "round_s": time.perf_counter() - r["start"],
        }
        self.history.append(record)
        with self.metrics_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        eval_loss = record["eval_loss"]
        return MetricRecord({"eval_loss": eval_loss}) if eval_loss is not None else None


def _client_row(cid: int, reply: EcoMessage | None, status: str) -> dict[str, Any]:
    """Per-client row as the in-process runner writes it, plus the reply's status."""
    row: dict[str, Any] = {"client": cid, "compute_s": 0.0, "train_loss": None}
    if reply is not None:
        row.update(
            compute_s=reply.metrics.get("compute_s", 0.0),
            train_loss=reply.metrics.get("train_loss"),
        )
    if status != "ok":
        row["status"] = status
    return row


def _safe_count_params(payload: bytes) -> int:
    """Values in a payload for the ledger; 0 when its manifest cannot even be read."""
    try:
        return count_params(payload)
    except (codec.CodecError, ValueError, KeyError, TypeError, IndexError):
        return 0
