import pytest
import torch

from ecolora.config import FedConfig, RunConfig
from ecolora.strategies import (
    AggregationError,
    FedIT,
    FFALoRA,
    Message,
    build_strategy,
    weighted_average,
)

from .fakes import FakeRuntime, lora_template


def test_weighted_average_matches_hand_computation():
    a = {"x": torch.tensor([1.0, 2.0])}
    b = {"x": torch.tensor([3.0, 6.0])}
    out = weighted_average([a, b], [1, 3])
    assert torch.allclose(out["x"], torch.tensor([(1 * 1 + 3 * 3) / 4, (2 * 1 + 6 * 3) / 4]))


def test_weighted_average_errors():
    with pytest.raises(AggregationError, match="no client reply arrived"):
        weighted_average([], [])
    with pytest.raises(AggregationError, match="lacks tensor 'x'"):
        weighted_average([{"x": torch.ones(1)}, {"y": torch.ones(1)}], [1, 1], keys=["x"])
    with pytest.raises(AggregationError, match=r"has shape \(2,\), expected \(1,\)"):
        weighted_average([{"x": torch.ones(1)}, {"x": torch.ones(2)}], [1, 1])


def _round(strategy, clients, server_round=1):
    msgs = strategy.configure_round(server_round, [c.client_id for c in clients])
    replies = {c.client_id: strategy.client_round(c, msgs[c.client_id]) for c in clients}
    strategy.aggregate_round(server_round, replies)
    return replies


def test_fedit_round_is_sample_weighted_fedavg():
    init = lora_template()
    strategy = FedIT(RunConfig(), init)
    clients = [FakeRuntime(0, num_examples=10), FakeRuntime(1, num_examples=30)]
    _round(strategy, clients)
    # client c adds (c + 1) to every tensor: weighted mean of +1 and +2 with weights 10 and 30 is +1.75
    for k, v in strategy.global_lora().items():
        assert torch.allclose(v, init[k] + 1.75)


def test_ffa_never_changes_or_sends_a():
    init = lora_template()
    strategy = FFALoRA(RunConfig(method="ffa"), init)
    clients = [FakeRuntime(0, 5), FakeRuntime(2, 15)]
    msgs = strategy.configure_round(1, [0, 2])
    assert all("lora_A" not in k for k in msgs[0].tensors)
    replies = {c.client_id: strategy.client_round(c, msgs[c.client_id]) for c in clients}
    assert all("lora_A" not in k for r in replies.values() for k in r.tensors)
    strategy.aggregate_round(1, replies)
    final = strategy.global_lora()
    for k in init:
        if "lora_A" in k:
            assert torch.equal(final[k], init[k])
            assert all(torch.equal(c.lora[k], init[k]) for c in clients)  # frozen during training too
        else:
            assert torch.allclose(final[k], init[k] + (5 * 1 + 15 * 3) / 20)


def test_build_strategy_by_name():
    assert build_strategy(RunConfig(method="ffa"), lora_template()).name == "ffa"
    assert build_strategy(RunConfig(method="ffa+ecolora", fed=FedConfig(clients_per_round=5)), lora_template()).name == "ffa+ecolora"


def test_message_defaults_are_independent():
    a, b = Message(), Message()
    a.config["x"] = 1
    assert b.config == {}
