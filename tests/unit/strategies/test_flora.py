import pytest
import torch

from ecolora.config import load_config
from ecolora.strategies import build_strategy
from ecolora.strategies.flora import stack_modules

from .fakes import FakeRuntime


def test_stacked_product_equals_weighted_sum_of_client_delta_w():
    g = torch.Generator().manual_seed(0)
    ranks, weights, alpha = [4, 2, 1], [10.0, 30.0, 60.0], 16.0
    clients = [
        {"m.lora_A.weight": torch.randn(r, 6, generator=g), "m.lora_B.weight": torch.randn(5, r, generator=g)}
        for r in ranks
    ]
    stacked = stack_modules(clients, weights, [alpha / r for r in ranks])
    assert stacked["m.lora_A.weight"].shape == (7, 6) and stacked["m.lora_B.weight"].shape == (5, 7)
    expected = sum(
        (w / sum(weights)) * (alpha / r) * (c["m.lora_B.weight"] @ c["m.lora_A.weight"])
        for c, w, r in zip(clients, weights, ranks, strict=False)
    )
    assert torch.allclose(stacked["m.lora_B.weight"] @ stacked["m.lora_A.weight"], expected, atol=1e-5)


def test_flora_sends_missed_stacks_and_download_grows():
    template = {"m.lora_A.weight": torch.zeros(2, 6), "m.lora_B.weight": torch.zeros(5, 2)}
    cfg = load_config(None, ["method=flora", "flora.ranks=[4, 2]", "fed.clients_per_round=2"])
    strategy = build_strategy(cfg, template)
    a, b, c = FakeRuntime(0, 1), FakeRuntime(1, 1), FakeRuntime(2, 1)
    for rt in (a, b, c):
        rt.lora = dict(template)
    for t, group in ((1, [a, b]), (2, [a, b]), (3, [a, c])):
        msgs = strategy.configure_round(t, [r.client_id for r in group])
        replies = {r.client_id: strategy.client_round(r, msgs[r.client_id]) for r in group}
        strategy.aggregate_round(t, replies)
    # round 3: client a missed nothing (gets stack 2), client c never joined (gets stacks 1 and 2)
    assert msgs[0].config["stacks"] == [2] and msgs[2].config["stacks"] == [1, 2]
    assert sum(v.numel() for v in msgs[2].tensors.values()) == 2 * sum(v.numel() for v in msgs[0].tensors.values())
    assert set(c.merged) == {"flora/1", "flora/2"}
    # client ranks cycle over ids: client 0 -> 4, client 1 -> 2; stacked rank 6 per round
    assert strategy.stacks[1]["m.lora_A.weight"].shape == (6, 6)
    total = strategy.global_lora()
    assert total["m.lora_A.weight"].shape == (20, 6)  # ranks 4+2, 4+2, then 4+4 (client 2 has rank 4)


def test_stack_rank_mismatch_is_an_error():
    from ecolora.strategies import AggregationError

    bad = [{"m.lora_A.weight": torch.zeros(2, 3), "m.lora_B.weight": torch.zeros(4, 3)}]
    with pytest.raises(AggregationError, match="A has rank 2 but B has rank 3"):
        stack_modules(bad, [1.0], [1.0])
