"""FlowerExecutor without a model: what an error reply and a silent node become; state requests."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from strategies.fakes import FakeRuntime, lora_template

from ecolora.config import load_config
from ecolora.flower import client_app
from ecolora.flower.executor import FlowerExecutor
from ecolora.network.ledger import ByteLedger
from ecolora.sim.executor import Job, receive_reply
from ecolora.strategies import build_strategy

from .inline_grid import InlineGrid


def _executor(client, timeout_s: float = 5.0) -> tuple[FlowerExecutor, ByteLedger, object]:
    cfg = load_config(None, ["method=fedbuff", "fed.num_clients=2", "fed.clients_per_round=2", "fedbuff.concurrency=2"])
    strategy = build_strategy(cfg, lora_template())
    setup = SimpleNamespace(strategy=strategy, clients=[FakeRuntime(c, num_examples=3) for c in range(2)])
    grid = InlineGrid(client, {10: {"partition-id": 0}, 11: {"partition-id": 1}}, {})
    ledger = ByteLedger()
    return FlowerExecutor(grid, {0: 10, 1: 11}, setup, ledger, timeout_s, poll_s=0.01), ledger, strategy


def broken(msg: Message, context: Context) -> Message:
    raise RuntimeError("out of memory")


def test_an_error_reply_becomes_a_reason_and_only_the_download_counts():
    work, ledger, strategy = _executor(broken)
    [ticket] = work.start(1, [Job(1, strategy.configure_round(1, [1])[1])])
    reply = work.wait([ticket])[ticket]
    assert reply.source == "node 11" and reply.download_bytes > 0 and reply.upload_bytes == 0
    assert receive_reply(strategy, ledger, 1, reply) == (None, "error: RuntimeError: out of memory")
    assert [e.direction for e in ledger.entries] == ["down"]


def test_a_node_that_never_answers_is_a_no_reply_after_the_timeout():
    work, ledger, strategy = _executor(broken, timeout_s=0.05)
    work.grid.pull_messages = lambda ids: []  # the reply never comes
    [ticket] = work.start(1, [Job(0, strategy.configure_round(1, [0])[0])])
    reply = work.wait([ticket])[ticket]
    assert reply.reason == "no_reply: none within round-timeout (0 s)"


def test_state_of_another_partition_is_refused():
    work, _, _ = _executor(client_app.app)
    with pytest.raises(RuntimeError, match="The SuperNode 11 of client 0 did not send its state.*holds partition 1"):
        work.node_of[0] = 11
        work.borrow([0])
    query = Message(RecordDict({"state-request": ConfigRecord({"partition-id": 1})}), dst_node_id=11,
                    message_type="query")  # fmt: skip
    [reply] = work.grid.send_and_receive([query])
    assert not reply.has_error() and "carried.ecolora.state.tree" in reply.content


def test_a_fault_of_the_local_round_is_refused_and_restored_states_travel_with_the_next_job():
    work, _, strategy = _executor(client_app.app)
    with pytest.raises(ValueError, match=r"Client 1's job simulates a fault in its local round \(faults.nonfinite\)"):
        work.start(1, [Job(1, strategy.configure_round(1, [1])[1], as_seen=lambda client: client)])
    work.setup.clients[0].state = {"tau": 3}
    work.lend([0])  # e.g. restored from a checkpoint: the next message carries it
    work.start(2, [Job(0, strategy.configure_round(2, [0])[0])])
    [sent] = [m for m in work.grid.sent if m.metadata.message_type == "train"]
    assert "carry" in sent.content.config_records
