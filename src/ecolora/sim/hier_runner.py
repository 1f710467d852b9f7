"""HierFedLoRA's global rounds in one process: groups, intra-group rounds, then the server.

Global round t (see :mod:`ecolora.strategies.hierfedlora` for the algorithm):

1. Sample ``fed.clients_per_round`` clients as the synchronous runner does; each group's sampled
   members take part, led by the one with most examples.
2. Per group: server -> leader (``global`` channel), tau_g x [leader -> members, local training,
   members -> leader] (``group`` channel; the leader's own messages stay on the device),
   leader -> server (``global``). Every message crosses the wire and the ledger. The members'
   training runs through an executor (:mod:`ecolora.sim.executor`): here, or on Flower SuperNodes
   with the leader's role in the ServerApp; the ledger counts the same bytes either way.
3. The server aggregates the group updates; one metrics.jsonl row per global round.

The row's bytes include both channels (``upload_bytes`` = all uploads); ``intra_group_bytes``,
``intra_group_upload_bytes`` and ``intra_group_download_bytes`` give the ``group`` part, and
``groups`` lists each active group's leader, members, tau_g and d_g. ``groups.json`` in the run
directory holds the grouping and the controller's choices.

Round time per scenario (``net``), analytic TCP model: groups run in parallel, a round lasts as
long as its slowest group,

    T_g = T_down(leader, global link) + sum_r round_s_r + T_up(leader, global link),

with round_s_r the synchronous round time (:func:`ecolora.network.round_timing`) of intra round r
over the intra-group links (``hier.intra_link``, or each member's own link), the leader counted
with zero bytes; ``comm_s`` = T_g minus the critical members' compute.

Checkpoints (in-process executor): after every ``fed.checkpoint_every`` global rounds and after
the last, the synchronous runner's checkpoint (:func:`ecolora.sim.checkpoint.capture_run`: the
strategy's global LoRA, views, group plans and losses, every client's state with its view and
residuals, the sampler and global RNGs, the ledger, the metrics history); ``resume=True``
continues from the newest one and ends bit for bit as the uninterrupted run. The group models of
a round are not saved: each round rebuilds them from the server's message. On Flower the clients'
states live on the SuperNodes, so, like the synchronous Flower path, no checkpoints are written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ecolora.config import RunConfig
from ecolora.network import RoundTiming, assign_profiles, parse_scenario, round_timing
from ecolora.network.ledger import ByteLedger
from ecolora.network.link import ProfileSpec
from ecolora.network.runs import normalize_scenarios
from ecolora.network.tcp import tcp_transfer_time_s
from ecolora.sim.async_runner import (
    warn_unsupported,
    without_network_scenarios,
    write_summary_extras,
)
from ecolora.sim.executor import (
    ClientExecutor,
    ExecutorFactory,
    InProcessExecutor,
    Job,
    receive_reply,
)
from ecolora.sim.runner import (
    ProgressHook,
    RunJournal,
    finish_round,
    sample_clients,
)
from ecolora.sim.setup import RunSetup, build_setup
from ecolora.sim.transport import InProcessTransport
from ecolora.strategies.base import Message
from ecolora.strategies.grouping import GroupedStrategy, category_counts
from ecolora.strategies.validation import CLIENT_REJECTION_KEY

logger = logging.getLogger("ecolora")

__all__ = ["hier_round_timing", "run_hierarchical"]

# One group's traffic in a global round: global legs (bytes) and per intra round the members' rows.
GroupTraffic = dict[str, Any]


def run_hierarchical(config: RunConfig, out_dir: Path, progress: ProgressHook | None = None,
                     resume: bool = False, executor: ExecutorFactory | None = None) -> dict[str, Any]:
    """Run ``hierfedlora`` / ``hierfedlora+ecolora`` and write the run directory; return the summary.

    ``executor`` builds where the members train (:mod:`ecolora.sim.executor`; default: in this
    process); the leader's role (``start_group``, ``aggregate_intra``, ``close_group``) and the
    server run here either way.
    """
    warn_unsupported(config)
    journal = RunJournal(config, out_dir, resume)
    out_dir = journal.out_dir
    setup = build_setup(config)
    strategy = setup.strategy
    if not isinstance(strategy, GroupedStrategy):
        raise TypeError(f"run_hierarchical runs a GroupedStrategy, got a {type(strategy).__name__} ({config.method}).")
    plans = strategy.form_groups(category_counts(setup.partition_stats))
    ledger = ByteLedger()
    transport = InProcessTransport(strategy, ledger)  # server <-> leaders: the ServerApp's own traffic
    work = (executor or InProcessExecutor)(setup, ledger)
    checkpoint_every = config.fed.checkpoint_every if isinstance(work, InProcessExecutor) else 0
    rng = np.random.default_rng(config.seed)
    quiet = without_network_scenarios(config)
    sizes = {c.client_id: c.num_examples for c in setup.clients}
    done = journal.begin(setup, rng, ledger)  # creates the run directory
    (out_dir / "groups.json").write_text(json.dumps([p.to_dict() for p in plans], indent=2), encoding="utf-8")
    if progress:
        progress("round", done, config.fed.rounds)  # the rounds already done: the loop starts
    for server_round in range(done + 1, config.fed.rounds + 1):
        sampled = sample_clients(rng, config.fed.num_clients, config.fed.clients_per_round)
        groups = strategy.round_groups(sampled, sizes)
        strategy.replan(server_round, groups)  # hier.replan_every: the plan of this round
        downs = strategy.configure_round(server_round, [members[0] for members in groups.values()])
        work.borrow([members[0] for members in groups.values()])  # Flower: fetch the leaders' states at once
        uploads: dict[int, Message] = {}
        last_replies: dict[int, Message] = {}
        traffic: dict[int, GroupTraffic] = {}
        for g, members in groups.items():
            uploads[members[0]], traffic[g] = _group_round(
                strategy, transport, ledger, server_round, g, members, downs[members[0]], last_replies,
                progress, work)
        metrics = strategy.aggregate_round(server_round, uploads)
        record = _round_record(quiet, setup, ledger, server_round, sampled, last_replies, traffic, metrics)
        if config.network.scenarios:
            record["net"] = {key: hier_round_timing(traffic, spec, config).to_dict()
                             for key, spec in normalize_scenarios(config.network.scenarios).items()}
        journal.append(record)
        journal.checkpoint(server_round, checkpoint_every, setup, rng, ledger)
        if progress:
            progress("round", server_round, config.fed.rounds)
    summary = journal.finish(setup, ledger)
    return write_summary_extras(out_dir, summary, {
        "intra_group_bytes": int(sum(r["intra_group_bytes"] for r in journal.history)),
        "groups": [p.to_dict() for p in plans],
    })


def _group_round(
    strategy: GroupedStrategy, transport: InProcessTransport, ledger: ByteLedger, server_round: int, group: int,
    members: list[int], down: Message, last_replies: dict[int, Message], progress: ProgressHook | None,
    work: ClientExecutor,
) -> tuple[Message, GroupTraffic]:
    """One group's part of a global round; returns the leader's upload and the group's traffic.

    The leader's role runs here, on the leader's state (``work.borrow``); every member's training,
    the leader's own included, is a job of ``work``, all members of an intra round started at once.
    """
    leader = members[0]
    leader_rt = work.borrow([leader])[leader]
    received = transport.send(server_round, leader, "down", down)
    traffic: GroupTraffic = {"leader": leader, "down_bytes": ledger.entries[-1].num_bytes, "intra": []}
    strategy.start_group(leader_rt, received)
    for intra_round in range(1, strategy.plans[group].intra_rounds + 1):
        messages = strategy.configure_intra(server_round, intra_round, group, members)
        jobs = [Job(cid, messages[cid], channel="group", local=cid == leader) for cid in members]
        tickets = work.start(server_round, jobs)
        done = work.wait(tickets)
        replies: dict[int, Message] = {}
        rows = []
        for job, ticket in zip(jobs, tickets, strict=True):
            got = done[ticket]
            reply, reason = receive_reply(strategy, ledger, server_round, got)
            declared = reply.config.get(CLIENT_REJECTION_KEY) if reply is not None else None
            if declared is not None:  # e.g. non_finite: the member checked its LoRA before compressing
                reply, reason = None, str(declared)
            if reply is None:  # tau_g aggregations and the delta views need every member's update
                raise RuntimeError(
                    f"{strategy.name} round {server_round}, group {group}, intra round {intra_round}: client "
                    f"{job.client} ({got.source}) sent no usable update: {reason}"
                )
            rows.append({"client": job.client, "download_bytes": got.download_bytes, "upload_bytes": got.upload_bytes,
                         "compute_s": float(reply.metrics.get("compute_s", 0.0))})  # fmt: skip
            replies[job.client] = last_replies[job.client] = reply
            if progress:
                progress("client", len(rows), len(members))
        strategy.aggregate_intra(group, replies)
        traffic["intra"].append(rows)
    upload = transport.send(server_round, leader, "up", strategy.close_group(leader_rt, server_round, group))
    traffic["up_bytes"] = ledger.entries[-1].num_bytes
    return upload, traffic


def _round_record(
    config: RunConfig, setup: RunSetup, ledger: ByteLedger, server_round: int, sampled: list[int],
    last_replies: dict[int, Message], traffic: dict[int, GroupTraffic], metrics: dict[str, Any],
) -> dict[str, Any]:
    strategy = setup.strategy
    assert isinstance(strategy, GroupedStrategy)
    per_client = []
    for cid in sorted(last_replies):
        rounds = [row for t in traffic.values() for rows in t["intra"] for row in rows if row["client"] == cid]
        per_client.append({"client": cid, "compute_s": float(sum(r["compute_s"] for r in rounds)),
                           "train_loss": last_replies[cid].metrics.get("train_loss")})
    groups = [{"group": g, "leader": t["leader"], "members": [r["client"] for r in t["intra"][0]],
               "intra_rounds": strategy.plans[g].intra_rounds, "depth": strategy.plans[g].depth,
               "divergence": strategy.plans[g].divergence}
              for g, t in traffic.items()]
    metrics = {**metrics, "groups": groups, "dropped": []}
    record = finish_round(config, setup, ledger, server_round, sampled, last_replies, per_client, metrics)
    intra = {"up": 0, "down": 0}
    for e in ledger.entries:
        if e.server_round == server_round and e.channel == "group":
            intra[e.direction] += e.num_bytes
    record.update(intra_group_bytes=intra["up"] + intra["down"], intra_group_upload_bytes=intra["up"],
                  intra_group_download_bytes=intra["down"])
    return record


def hier_round_timing(traffic: dict[int, GroupTraffic], spec: ProfileSpec, config: RunConfig) -> RoundTiming:
    """Round time of one global round (module docstring) under link spec ``spec``."""
    clients = sorted({row["client"] for t in traffic.values() for rows in t["intra"] for row in rows})
    links = assign_profiles(clients, spec, seed=config.seed)
    intra_spec = parse_scenario(config.hier.intra_link) if config.hier.intra_link else None
    scale = config.network.compute_scale
    best: RoundTiming | None = None
    for t in traffic.values():
        leader = links[t["leader"]]
        down_s = tcp_transfer_time_s(t["down_bytes"], leader.downlink_mbps, leader.latency_ms,
                                     reverse_rate_mbps=leader.uplink_mbps, loss=leader.loss)
        up_s = tcp_transfer_time_s(t["up_bytes"], leader.uplink_mbps, leader.latency_ms,
                                   reverse_rate_mbps=leader.downlink_mbps, loss=leader.loss)
        total, download, compute, upload = down_s + up_s, down_s, 0.0, up_s
        for rows in t["intra"]:
            timing = round_timing(rows, intra_spec or links, compute_scale=scale)
            total += timing.round_s
            download, compute, upload = download + timing.download_s, compute + timing.compute_s, upload + timing.upload_s
        if best is None or total > best.round_s:
            best = RoundTiming(comm_s=total - compute, round_s=total, download_s=download, compute_s=compute,
                               upload_s=upload, critical_client=t["leader"])
    return best or RoundTiming(comm_s=0.0, round_s=0.0)
