"""The Flower ClientApp: one ecolora client per SuperNode, running ``Strategy.client_round``.

* Device: ``train.device`` of the run config (``auto``: the GPU Flower's simulation backend gave
  this actor via ``client-resources-num-gpus``, else the CPU), or the SuperNode's own ``device``
  node-config key (:func:`ecolora.client.device.apply_node_device`).
* Partition: ``node_config["partition-id"]`` (``flower-supernode --node-config "partition-id=0
  num-partitions=2"`` in deployment; the simulation engine sets it from its virtual node ids).
* Model: built once per process by :func:`ecolora.sim.setup.build_setup` (same seeds as the
  in-process runner, so the base weights and the initial LoRA are identical everywhere) and
  cached in :data:`_SETUPS`; a later message in the same process reuses it. Simulation actors are
  long-lived, so their virtual clients share one model, as in ``ecolora run``; Flower 1.41's
  deployment SuperNode starts one ``flwr-clientapp`` process per message, so there the cache only
  saves work within a message (see docs/flower.md for the measured cost).
* State: the strategy's per-client state (EcoLoRA: last view, last local LoRA, tau, residuals) lives
  in ``Context.state`` between rounds (:func:`ecolora.flower.records.save_state`). So do the
  low-rank updates a strategy merged into the base weights (:class:`NodeRuntime`, e.g. FLoRA's
  stacks), so a fresh process rebuilds the same base.
  A message may carry the client's state instead (HierFedLoRA: the ServerApp held it while the
  client led its group, :mod:`ecolora.flower.executor`); it then replaces ``Context.state``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from ecolora.client.device import apply_node_device
from ecolora.config import RunConfig
from ecolora.flower.records import (
    CARRIED_STATE,
    CARRY_RECORD,
    METRICS_RECORD,
    PARTITION_QUERY,
    STATE_REQUEST,
    WireMessage,
    decode_message,
    encode_message,
    from_recorddict,
    is_exact,
    load_state,
    record_int,
    save_state,
    to_recorddict,
)
from ecolora.flower.settings import FlowerSettings, resolve_settings
from ecolora.sim.setup import RunSetup, build_setup
from ecolora.strategies.base import AdapterRuntime, LowRank, TrainResult
from ecolora.strategies.base import Message as EcoMessage

logger = logging.getLogger("ecolora")

__all__ = ["NodeRuntime", "app", "cached_setup", "partition_of", "run_client_round"]

MERGES_PREFIX = "base-merges."  # Context.state records of the low-rank merges into the base weights
_SETUPS: dict[str, RunSetup] = {}  # this process's setup, keyed by the resolved config (one entry)

app = ClientApp()


def cached_setup(config: RunConfig) -> tuple[RunSetup, bool]:
    """This process's model, data and strategy for ``config``; (setup, True) when reused."""
    key = json.dumps(config.to_dict(), sort_keys=True)
    if key in _SETUPS:
        return _SETUPS[key], True
    _SETUPS.clear()
    _SETUPS[key] = build_setup(config)
    return _SETUPS[key], False


def partition_of(node_config: dict[str, Any]) -> int:
    """The node's partition id; a clear error when the SuperNode was started without one."""
    if "partition-id" not in node_config:
        raise ValueError(
            "This SuperNode has no partition-id; start it with "
            '--node-config "partition-id=0 num-partitions=2" (one id per SuperNode).'
        )
    return int(node_config["partition-id"])


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Discovery: report this node's partition (no model is loaded); or send this client's state
    (``STATE_REQUEST``: HierFedLoRA's leader role in the ServerApp needs it)."""
    if STATE_REQUEST in msg.content:
        asked = record_int(msg.content.config_records[STATE_REQUEST]["partition-id"], "partition-id")
        mine = partition_of(context.node_config)
        if asked != mine:
            raise ValueError(f"State requested for partition {asked}, but this SuperNode holds partition {mine}.")
        content = RecordDict()
        save_state(content, load_state(context.state), prefix=CARRIED_STATE)
        return Message(content, reply_to=msg)
    record = ConfigRecord(
        {
            "partition-id": partition_of(context.node_config),
            "num-partitions": int(context.node_config.get("num-partitions", 0)),
        }
    )
    return Message(RecordDict({PARTITION_QUERY: record}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round of local work for this node's partition."""
    start = time.perf_counter()
    settings = resolve_settings(context.run_config)
    setup, reused = cached_setup(apply_node_device(settings.config, context.node_config))
    setup_s = time.perf_counter() - start
    content = run_client_round(
        setup,
        partition_of(context.node_config),
        msg.content,
        context.state,
        settings,
        timing={"client-setup-s": setup_s, "setup-reused": float(reused)},
    )
    content.metric_records[METRICS_RECORD]["client-total-s"] = time.perf_counter() - start
    return Message(content, reply_to=msg)


def run_client_round(
    setup: RunSetup,
    partition_id: int,
    content: RecordDict,
    state: RecordDict,
    settings: FlowerSettings | None = None,
    timing: dict[str, float] | None = None,
) -> RecordDict:
    """Decode the server's message, run ``client_round``, keep the state, encode the reply."""
    wire, target = from_recorddict(content)
    if target != partition_id:
        raise ValueError(
            f"Message is for partition {target}, but this SuperNode holds partition {partition_id}."
        )
    if not 0 <= partition_id < len(setup.clients):
        raise ValueError(
            f"partition-id {partition_id} is outside 0..{len(setup.clients) - 1} (fed.num_clients)."
        )
    strategy = setup.strategy
    message = decode_message(strategy, wire)
    client = setup.clients[partition_id]
    carry = content.config_records.get(CARRY_RECORD)  # the ServerApp held this client's state
    client.state = load_state(content, CARRIED_STATE) if carry is not None else load_state(state)
    runtime = NodeRuntime(client, load_state(state, prefix=MERGES_PREFIX))
    reply = strategy.client_round(runtime, message)
    save_state(state, client.state)
    if runtime.merges:
        save_state(state, runtime.merges, prefix=MERGES_PREFIX)
    exact = is_exact(content)
    reply_wire = encode_message(strategy, reply, "up", exact=exact)
    if settings is not None and settings.corrupt_partition == partition_id:
        reply_wire = _corrupt(strategy, reply, reply_wire, settings.corrupt_mode)
    metrics = {"num-examples": float(reply.num_examples), **reply.metrics, **(timing or {})}
    out = to_recorddict(reply_wire, reply.config, partition_id, metrics=metrics, exact=exact)
    if carry is not None and carry.get("return", False):
        save_state(out, client.state, prefix=CARRIED_STATE)
    return out


class NodeRuntime:
    """The client of a SuperNode as a strategy sees it: this process's client, whose low-rank merges
    into the base weights (:class:`~ecolora.strategies.base.AdapterRuntime`) outlive the process.

    ``merges`` (tag -> module -> (B, A)) are the merges of earlier messages, kept in
    ``Context.state``; they are replayed at once (a process that already merged a tag skips it), and
    every new merge is added to them.
    """

    def __init__(self, client: AdapterRuntime, merges: dict[str, Any]) -> None:
        self.client, self.merges = client, merges
        for tag, factors in merges.items():
            client.merge_into_base(tag, {m: tuple(f) for m, f in factors.items()})

    @property
    def client_id(self) -> int:
        return self.client.client_id

    @property
    def num_examples(self) -> int:
        return self.client.num_examples

    @property
    def state(self) -> dict[str, Any]:
        return self.client.state

    @state.setter
    def state(self, value: dict[str, Any]) -> None:
        self.client.state = value

    def get_lora(self) -> dict[str, torch.Tensor]:
        return self.client.get_lora()

    def set_lora(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self.client.set_lora(tensors)

    def freeze(self, predicate: Callable[[str], bool]) -> None:
        self.client.freeze(predicate)

    def train(self, server_round: int, config: Mapping[str, Any]) -> TrainResult:
        return self.client.train(server_round, config)

    def use_rank(self, rank: int) -> None:
        self.client.use_rank(rank)

    def merge_into_base(self, tag: str, factors: Mapping[str, LowRank]) -> None:
        self.client.merge_into_base(tag, factors)
        self.merges[tag] = dict(factors)


def _corrupt(strategy: Any, reply: EcoMessage, wire: WireMessage, mode: str) -> WireMessage:
    """TESTS ONLY (run config ``test-corrupt-partition``): a damaged reply the server must drop."""
    logger.warning("test-corrupt-partition: sending a %s-corrupted reply", mode)
    if mode == "bytes":
        return WireMessage(payload=wire.payload[: len(wire.payload) // 2], header=wire.header)
    names = sorted(reply.tensors)
    broken = EcoMessage(
        config=reply.config,
        tensors={k: reply.tensors[k] for k in names[1:]},
        num_examples=reply.num_examples,
        metrics=reply.metrics,
    )
    return encode_message(strategy, broken, "up")
