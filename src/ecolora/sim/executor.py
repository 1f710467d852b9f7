"""Where a client's work runs, for every loop (synchronous, asynchronous, hierarchical).

A *job* is one message to one client: down through the wire, ``Strategy.client_round`` on that
client, the reply back up. :mod:`ecolora.sim.sync_runner`, :mod:`ecolora.sim.async_runner` and
:mod:`ecolora.sim.hier_runner` are written once against :class:`ClientExecutor` and run on either
implementation:

* :class:`InProcessExecutor` (here): the client works in this process, on the run's shared model,
  right when the job starts; every message crosses the byte ledger as in
  :class:`~ecolora.sim.transport.InProcessTransport`.
* :class:`ecolora.flower.executor.FlowerExecutor`: the job's message goes to the SuperNode that
  holds the client's partition through Flower's Grid; ``start`` pushes, ``wait`` pulls, so the
  jobs started together train concurrently.

Both record a download when the job starts and an upload when the loop *receives* the reply
(:func:`receive_reply`, which may be later: the asynchronous loop receives in simulated-time
order), both as ``len(payload) + len(header)`` of the real bytes. A *local* job (the hierarchical
loop's group leader training on its own device) is not network traffic: it is neither counted nor
compressed (exact bytes where it must cross a process boundary). ``borrow`` and ``lend`` move
client states between the loop and where the clients live (a group leader's role in the server,
checkpoints and resume).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ecolora.network.ledger import ByteLedger
from ecolora.sim.setup import RunSetup
from ecolora.sim.transport import (
    PayloadError,
    WireMessage,
    count_params,
    decode_message,
    encode_message,
    safe_count_params,
)
from ecolora.strategies.base import ClientRuntime, Message, Strategy

__all__ = ["ClientExecutor", "ExecutorFactory", "InProcessExecutor", "Job", "Reply", "receive_reply"]


@dataclass(frozen=True)
class Job:
    """One message for one client; ``local``: the sender is the client's own device (not counted)."""

    client: int
    message: Message
    channel: str = "global"
    local: bool = False
    as_seen: Callable[[ClientRuntime], ClientRuntime] | None = None  # a simulated fault in the local round

    def runtime(self, client: ClientRuntime) -> ClientRuntime:
        """The client as its local round sees it (``as_seen``: e.g. a diverging trainer)."""
        return client if self.as_seen is None else self.as_seen(client)


@dataclass
class Reply:
    """What came back for a job: the reply's bytes, or why nothing usable did.

    ``metrics`` are the values the client reported (``compute_s``, ``num_steps``, ``train_loss``) at
    full precision, for scheduling and records; the aggregate only sees what ``receive`` decodes.
    """

    job: Job
    download_bytes: int
    wire: WireMessage | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    reason: str | None = None  # "<code>: <why>" when the reply is unusable (error, damaged)
    source: str = "in-process"  # who answered, for error messages ("node 7")
    message: Message | None = None  # in-process local jobs: the reply object itself
    timing: Mapping[str, float] = field(default_factory=dict)  # the engine's own per-client timing (Flower)

    @property
    def upload_bytes(self) -> int:
        return 0 if self.job.local or self.wire is None else self.wire.num_bytes


class ClientExecutor(Protocol):
    """Runs jobs for a loop; see the module docstring."""

    def start(self, server_round: int, jobs: Sequence[Job]) -> list[int]:
        """Send the jobs' messages (downloads counted now); return one ticket per job."""
        ...

    def wait(self, tickets: Sequence[int]) -> dict[int, Reply]:
        """The replies of these tickets (blocks until they are in, or fail)."""
        ...

    def wait_any(self, tickets: Sequence[int]) -> dict[int, Reply]:
        """The replies among these tickets that are in once the first one is (blocks until then;
        on timeout, every ticket's reply says ``no_reply``). FedBuff's wall clock (``fedbuff.clock``)."""
        ...

    def borrow(self, clients: Sequence[int]) -> dict[int, ClientRuntime]:
        """Runtimes whose ``state`` is each client's current state, for work the server process does
        on a client's behalf (HierFedLoRA's group leader) or for a checkpoint."""
        ...

    def lend(self, clients: Sequence[int]) -> None:
        """The server's copies of these clients' states are the current ones (restored from a
        checkpoint): each goes to its client with the client's next job."""
        ...


ExecutorFactory = Callable[[RunSetup, ByteLedger], ClientExecutor]


def receive_reply(strategy: Strategy, ledger: ByteLedger, server_round: int, reply: Reply) -> tuple[Message | None, str | None]:
    """The reply reaches the server: record its upload (unless local) and decode it.

    Returns ``(message, None)``, or ``(None, "<code>: <why>")`` for an unusable reply (its bytes
    still count when they arrived: they crossed the network; its values do not).
    """
    job, wire = reply.job, reply.wire
    message: Message | None = None
    reason = reply.reason
    if reason is None and reply.message is not None:
        message = reply.message
    elif reason is None and wire is None:
        reason = "no_reply: nothing came back"
    elif reason is None and wire is not None:
        try:
            message = decode_message(strategy, wire)
        except PayloadError as exc:
            reason = f"payload: {exc}"
    if wire is not None and not job.local:  # values counted only where the payload decodes
        ledger.record(server_round, job.client, "up", wire.num_bytes,
                      safe_count_params(wire.payload) if message is not None else 0, job.channel)  # fmt: skip
    return message, reason


class InProcessExecutor:
    """Clients of :func:`~ecolora.sim.setup.build_setup` working in this process, at ``start``."""

    def __init__(self, setup: RunSetup, ledger: ByteLedger) -> None:
        self.setup, self.ledger = setup, ledger
        self._tickets = itertools.count()
        self._done: dict[int, Reply] = {}

    def start(self, server_round: int, jobs: Sequence[Job]) -> list[int]:
        strategy = self.setup.strategy
        tickets = []
        for job in jobs:
            client = job.runtime(self.setup.clients[job.client])
            if job.local:  # the device's own message: no bytes, no copy
                reply = strategy.client_round(client, job.message)
                done = Reply(job, 0, metrics=dict(reply.metrics), message=reply)
            else:
                wire = encode_message(strategy, job.message, "down")
                self.ledger.record(server_round, job.client, "down", wire.num_bytes, count_params(wire.payload),
                                   job.channel)  # fmt: skip
                reply = strategy.client_round(client, decode_message(strategy, wire))
                done = Reply(job, wire.num_bytes, wire=encode_message(strategy, reply, "up"), metrics=dict(reply.metrics))
            ticket = next(self._tickets)
            self._done[ticket] = done
            tickets.append(ticket)
        return tickets

    def wait(self, tickets: Sequence[int]) -> dict[int, Reply]:
        return {t: self._done.pop(t) for t in tickets}

    def wait_any(self, tickets: Sequence[int]) -> dict[int, Reply]:
        """The first ticket's reply: a job here is done when it starts, so jobs finish in start order."""
        return self.wait(tickets[:1])

    def borrow(self, clients: Sequence[int]) -> dict[int, ClientRuntime]:
        return {cid: self.setup.clients[cid] for cid in clients}

    def lend(self, clients: Sequence[int]) -> None:
        """Nothing to send: the clients' states are these runtimes' own."""
        del clients
