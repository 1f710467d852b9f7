"""The ClientApp's round (state in Context.state, FLoRA replay) and the ServerApp's partition discovery."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from flwr.app import RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from strategies.fakes import FakeRuntime, lora_template

from ecolora.config import load_config
from ecolora.flower import client_app
from ecolora.flower.client_app import partition_of, run_client_round
from ecolora.flower.records import decode_message, encode_message, from_recorddict, to_recorddict
from ecolora.flower.server_app import discover_partitions
from ecolora.strategies import build_strategy

from .inline_grid import InlineGrid


def _wire(content: RecordDict) -> RecordDict:
    return recorddict_from_proto(recorddict_to_proto(content))


def test_client_state_lives_in_context_state_and_matches_a_persistent_client():
    """A client rebuilt from Context.state each round answers exactly like one kept in memory."""
    cfg = load_config(
        None, ["method=fedit+ecolora", "fed.clients_per_round=2", "ecolora.num_segments=2"]
    )
    server = build_strategy(cfg, lora_template())
    client_side = build_strategy(cfg, lora_template())
    fresh = {
        cid: FakeRuntime(cid, num_examples=4 + cid) for cid in range(2)
    }  # state wiped each round
    kept = {cid: FakeRuntime(cid, num_examples=4 + cid) for cid in range(2)}  # state in memory
    states = {cid: RecordDict() for cid in range(2)}
    setup = SimpleNamespace(strategy=client_side, clients=[fresh[0], fresh[1]])
    for server_round, order in ((1, [0, 1]), (2, [1, 0]), (3, [0, 1])):
        messages = server.configure_round(server_round, order)
        replies = {}
        for cid in order:
            down = encode_message(server, messages[cid], "down")
            fresh[cid].state = {"junk": 1}  # what a new process would not have: must be replaced
            content = run_client_round(
                setup, cid, _wire(to_recorddict(down, messages[cid].config, cid)), states[cid]
            )
            states[cid] = _wire(states[cid])
            wire, partition = from_recorddict(_wire(content))
            reference = client_side.client_round(kept[cid], decode_message(client_side, down))
            assert partition == cid and wire == encode_message(client_side, reference, "up")
            replies[cid] = decode_message(server, wire)
        server.aggregate_round(server_round, replies)
    assert (
        set(fresh[0].state) == {"view", "local", "tau", "feedback"} and fresh[0].state["tau"] == 3
    )


def test_flora_client_in_a_new_process_replays_the_stacks_it_received_before():
    cfg = load_config(None, ["method=flora", "flora.ranks=[2]"])
    server = build_strategy(cfg, lora_template())
    client_side = build_strategy(cfg, lora_template())
    state = RecordDict()
    merged_by_process = []
    for server_round in (1, 2, 3):
        messages = server.configure_round(server_round, [0])
        runtime = FakeRuntime(0, num_examples=3)  # a new ClientApp process each round
        setup = SimpleNamespace(strategy=client_side, clients=[runtime])
        down = encode_message(server, messages[0], "down")
        content = run_client_round(setup, 0, to_recorddict(down, messages[0].config, 0), state)
        merged_by_process.append(sorted(runtime.merged))
        wire, _ = from_recorddict(content)
        server.aggregate_round(server_round, {0: decode_message(server, wire)})
    # Round 3's message carries only stack 2 (the client synced after round 1), yet the new process
    # merges stacks 1 and 2: stack 1 comes from Context.state.
    assert merged_by_process == [[], ["flora/1"], ["flora/1", "flora/2"]]


def test_client_refuses_a_message_for_another_partition_and_a_node_without_partition():
    cfg = load_config(None, ["method=fedit"])
    strategy = build_strategy(cfg, lora_template())
    message = strategy.configure_round(1, [1])[1]
    content = to_recorddict(
        encode_message(strategy, message, "down"), message.config, partition_id=1
    )
    setup = SimpleNamespace(strategy=strategy, clients=[FakeRuntime(0, 3), FakeRuntime(1, 3)])
    with pytest.raises(
        ValueError, match="Message is for partition 1, but this SuperNode holds partition 0"
    ):
        run_client_round(setup, 0, content, RecordDict())
    with pytest.raises(ValueError, match="no partition-id; start it with --node-config"):
        partition_of({"num-partitions": 2})


def _grid(node_configs: dict[int, dict]) -> InlineGrid:
    return InlineGrid(client_app.app, node_configs, {})


def test_discovery_maps_partitions_to_nodes():
    grid = _grid(
        {10: {"partition-id": 1, "num-partitions": 2}, 11: {"partition-id": 0, "num-partitions": 2}}
    )
    assert discover_partitions(grid, 2, wait_s=1, timeout_s=5) == {0: 11, 1: 10}
    assert all(m.metadata.message_type == "query" for m in grid.sent)


def test_discovery_errors_name_the_problem():
    with pytest.raises(RuntimeError, match="Partition 0 is held by nodes 10 and 11"):
        discover_partitions(_grid({10: {"partition-id": 0}, 11: {"partition-id": 0}}), 2, 1, 5)
    with pytest.raises(
        RuntimeError, match=r"No SuperNode holds partition\(s\) \[1\]; partitions seen: \[0\]"
    ):
        discover_partitions(
            _grid({10: {"partition-id": 0}, 11: {}}), 2, 1, 5
        )  # 11 answers with an error
    with pytest.raises(
        RuntimeError, match="1 SuperNodes connected after 1 s, fed.num_clients needs 2"
    ):
        discover_partitions(_grid({10: {"partition-id": 0}}), 2, wait_s=0.6, timeout_s=5)
