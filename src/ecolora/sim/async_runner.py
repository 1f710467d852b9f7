"""FedBuff's event loop in simulated time (Nguyen et al., AISTATS 2022), in one process.

Time is simulated, training is real. A job is one client's download, local training and upload:

1. Dispatch at time t0: an idle client, drawn uniformly with the run's seeded generator, gets the
   current model version (a job of the executor, :mod:`ecolora.sim.executor`: its message is
   counted as it leaves). It trains (real compute: at once in-process, concurrently with the other
   jobs in flight on Flower SuperNodes); the job then *arrives* at
       t0 + T_down + T_compute + T_up,
   T_down and T_up from :func:`ecolora.network.tcp_transfer_time_s` over the client's link
   (``assign_profiles`` with :class:`~ecolora.network.LogNormalProfiles` around ``fedbuff.link``,
   spread ``fedbuff.link_sigma``), T_compute = the measured compute time x ``network.compute_scale``
   (or ``fedbuff.step_time_s`` x local steps) x the client's speed factor e^{sigma z_i},
   z_i ~ N(0, 1) from ``np.random.default_rng([seed, i, 1])``, sigma = ``fedbuff.speed_sigma``.
2. ``fedbuff.concurrency`` jobs are in flight at any time: each arrival frees its client and a
   new job is dispatched at the arrival time (with the model version of that moment).
3. Arrivals are processed in time order (ties: dispatch order); each upload is counted and
   decoded when it arrives (an unusable one is logged and listed in the step's ``dropped``). When ``fedbuff.buffer_size`` updates are in, the server takes one step
   (:class:`~ecolora.strategies.fedbuff.FedBuff`) and writes one metrics.jsonl row.

A "round" of the run directory is one server step: ``fed.rounds`` steps are taken. Each row adds
``sim_time_s`` (simulated time of the step) and ``staleness``; its bytes are those recorded during
the step (downloads when dispatched, uploads when they arrive); ``net[link]`` has ``round_s`` (the
step's simulated duration) and the download/compute/upload time of the job that completed the
buffer within the step (its critical path). Jobs still in flight at the end are not waited for:
their downloads count, their uploads never happen (``jobs_discarded`` in summary.json). With the
measured compute time the event order depends on the machine's speed; set ``fedbuff.step_time_s``
for a run that repeats exactly.

Wall clock (``fedbuff.clock: wall``, for Flower deployments): no simulation of links or speeds; a
job arrives when its reply comes in (:meth:`ClientExecutor.wait_any`), ``sim_time_s`` is seconds
since the first dispatch, the net key is ``wall`` and a job's non-compute time is its ``upload_s``.

Checkpoints (in-process executor): after every ``fed.checkpoint_every`` server steps and after the
last, :func:`ecolora.sim.checkpoint.capture_run` (strategy, clients, ledger, RNGs with the loop's
generator, history) plus the loop: the simulated time, idle clients, counters and every job in
flight with its reply (wire bytes, reported metrics, phase times). ``resume=True`` continues from
there bit for bit. On Flower the clients' states live on the SuperNodes, so, like the synchronous
Flower path, no checkpoints are written.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ecolora.config import RunConfig
from ecolora.network import (
    LinkProfile,
    LogNormalProfiles,
    assign_profiles,
    parse_scenario,
    scenario_key,
)
from ecolora.network.ledger import ByteLedger
from ecolora.network.tcp import tcp_transfer_time_s
from ecolora.sim.executor import (
    ClientExecutor,
    ExecutorFactory,
    InProcessExecutor,
    Job,
    Reply,
    receive_reply,
)
from ecolora.sim.runner import (
    ProgressHook,
    RunJournal,
    finish_round,
)
from ecolora.sim.setup import RunSetup, build_setup
from ecolora.sim.transport import WireMessage
from ecolora.strategies.base import Message

logger = logging.getLogger("ecolora")

__all__ = ["client_speeds", "play_async", "run_async", "warn_unsupported", "without_network_scenarios", "write_summary_extras"]


@dataclass(order=True)
class _Job:
    """One dispatch: when it arrives, its phases' durations and the client's reply."""

    arrival_s: float
    job_id: int
    client: int = field(compare=False)
    dispatch_s: float = field(compare=False)
    download_s: float = field(compare=False)
    compute_s: float = field(compare=False)
    upload_s: float = field(compare=False)
    measured_compute_s: float = field(compare=False)
    result: Reply = field(compare=False, repr=False)  # what came back, with the client's own metrics
    reply: Message | None = field(default=None, compare=False, repr=False)  # as the server decoded it


StepHook = Callable[[list[_Job], dict[int, Message], float], None]


def client_speeds(config: RunConfig) -> tuple[str, dict[int, LinkProfile], dict[int, float]]:
    """(link label, per-client link profile, per-client compute-time factor), seeded."""
    fb = config.fedbuff
    median = parse_scenario(fb.link if fb.link is not None else config.network.scenarios[0])
    ids = range(config.fed.num_clients)
    spec = LogNormalProfiles(median, sigma=fb.link_sigma) if fb.link_sigma > 0 else median
    links = assign_profiles(ids, spec, seed=config.seed)
    factors = {cid: math.exp(fb.speed_sigma * float(np.random.default_rng([config.seed, cid, 1]).standard_normal()))
               for cid in ids}
    return scenario_key(median), links, factors


@dataclass(frozen=True)
class _Started:
    """A job whose reply the loop has not waited for yet, with the earliest it can arrive."""

    ticket: int
    job_id: int
    dispatch_s: float
    earliest_s: float


def _job_state(job: _Job) -> dict[str, Any]:
    """A job in flight (not received yet) as checkpointable values."""
    assert job.reply is None and job.result.message is None, "only jobs in flight are saved"
    result = job.result
    timing = {f.name: getattr(job, f.name) for f in dataclasses.fields(job) if f.name not in ("result", "reply")}
    return {**timing, "job": {"client": result.job.client, "channel": result.job.channel, "local": result.job.local,
                              "message": dataclasses.asdict(result.job.message)},
            "download_bytes": result.download_bytes, "metrics": dict(result.metrics), "reason": result.reason,
            "source": result.source,
            "wire": None if result.wire is None else {"payload": result.wire.payload, "header": result.wire.header}}


def _job_from_state(state: Mapping[str, Any]) -> _Job:
    job = state["job"]
    sent = Job(int(job["client"]), Message(**job["message"]), job["channel"], bool(job["local"]))
    wire = None if state["wire"] is None else WireMessage(state["wire"]["payload"], state["wire"]["header"])
    result = Reply(sent, int(state["download_bytes"]), wire, dict(state["metrics"]), state["reason"], state["source"])
    timing = {f.name: state[f.name] for f in dataclasses.fields(_Job) if f.name not in ("result", "reply")}
    return _Job(**timing, result=result)


class _EventLoop:
    """Idle clients, jobs in flight (a heap by arrival time) and the dispatch step.

    A dispatch starts a job on the executor. Its arrival time needs the reply (upload size, step
    count), so a job is *started* until the loop waits for it. :meth:`next_arrival` waits only for
    the started jobs that could arrive no later than the earliest known arrival (a lower bound:
    dispatch + download + one local step, upload >= 0); the others keep training, so on Flower
    the jobs in flight train concurrently while the event order stays the simulated one exactly.
    """

    links: dict[int, LinkProfile]  # client -> its link (simulated clock only)
    factors: dict[int, float]  # client -> its compute-speed factor (simulated clock only)

    def __init__(self, config: RunConfig, setup: RunSetup, work: ClientExecutor, ledger: ByteLedger) -> None:
        self.config, self.setup, self.work, self.ledger = config, setup, work, ledger
        self.rng = np.random.default_rng(config.seed)
        self.wall = config.fedbuff.clock == "wall"
        if self.wall:  # real links and devices: nothing to simulate
            self.link_key, self.links, self.factors = "wall", {}, {}
        else:
            self.link_key, self.links, self.factors = client_speeds(config)
        self.set_clock(0.0)
        self.idle = set(range(config.fed.num_clients))
        self.started: list[_Started] = []
        self._heap: list[_Job] = []
        self.num_jobs = 0
        self.step = 0  # server steps taken
        self.last_metrics: dict[str, Any] = {}

    def state_dict(self) -> dict[str, Any]:
        """Idle clients, counters and every job in flight with its reply (waits for the started ones:
        in-process they are done already, and the event order does not depend on when they settle).
        The loop's generator is saved by the caller (the checkpoint's sampler)."""
        return {"idle": set(self.idle), "num_jobs": self.num_jobs, "step": self.step,
                "in_flight": [_job_state(job) for job in self.in_flight]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.idle = {int(c) for c in state["idle"]}
        self.num_jobs, self.step = int(state["num_jobs"]), int(state["step"])
        self.started = []
        self._heap = [_job_from_state(job) for job in state["in_flight"]]
        heapq.heapify(self._heap)

    def set_clock(self, now: float) -> None:
        """Wall clock: read ``now`` at this moment (a fresh loop: 0; a resumed one: its checkpoint's)."""
        self._clock_start, self._clock_origin = now, time.monotonic()

    def clock(self) -> float:
        """Seconds on the wall clock since the run started (``fedbuff.clock=wall``)."""
        return self._clock_start + time.monotonic() - self._clock_origin

    def dispatch(self, now: float) -> None:
        cid = int(self.rng.choice(sorted(self.idle)))
        self.idle.remove(cid)
        message = self.setup.strategy.configure_round(self.step + 1, [cid])[cid]
        if self.wall:
            now = self.clock()
        [ticket] = self.work.start(self.step + 1, [Job(cid, message)])
        if self.wall:
            earliest = now
        else:
            download_bytes = self.ledger.entries[-1].num_bytes  # start() just recorded the download
            earliest = now + self._download_s(cid, download_bytes) + self._compute_s(cid, {})
        self.started.append(_Started(ticket, self.num_jobs, now, earliest))
        self.num_jobs += 1

    def _download_s(self, cid: int, num_bytes: int) -> float:
        link = self.links[cid]
        return tcp_transfer_time_s(num_bytes, link.downlink_mbps, link.latency_ms,
                                   reverse_rate_mbps=link.uplink_mbps, loss=link.loss)  # fmt: skip

    def _compute_s(self, cid: int, metrics: Mapping[str, float]) -> float:
        """Simulated compute time; with no metrics, its lower bound (one step, or 0 when measured)."""
        step_time = self.config.fedbuff.step_time_s
        if step_time:
            base_s = step_time * float(metrics.get("num_steps", 1.0))
        else:
            base_s = float(metrics.get("compute_s", 0.0)) * self.config.network.compute_scale
        return base_s * self.factors[cid]

    def _time(self, job: _Started, reply: Reply) -> _Job:
        """The job's arrival in simulated time (module docstring, step 1)."""
        cid, link = reply.job.client, self.links[reply.job.client]
        down_s = self._download_s(cid, reply.download_bytes)
        up_s = tcp_transfer_time_s(reply.upload_bytes, link.uplink_mbps, link.latency_ms,
                                   reverse_rate_mbps=link.downlink_mbps, loss=link.loss)
        compute_s = self._compute_s(cid, reply.metrics)
        now = job.dispatch_s
        return _Job(now + down_s + compute_s + up_s, job.job_id, cid, now, down_s, compute_s, up_s,
                    float(reply.metrics.get("compute_s", 0.0)), result=reply)  # fmt: skip

    def _wall_time(self, job: _Started, reply: Reply, now: float) -> _Job:
        """The job's arrival on the wall clock: now. The server sees when it left, when it came back
        and the client's own compute time; the rest (both transfers, queueing) counts as upload."""
        measured = float(reply.metrics.get("compute_s", 0.0))
        elapsed = max(0.0, now - job.dispatch_s)
        compute_s = min(measured, elapsed)
        return _Job(now, job.job_id, reply.job.client, job.dispatch_s, 0.0, compute_s, elapsed - compute_s,
                    measured, result=reply)  # fmt: skip

    def _settle(self, jobs: list[_Started], replies: Mapping[int, Reply] | None = None) -> None:
        """Wait for these started jobs (unless their ``replies`` are in) and put them on the heap."""
        if replies is None:
            replies = self.work.wait([job.ticket for job in jobs])
        now = self.clock()
        for job in jobs:
            reply = replies[job.ticket]
            heapq.heappush(self._heap, self._wall_time(job, reply, now) if self.wall else self._time(job, reply))
        self.started = [job for job in self.started if job not in jobs]

    @property
    def in_flight(self) -> list[_Job]:
        """Jobs not arrived yet, a heap by arrival time (waits for every started job)."""
        if self.started:
            self._settle(list(self.started))
        return self._heap

    @property
    def num_in_flight(self) -> int:
        return len(self._heap) + len(self.started)

    def next_arrival(self) -> _Job:
        """The earliest arrival (ties: dispatch order), waiting only for jobs that might be it.

        On the wall clock: the next reply to come in (``ClientExecutor.wait_any``).
        """
        if self.wall:
            if not self._heap:
                replies = self.work.wait_any([job.ticket for job in self.started])
                self._settle([job for job in self.started if job.ticket in replies], replies)
        else:
            first = self._heap[0].arrival_s if self._heap else math.inf
            maybe_first = [job for job in self.started if job.earliest_s <= first]
            if maybe_first:
                self._settle(maybe_first)
        job = heapq.heappop(self._heap)
        self.idle.add(job.client)
        return job


def play_async(loop: _EventLoop, rounds: int, buffer_size: int, on_step: StepHook,
               progress: ProgressHook | None = None, resume_at_s: float | None = None) -> float:
    """Run the event loop until ``rounds`` server steps are taken; return the final simulated time.

    ``resume_at_s``: continue a loop restored from a checkpoint taken in ``on_step`` at that
    simulated time (its buffer empty, the replacement job not dispatched yet).

    ``on_step(jobs, buffer, now)`` is called once per full buffer, right after the server step
    (``loop.step`` already counts it), with the buffered jobs in arrival order;
    ``loop.last_metrics["dropped"]`` lists the jobs whose reply was unusable since the last step
    (``[{client, reason}]``, logged).
    """
    strategy = loop.setup.strategy
    buffer: dict[int, Message] = {}
    jobs: list[_Job] = []
    dropped: list[dict[str, Any]] = []
    if resume_at_s is None:
        now = 0.0
        for _ in range(loop.config.fedbuff.concurrency):
            loop.dispatch(now)
    else:
        now = resume_at_s
        if loop.step < rounds:
            loop.dispatch(now)
    while loop.step < rounds:
        # ---- the next arrival crosses the wire and joins the buffer ----------------------------
        job = loop.next_arrival()
        now = job.arrival_s
        job.reply, reason = receive_reply(strategy, loop.ledger, loop.step + 1, job.result)
        if job.reply is None:
            logger.warning("step %d: the update of client %d (%s) is left out: %s",
                           loop.step + 1, job.client, job.result.source, reason)  # fmt: skip
            dropped.append({"client": job.client, "reason": reason})
        else:
            buffer[job.job_id] = job.reply
            jobs.append(job)
            if progress:
                progress("client", len(buffer), buffer_size)
        # ---- a full buffer: one server step --------------------------------------------------
        if len(buffer) == buffer_size:
            loop.step += 1
            loop.last_metrics = {**strategy.aggregate_round(loop.step, buffer), "dropped": dropped}
            on_step(jobs, buffer, now)
            buffer, jobs, dropped = {}, [], []
            if progress:
                progress("round", loop.step, rounds)
        if loop.step < rounds:
            loop.dispatch(now)
    return now


def run_async(config: RunConfig, out_dir: Path, progress: ProgressHook | None = None, resume: bool = False,
              executor: ExecutorFactory | None = None) -> dict[str, Any]:
    """Run ``fedbuff`` / ``fedbuff+ecolora`` and write the run directory; return the summary.

    ``executor`` builds where the clients train (:mod:`ecolora.sim.executor`; default: in this
    process); the event loop and the server run here either way.
    """
    warn_unsupported(config)
    journal = RunJournal(config, out_dir, resume)
    setup = build_setup(config)
    ledger = ByteLedger()
    work = (executor or InProcessExecutor)(setup, ledger)
    checkpoint_every = config.fed.checkpoint_every if isinstance(work, InProcessExecutor) else 0
    loop = _EventLoop(config, setup, work, ledger)
    quiet = without_network_scenarios(config)
    resume_at_s = None
    if journal.begin(setup, loop.rng, ledger, unit="step"):
        assert journal.restored is not None
        loop.load_state_dict(journal.restored["loop"])
        resume_at_s = float(journal.restored["sim_time_s"])
        loop.set_clock(resume_at_s)
    else:
        loop.set_clock(0.0)  # the wall clock starts with the first dispatch
    if progress:
        progress("round", loop.step, config.fed.rounds)  # the steps already taken: the loop starts

    def on_step(jobs: list[_Job], buffer: dict[int, Message], now: float) -> None:
        start = journal.history[-1]["sim_time_s"] if journal.history else 0.0
        journal.append(_step_record(quiet, setup, ledger, loop, jobs, buffer, loop.last_metrics, (start, now)))
        journal.checkpoint(loop.step, checkpoint_every, setup, loop.rng, ledger,
                           lambda: {"sim_time_s": now, "loop": loop.state_dict()})

    now = play_async(loop, config.fed.rounds, config.fedbuff.buffer_size, on_step, progress, resume_at_s)
    summary = journal.finish(setup, ledger)
    staleness = [s for r in journal.history for s in r.get("staleness", [])]
    return write_summary_extras(journal.out_dir, summary, {
        "sim_time_s": now, "clock": config.fedbuff.clock, "link": loop.link_key, "jobs_dispatched": loop.num_jobs,
        "jobs_discarded": loop.num_in_flight,
        "mean_staleness": float(np.mean(staleness)) if staleness else 0.0,
    })


def _step_record(
    config: RunConfig, setup: RunSetup, ledger: ByteLedger, loop: _EventLoop, jobs: list[_Job],
    buffer: dict[int, Message], metrics: dict[str, Any], window: tuple[float, float],
) -> dict[str, Any]:
    """finish_round's record of one server step plus ``sim_time_s`` and the step's critical path."""
    per_client = []
    for cid in sorted(ledger.per_client(loop.step)):  # every client with traffic in this step
        mine = [j for j in jobs if j.client == cid]
        per_client.append({
            "client": cid, "compute_s": float(sum(j.measured_compute_s for j in mine)),
            "sim_compute_s": float(sum(j.compute_s for j in mine)),
            "train_loss": mine[-1].result.metrics.get("train_loss") if mine else None,
        })
    record = finish_round(config, setup, ledger, loop.step, [j.client for j in jobs], buffer, per_client, metrics)
    start, end = window
    last = jobs[-1]
    phases = np.cumsum([last.dispatch_s, last.download_s, last.compute_s, last.upload_s])
    download_s, compute_s, upload_s = (_overlap(phases[i], phases[i + 1], start, end) for i in range(3))
    record["sim_time_s"] = end
    record["net"] = {loop.link_key: {
        "round_s": end - start, "comm_s": download_s + upload_s, "download_s": download_s,
        "compute_s": compute_s, "upload_s": upload_s, "critical_client": last.client,
    }}
    return record


def _overlap(a: float, b: float, lo: float, hi: float) -> float:
    return float(max(0.0, min(b, hi) - max(a, lo)))


# ---- helpers shared with the hierarchical runner ------------------------------------------------
def without_network_scenarios(config: RunConfig) -> RunConfig:
    """``config`` without synchronous-round timings (these loops time their rounds themselves)."""
    fedbuff = config.fedbuff
    if fedbuff.link is None and config.network.scenarios:
        fedbuff = dataclasses.replace(fedbuff, link=config.network.scenarios[0])
    return dataclasses.replace(config, fedbuff=fedbuff, network=dataclasses.replace(config.network, scenarios=[]))


def write_summary_extras(out_dir: Path, summary: dict[str, Any], extras: dict[str, Any]) -> dict[str, Any]:
    """Add method-specific totals to summary.json (after :func:`finish_run` wrote it)."""
    summary = {**summary, **extras}
    (Path(out_dir) / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def warn_unsupported(config: RunConfig) -> None:
    """Say which run options these loops do not implement (client faults)."""
    faults = config.faults
    if faults.dropout or faults.straggler or faults.upload_failure or faults.nonfinite:
        logger.warning("faults.dropout/straggler/upload_failure/nonfinite are ignored by %s.", config.method)
