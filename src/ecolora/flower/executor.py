"""Client jobs of every loop (synchronous, FedBuff, HierFedLoRA) on Flower SuperNodes (:mod:`ecolora.sim.executor`).

``start`` packs each job's message as the in-process transport does (codec payload Array + JSON
header, :mod:`ecolora.flower.records`), records its download and
pushes all of them in one ``Grid.push_messages``; ``wait`` pulls the replies (polling every
``poll_s`` until ``timeout_s``), so jobs started together train concurrently on their SuperNodes.
A reply is checked here: an error reply, missing records, a wrong stype or partition become a
:class:`~ecolora.sim.executor.Reply` with a ``reason`` (``error: ...``, ``payload: ...``,
``config: ...``, ``no_reply: ...``) that the loop logs and handles.

Checkpoints (the synchronous loop): :meth:`FlowerExecutor.borrow` fetches every client's state
before one is written, and after a resume :meth:`FlowerExecutor.lend` makes the next message to
each client carry its restored state, which replaces whatever its SuperNode kept.

HierFedLoRA's group leader: its role (``start_group``, ``aggregate_intra``, ``close_group``) runs in
the ServerApp, its training on its SuperNode, and both touch the leader's client state (its view
of the group model, its error-feedback residuals). :meth:`FlowerExecutor.borrow` fetches that state
from the SuperNode (a QUERY), the leader's own jobs carry it there and back (``local`` jobs: exact
bytes, not counted: on a real device they never leave it), and the next message to that client
hands it back to its SuperNode.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Mapping, Sequence

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from ecolora.flower.records import (
    CARRIED_STATE,
    CARRY_RECORD,
    METRICS_RECORD,
    STATE_REQUEST,
    STATE_TREE,
    PayloadError,
    encode_message,
    from_recorddict,
    load_state,
    save_state,
    to_recorddict,
)
from ecolora.network.ledger import ByteLedger
from ecolora.sim.executor import Job, Reply
from ecolora.sim.setup import RunSetup
from ecolora.sim.transport import count_params
from ecolora.strategies.base import ClientRuntime

logger = logging.getLogger("ecolora")

__all__ = ["FlowerExecutor"]

# The ClientApp's own timing in a reply's MetricRecord -> per-client row keys (not in the ledgered header).
_TIMING = {"client-setup-s": "client_setup_s", "client-total-s": "client_total_s", "setup-reused": "setup_reused"}


class FlowerExecutor:
    """:class:`~ecolora.sim.executor.ClientExecutor` over a Flower ``Grid`` (module docstring).

    Args:
        grid: the ServerApp's grid.
        node_of: partition id (ecolora client id) -> Flower node id (``discover_partitions``).
        setup: the ServerApp's :func:`~ecolora.sim.setup.build_setup` (strategy, leader states).
        ledger: the run's byte ledger.
        timeout_s: how long ``wait`` waits for replies (run config ``round-timeout``).
        poll_s: seconds between two pulls.
    """

    def __init__(self, grid: Grid, node_of: Mapping[int, int], setup: RunSetup, ledger: ByteLedger,
                 timeout_s: float, poll_s: float = 0.1) -> None:  # fmt: skip
        self.grid, self.node_of, self.setup, self.ledger = grid, dict(node_of), setup, ledger
        self.timeout_s, self.poll_s = timeout_s, poll_s
        self._tickets = itertools.count()
        self._pending: dict[int, tuple[Job, str, int]] = {}  # ticket -> (job, message id, download bytes)
        self._replies: dict[str, Message] = {}  # pulled, not yet asked for (message id -> reply)
        self._held: set[int] = set()  # clients whose state the ServerApp holds (setup.clients[c].state)
        self.wait_s = 0.0  # time spent waiting for replies
        self.num_jobs = 0

    # ---- jobs ----------------------------------------------------------------------------------
    def start(self, server_round: int, jobs: Sequence[Job]) -> list[int]:
        messages, sizes = [], []
        for job in jobs:
            if job.as_seen is not None:
                raise ValueError(f"Client {job.client}'s job simulates a fault in its local round (faults.nonfinite), "
                                 "which runs on its SuperNode; unset faults.nonfinite on Flower.")
            wire = encode_message(self.setup.strategy, job.message, "down", exact=job.local)
            if not job.local:
                self.ledger.record(server_round, job.client, "down", wire.num_bytes, count_params(wire.payload),
                                   job.channel)  # fmt: skip
            content = to_recorddict(wire, job.message.config, partition_id=job.client, exact=job.local)
            if job.local or job.client in self._held:  # the state goes with the message (module docstring)
                save_state(content, self.setup.clients[job.client].state, prefix=CARRIED_STATE)
                content[CARRY_RECORD] = ConfigRecord({"return": job.local})
                if not job.local:
                    self._held.discard(job.client)
            messages.append(Message(content=content, dst_node_id=self.node_of[job.client],
                                    message_type=MessageType.TRAIN, group_id=str(server_round)))  # fmt: skip
            sizes.append(0 if job.local else wire.num_bytes)
        ids = list(self.grid.push_messages(messages))
        self.num_jobs += len(messages)
        if len(ids) != len(messages) or not all(ids):
            raise RuntimeError(f"Flower pushed {len(ids)} of {len(messages)} messages to the SuperLink: {ids}")
        tickets = []
        for job, message_id, size in zip(jobs, ids, sizes, strict=True):
            ticket = next(self._tickets)
            self._pending[ticket] = (job, message_id, size)
            tickets.append(ticket)
        return tickets

    def wait(self, tickets: Sequence[int]) -> dict[int, Reply]:
        self._pull({self._pending[t][1] for t in tickets})
        return self._collect(tickets)

    def wait_any(self, tickets: Sequence[int]) -> dict[int, Reply]:
        """The replies that are in once the first of these tickets' is (all of them on timeout)."""
        ids = {self._pending[t][1]: t for t in tickets}
        self._pull(set(ids), first_only=True)
        arrived = [t for message_id, t in ids.items() if message_id in self._replies]
        return self._collect(arrived or list(tickets))

    def borrow(self, clients: Sequence[int]) -> dict[int, ClientRuntime]:
        """Fetch the state of clients the ServerApp does not hold yet from their SuperNodes."""
        missing = [cid for cid in clients if cid not in self._held]
        queries = [Message(content=RecordDict({STATE_REQUEST: ConfigRecord({"partition-id": cid})}),
                           dst_node_id=self.node_of[cid], message_type=MessageType.QUERY) for cid in missing]  # fmt: skip
        ids = list(self.grid.push_messages(queries)) if queries else []
        self._pull(set(ids))
        for cid, message_id in zip(missing, ids, strict=True):
            reply = self._replies.pop(message_id, None)
            if reply is None or reply.has_error():
                why = "no reply within round-timeout" if reply is None else reply.error.reason
                raise RuntimeError(
                    f"The SuperNode {self.node_of[cid]} of client {cid} did not send its state, which its group "
                    f"leader's role in the ServerApp needs: {why}"
                )
            self.setup.clients[cid].state = load_state(reply.content, prefix=CARRIED_STATE)
            self._held.add(cid)
        return {cid: self.setup.clients[cid] for cid in clients}

    def lend(self, clients: Sequence[int]) -> None:
        """The ServerApp holds these clients' states (restored from a checkpoint): the next message
        to each carries its state to its SuperNode, whose own copy may be older or gone."""
        self._held.update(clients)

    # ---- helpers -------------------------------------------------------------------------------
    def _pull(self, wanted: set[str], first_only: bool = False) -> None:
        """Pull until every wanted message id has a reply (``first_only``: one has) or ``timeout_s`` has passed."""
        start = time.monotonic()
        missing = wanted - set(self._replies)
        while missing:
            for reply in self.grid.pull_messages(list(missing)):
                self._replies[reply.metadata.reply_to_message_id] = reply
            missing -= set(self._replies)
            done = len(missing) < len(wanted) if first_only else not missing
            if done or time.monotonic() - start >= self.timeout_s:
                break
            time.sleep(self.poll_s)
        self.wait_s += time.monotonic() - start

    def _collect(self, tickets: Sequence[int]) -> dict[int, Reply]:
        """These tickets' replies as pulled so far (``no_reply`` for those not in)."""
        out = {}
        for ticket in tickets:
            job, message_id, size = self._pending.pop(ticket)
            out[ticket] = self._reply(job, size, self._replies.pop(message_id, None))
        return out

    def _reply(self, job: Job, download_bytes: int, reply: Message | None) -> Reply:
        """Check one Flower reply and turn it into the loops' :class:`Reply`."""
        source = f"node {self.node_of[job.client]}"
        out = Reply(job, download_bytes, source=source)
        if reply is None:
            out.reason = f"no_reply: none within round-timeout ({self.timeout_s:.0f} s)"
            return out
        if reply.has_error():
            out.reason = f"error: {reply.error.reason}"
            return out
        record = reply.content.metric_records.get(METRICS_RECORD)
        out.metrics = {k: float(v) for k, v in record.items() if isinstance(v, (int, float))} if record is not None else {}
        out.timing = {ours: out.metrics[theirs] for theirs, ours in _TIMING.items() if theirs in out.metrics}
        try:
            out.wire, partition = from_recorddict(reply.content)
        except PayloadError as exc:
            out.reason = f"payload: {exc}"
            return out
        if partition != job.client:
            out.reason = f"config: reply is for partition {partition}, sent by the node of partition {job.client}"
        elif job.local:
            if CARRIED_STATE + STATE_TREE not in reply.content:
                out.reason = "payload: the reply to the leader's own job lacks the leader's state"
            else:
                self.setup.clients[job.client].state = load_state(reply.content, prefix=CARRIED_STATE)
        return out
