"""Every rejection reason of ecolora.strategies.validation, pinned, and the others still aggregated."""

from __future__ import annotations

import math
import re

import pytest
import torch
from strategies.fakes import FakeRuntime, lora_template

from ecolora.config import load_config
from ecolora.strategies import AggregationError, Message, build_strategy
from ecolora.strategies.validation import REASON_CODES, reason_code, validate_update


def _fedit(*overrides: str):
    init = lora_template()
    return init, build_strategy(load_config(None, ["method=fedit", *overrides]), init)


def _good_reply(init, server_round=1, value=1.0, n=10) -> Message:
    return Message(config={"round": server_round}, tensors={k: v + value for k, v in init.items()},
                   num_examples=n, metrics={"train_loss": 1.0, "initial_loss": 2.0})


def _tamper(reply: Message, **changes) -> Message:
    fields = {"config": dict(reply.config), "tensors": dict(reply.tensors),
              "num_examples": reply.num_examples, "metrics": dict(reply.metrics)}
    fields.update(changes)
    return Message(**fields)


A0 = "layers.0.q_proj.lora_A.weight"
B0 = "layers.0.q_proj.lora_B.weight"


def _bad_replies(init):
    good = _good_reply(init)
    tensors = dict(good.tensors)
    return {
        "round": (_tamper(good, config={"round": 2}), r"^round: reply answers round 2, expected 1$"),
        "num_examples_zero": (_tamper(good, num_examples=0), r"^num_examples: reply declares 0 training examples, expected an integer in >= 1$"),
        "num_examples_bool": (_tamper(good, num_examples=True), r"^num_examples: reply declares True"),
        "num_examples_float": (_tamper(good, num_examples=3.5), r"^num_examples: reply declares 3.5"),
        "metric_missing": (_tamper(good, metrics={"train_loss": 1.0}), r"^metric: 'initial_loss' is None, expected a finite number$"),
        "metric_nan": (_tamper(good, metrics={"train_loss": math.nan, "initial_loss": 2.0}), r"^metric: 'train_loss' is nan, expected a finite number$"),
        "unknown_tensor": (_tamper(good, tensors={**tensors, "evil.weight": torch.zeros(1)}), r"^unknown_tensor: 'evil.weight' not asked for$"),
        "missing_tensor": (_tamper(good, tensors={k: v for k, v in tensors.items() if k != B0}), rf"^missing_tensor: '{B0}' absent$"),
        "dtype_int": (_tamper(good, tensors={**tensors, A0: tensors[A0].long()}), rf"^dtype: '{A0}' is torch.int64, expected float16, bfloat16 or float32$"),
        "dtype_f64": (_tamper(good, tensors={**tensors, A0: tensors[A0].double()}), rf"^dtype: '{A0}' is torch.float64"),
        "shape": (_tamper(good, tensors={**tensors, A0: tensors[A0].T.contiguous()}), rf"^shape: '{A0}' has shape \(4, 2\), expected \(2, 4\)$"),
        "nan": (_tamper(good, tensors={**tensors, B0: torch.full((3, 2), math.nan)}), rf"^non_finite: '{B0}' holds NaN or infinite values$"),
        "inf": (_tamper(good, tensors={**tensors, B0: torch.full((3, 2), math.inf)}), rf"^non_finite: '{B0}'"),
    }


@pytest.mark.parametrize("case", list(_bad_replies(lora_template())))
def test_each_bad_update_is_rejected_with_its_reason_and_the_good_one_aggregated(case):
    init, strategy = _fedit()
    strategy.configure_round(1, [0, 1])
    bad, pattern = _bad_replies(init)[case]
    strategy.aggregate_begin(1)
    reason = strategy.aggregate_add(1, bad)
    assert reason is not None and reason_code(reason) in REASON_CODES
    assert re.match(pattern, reason), reason
    assert strategy.aggregate_add(0, _good_reply(init, value=3.0)) is None
    metrics = strategy.aggregate_end(1)
    assert metrics["rejected"] == [{"client": 1, "reason": reason}] and metrics["no_update"] is False
    for k, v in strategy.global_lora().items():  # only the good reply (+3) counts
        assert torch.allclose(v, init[k] + 3.0, rtol=0, atol=1e-6)


def test_duplicate_and_not_asked():
    init, strategy = _fedit()
    strategy.configure_round(1, [0, 1])
    strategy.aggregate_begin(1)
    assert strategy.aggregate_add(0, _good_reply(init, value=1.0, n=1)) is None
    assert strategy.aggregate_add(0, _good_reply(init, value=9.0, n=1)) == "duplicate: client 0 already replied in round 1"
    assert strategy.aggregate_add(7, _good_reply(init, value=9.0, n=1)) == "not_asked: client 7 was not sampled in round 1"
    metrics = strategy.aggregate_end(1)
    assert [r["client"] for r in metrics["rejected"]] == [0, 7]
    assert all(torch.allclose(v, init[k] + 1.0, rtol=0, atol=1e-6) for k, v in strategy.global_lora().items())


def test_max_num_examples_bounds_the_declared_weight():
    init, strategy = _fedit("faults.max_num_examples=100")
    strategy.configure_round(1, [0, 1])
    strategy.aggregate_begin(1)
    assert strategy.aggregate_add(0, _good_reply(init, value=1.0, n=100)) is None
    reason = strategy.aggregate_add(1, _good_reply(init, value=50.0, n=10**9))
    assert reason == "num_examples: reply declares 1000000000 training examples, expected an integer in [1, 100]"
    strategy.aggregate_end(1)
    assert all(torch.allclose(v, init[k] + 1.0, rtol=0, atol=1e-6) for k, v in strategy.global_lora().items())


def test_ecolora_segment_must_be_the_one_asked_for():
    init = lora_template()
    cfg = load_config(None, ["method=fedit+ecolora", "fed.clients_per_round=3", "ecolora.num_segments=3",
                             "ecolora.sparsification=none"])
    strategy = build_strategy(cfg, init)
    msgs = strategy.configure_round(1, [0, 1, 2])  # positions 0, 1, 2 -> segments 1, 2, 0
    replies = {c: strategy.client_round(FakeRuntime(c, 1), msgs[c]) for c in (0, 1, 2)}
    swapped = _tamper(replies[1], config={"round": 1, "segment": 1})
    garbage = _tamper(replies[2], config={"round": 1, "segment": "zero"})
    strategy.aggregate_begin(1)
    assert strategy.aggregate_add(0, replies[0]) is None
    assert strategy.aggregate_add(1, swapped) == "segment: reply carries segment 1, the client was asked for 2"
    assert strategy.aggregate_add(2, garbage) == "segment: reply carries segment 'zero', the client was asked for 0"
    metrics = strategy.aggregate_end(1)
    assert metrics["segments_updated"] == 1 and len(metrics["rejected"]) == 2
    # a reply for the right segment with the wrong piece length
    strategy.configure_round(2, [0])  # position 0 in round 2 -> segment 2 = flat [18, 28): A1[4:8], B1
    a1, b1 = "layers.1.q_proj.lora_A.weight", "layers.1.q_proj.lora_B.weight"
    short = Message(config={"round": 2, "segment": 2}, tensors={a1: torch.zeros(3), b1: torch.zeros(6)},
                    num_examples=1, metrics={"train_loss": 1.0, "initial_loss": 1.0})
    strategy.aggregate_begin(2)
    assert strategy.aggregate_add(0, short) == f"shape: '{a1}' has shape (3,), expected (4,)"


def test_unknown_request_uses_the_reply_config_and_rejects_garbage():
    init = lora_template()
    cfg = load_config(None, ["method=fedit+ecolora", "fed.clients_per_round=3", "ecolora.num_segments=3"])
    strategy = build_strategy(cfg, init)  # configure_round never called: the request is unknown
    strategy.aggregate_begin(1)
    reply = Message(config={"round": 1, "segment": 7}, tensors={}, num_examples=1,
                    metrics={"train_loss": 1.0, "initial_loss": 1.0})
    reason = strategy.aggregate_add(3, reply)
    assert reason is not None and reason.startswith("config: reply config {'round': 1, 'segment': 7} does not say what it answers")


def test_payload_rejection_recorded_by_the_engine_and_no_update_round():
    init, strategy = _fedit()
    strategy.configure_round(1, [0])
    strategy.aggregate_begin(1)
    strategy.aggregate_reject(0, "payload: checksum mismatch")
    metrics = strategy.aggregate_end(1)
    assert metrics == {"no_update": True, "rejected": [{"client": 0, "reason": "payload: checksum mismatch"}]}
    assert all(torch.equal(v, init[k]) for k, v in strategy.global_lora().items())


def test_aggregate_add_needs_begin_and_end_needs_the_same_round():
    init, strategy = _fedit()
    with pytest.raises(AggregationError, match=r"aggregate_add needs aggregate_begin\(server_round\) first"):
        strategy.aggregate_add(0, _good_reply(init))
    strategy.aggregate_begin(1)
    with pytest.raises(AggregationError, match=r"aggregate_end\(2\) but round 1 was begun"):
        strategy.aggregate_end(2)


def test_validate_update_is_pure_and_accepts_a_good_reply():
    init = lora_template()
    shapes = {k: tuple(v.shape) for k, v in init.items()}
    assert validate_update(_good_reply(init), server_round=1, shapes=shapes) is None
    assert validate_update(_good_reply(init).__class__(config={"round": 1}, tensors={"x": torch.ones(2, dtype=torch.bfloat16)},
                                                       num_examples=1, metrics={"train_loss": 0.0, "initial_loss": 0.0}),
                           server_round=1) is None  # no shapes: names are not checked, dtype and values are


def test_a_tiny_payload_cannot_declare_a_huge_tensor():
    from ecolora.codec import CodecError, pack

    bomb = pack({"x": torch.zeros(10_000, 1000)})  # all zeros: a few dozen bytes on the wire
    assert len(bomb) < 100
    _, fedit = _fedit()
    with pytest.raises(CodecError, match=r"tensor 'x' dim 0 = 10000 exceeds the limit 28"):
        fedit.unpack(bomb)
    eco = build_strategy(load_config(None, ["method=ffa+ecolora", "fed.clients_per_round=2", "ecolora.num_segments=2"]),
                         lora_template())
    with pytest.raises(CodecError, match=r"dim 0 = 10000 exceeds the limit 12"):  # FFA exchanges B only
        eco.unpack(bomb)
