"""Message <-> RecordDict and client state <-> Context.state, through Flower's protobuf serde."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from strategies.fakes import lora_template

from ecolora import codec
from ecolora.config import RunConfig
from ecolora.flower.records import (
    PayloadError,
    WireMessage,
    decode_message,
    encode_message,
    from_recorddict,
    load_state,
    payload_stype,
    save_state,
    to_recorddict,
)
from ecolora.strategies import FedIT, Message, Strategy


def _over_the_wire(content: RecordDict) -> RecordDict:
    return recorddict_from_proto(recorddict_to_proto(content))


def _message() -> Message:
    tensors = {k: v + 0.5 for k, v in lora_template().items()}
    return Message(
        config={"round": 3, "segment": 1, "density_a": 0.75, "density_b": 0.5, "download": "delta"},
        tensors=tensors,
        num_examples=17,
        metrics={"train_loss": 1.25, "compute_s": 0.125},
    )


def test_payload_array_fields_and_ledger_size_match_the_in_process_convention():
    strategy = FedIT(RunConfig(), lora_template())
    message = _message()
    wire = encode_message(strategy, message, "up")
    header = Strategy.pack_config(message.config, message.num_examples, message.metrics)
    assert wire.payload == strategy.pack(message, "up") and wire.header == header
    assert wire.num_bytes == len(strategy.pack(message, "up")) + len(header)
    content = to_recorddict(wire, message.config, partition_id=4)
    array = content.array_records["payload"]["payload"]
    assert (array.dtype, array.shape, array.stype) == (
        "uint8",
        (len(wire.payload),),
        f"ecolora/{codec.FORMAT_VERSION}",
    )
    assert payload_stype() == f"ecolora/{codec.FORMAT_VERSION}"
    view = content.config_records["header"]
    assert (view["server-round"], view["segment"], view["density-a"], view["density-b"]) == (
        3,
        1,
        0.75,
        0.5,
    )


def test_message_round_trip_through_flower_serde_is_exact():
    strategy = FedIT(RunConfig(), lora_template())
    message = _message()
    wire = encode_message(strategy, message, "down")
    got_wire, partition = from_recorddict(
        _over_the_wire(to_recorddict(wire, message.config, 2, {"x": 1.0}))
    )
    assert partition == 2 and got_wire == wire
    got = decode_message(strategy, got_wire)
    assert (
        got.config == message.config and got.num_examples == 17 and got.metrics == message.metrics
    )
    for k, v in message.tensors.items():  # fp16 on the wire (FedIT's dense default)
        assert torch.equal(got.tensors[k], v.half().float())


def test_each_message_gets_its_own_recorddict():
    wire = WireMessage(payload=b"\x01\x02", header=b"{}")
    a, b = to_recorddict(wire, {}, 0), to_recorddict(wire, {}, 1)
    assert a is not b and a.config_records["header"] is not b.config_records["header"]
    assert (
        a.config_records["header"]["partition-id"] == 0
        and b.config_records["header"]["partition-id"] == 1
    )


def _content(array: Array, header: dict) -> RecordDict:
    return RecordDict({"payload": ArrayRecord({"payload": array}), "header": ConfigRecord(header)})


def test_from_recorddict_rejects_foreign_or_damaged_records():
    good = Array(dtype="uint8", shape=(2,), stype=payload_stype(), data=b"ab")
    with pytest.raises(PayloadError, match="lacks the ecolora records"):
        from_recorddict(RecordDict({"arrays": ArrayRecord({"x": Array(np.zeros(2))})}))
    with pytest.raises(PayloadError, match=r"stype is 'numpy.ndarray', expected 'ecolora/"):
        from_recorddict(
            _content(Array(np.zeros(2, dtype=np.uint8)), {"json": b"{}", "partition-id": 0})
        )
    with pytest.raises(PayloadError, match=r"must be uint8 of shape \(2,\), got uint8 \(3,\)"):
        from_recorddict(
            _content(
                Array(dtype="uint8", shape=(3,), stype=payload_stype(), data=b"ab"),
                {"json": b"{}", "partition-id": 0},
            )
        )
    with pytest.raises(PayloadError, match="must hold bytes 'json' and an int 'partition-id'"):
        from_recorddict(_content(good, {"json": "{}", "partition-id": 0}))


def test_decode_message_rejects_bad_header_and_bad_payload():
    strategy = FedIT(RunConfig(), lora_template())
    wire = encode_message(strategy, _message(), "up")
    with pytest.raises(PayloadError, match="not an ecolora JSON header"):
        decode_message(strategy, WireMessage(wire.payload, b"not json"))
    with pytest.raises(PayloadError, match="not an ecolora JSON header"):
        decode_message(strategy, WireMessage(wire.payload, json.dumps({"config": 1}).encode()))
    with pytest.raises(
        PayloadError, match=f"Payload of {len(wire.payload) // 2} bytes does not decode"
    ):
        decode_message(strategy, WireMessage(wire.payload[: len(wire.payload) // 2], wire.header))


def test_client_state_round_trip_is_exact_and_keeps_types():
    g = torch.Generator().manual_seed(1)
    state = {
        "view": {
            "a.lora_A.weight": torch.randn(2, 3, generator=g),
            "a.lora_B.weight": torch.zeros(4, 2),
        },
        "tau": 3,
        "feedback": {
            "residuals": {"up/1": {"x": torch.randn(5, generator=g)}},
            "num_values_in": {"up/1": 10},
        },
        "bf16": torch.randn(3, generator=g).to(torch.bfloat16),
        "counts": np.arange(4, dtype=np.int64),
        "by_round": {1: [0.5, None, True], 2: ("x", 7)},
    }
    target = RecordDict()
    save_state(target, state)
    target = _over_the_wire(target)
    got = load_state(target)
    assert got["tau"] == 3 and got["by_round"] == {1: [0.5, None, True], 2: ("x", 7)}
    assert got["bf16"].dtype == torch.bfloat16 and torch.equal(got["bf16"], state["bf16"])
    assert torch.equal(got["view"]["a.lora_A.weight"], state["view"]["a.lora_A.weight"])
    assert torch.equal(
        got["feedback"]["residuals"]["up/1"]["x"], state["feedback"]["residuals"]["up/1"]["x"]
    )
    assert got["feedback"]["num_values_in"] == {"up/1": 10}
    np.testing.assert_array_equal(got["counts"], state["counts"])
    assert load_state(RecordDict()) == {}


def test_two_states_live_side_by_side_under_prefixes():
    target = RecordDict()
    save_state(target, {"a": torch.ones(2)})
    save_state(target, {"b": torch.zeros(3)}, prefix="flora.")
    assert set(load_state(target)) == {"a"} and set(load_state(target, prefix="flora.")) == {"b"}


def test_save_state_refuses_objects_it_cannot_store():
    with pytest.raises(TypeError, match="Client state holds a object; only tensors"):
        save_state(RecordDict(), {"x": object()})
    with pytest.raises(TypeError, match="dict keys must be JSON scalars, got tuple"):
        save_state(RecordDict(), {(1, 2): 3})
