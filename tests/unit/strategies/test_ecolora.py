import math

import pytest
import torch

from ecolora import codec
from ecolora.compress import budget_density
from ecolora.config import ConfigError, load_config
from ecolora.strategies import Message, build_strategy
from ecolora.strategies.ecolora import mixing_weight

from .fakes import FakeRuntime, lora_template


def _cfg(*overrides):
    return load_config(None, ["method=fedit+ecolora", "fed.clients_per_round=5", *overrides])


def _run_round(strategy, clients, server_round, drop=()):
    msgs = strategy.configure_round(server_round, [c.client_id for c in clients])
    replies = {c.client_id: strategy.client_round(c, msgs[c.client_id]) for c in clients}
    for cid in drop:
        replies.pop(cid)
    strategy.aggregate_round(server_round, replies)
    return msgs, replies


@pytest.mark.parametrize("mode", ["delta", "paper"])
def test_paper_worked_example_five_clients_three_segments(mode):
    """5 clients, N_s = 3, round 1: positions 0..4 upload segments 1, 2, 0, 1, 2."""
    init = lora_template()
    strategy = build_strategy(_cfg("ecolora.num_segments=3", "ecolora.sparsification=none", f"ecolora.aggregate={mode}"), init)
    clients = [FakeRuntime(cid, num_examples=cid + 1) for cid in range(5)]
    msgs, replies = _run_round(strategy, clients, 1)
    assert [msgs[c].config["segment"] for c in range(5)] == [1, 2, 0, 1, 2]
    assert [replies[c].config["segment"] for c in range(5)] == [1, 2, 0, 1, 2]
    flat_init = torch.cat([init[k].reshape(-1) for k in sorted(init)])
    flat = torch.cat([strategy.global_lora()[k].reshape(-1) for k in sorted(init)])
    # 28 values -> segments [0, 9), [9, 18), [18, 28); client c adds c + 1 to every value.
    expected = flat_init.clone()
    expected[0:9] += 3.0  # segment 0: client 2 alone
    expected[9:18] += (1 * 1 + 4 * 4) / (1 + 4)  # segment 1: clients 0 and 3, weights 1 and 4
    expected[18:28] += (2 * 2 + 5 * 5) / (2 + 5)  # segment 2: clients 1 and 4, weights 2 and 5
    assert torch.allclose(flat, expected, atol=0 if mode == "delta" else 4e-3)  # paper: fp16 parameters
    # each upload carries only its segment
    assert sum(v.numel() for k, v in replies[2].tensors.items() if not k.endswith("@zeros")) == 9


def test_segment_without_uploader_keeps_previous_value():
    init = lora_template()
    strategy = build_strategy(_cfg("ecolora.num_segments=3", "ecolora.sparsification=none"), init)
    clients = [FakeRuntime(cid, num_examples=1) for cid in range(3)]
    _run_round(strategy, clients, 1, drop=(2,))  # position 2 held segment 0
    flat_init = torch.cat([init[k].reshape(-1) for k in sorted(init)])
    flat = torch.cat([strategy.global_lora()[k].reshape(-1) for k in sorted(init)])
    assert torch.equal(flat[0:9], flat_init[0:9])
    assert torch.allclose(flat[9:18], flat_init[9:18] + 1.0)
    assert torch.allclose(flat[18:28], flat_init[18:28] + 2.0)


def test_staleness_mixing_follows_eq3():
    beta = 0.5
    init = lora_template()
    strategy = build_strategy(_cfg("ecolora.num_segments=1", "ecolora.sparsification=none", f"ecolora.beta={beta}"), init)
    a, b = FakeRuntime(0, 1), FakeRuntime(1, 1)
    _run_round(strategy, [a, b], 1)
    local_a = dict(a.state["local"])
    _run_round(strategy, [b], 2)
    global_3 = {k: v for k, v in strategy.global_lora().items()}
    _run_round(strategy, [a], 3)
    w = math.exp(-beta * (3 - 1))
    assert mixing_weight(beta, 3, 1) == pytest.approx(w)
    for k in local_a:
        assert torch.allclose(a.seen_start[k], (1 - w) * global_3[k] + w * local_a[k], atol=1e-6)


def test_first_time_client_starts_from_global():
    init = lora_template()
    strategy = build_strategy(_cfg("ecolora.num_segments=1", "ecolora.sparsification=none"), init)
    _run_round(strategy, [FakeRuntime(0, 1)], 1)
    fresh = FakeRuntime(7, 1)
    g = strategy.global_lora()
    _run_round(strategy, [fresh], 2)
    assert all(torch.allclose(fresh.seen_start[k], g[k]) for k in g)


def test_densities_follow_eq4_after_first_round():
    init = lora_template()
    strategy = build_strategy(_cfg("ecolora.num_segments=1", "ecolora.gamma_a=1.0", "ecolora.gamma_b=2.0"), init)
    msgs, _ = _run_round(strategy, [FakeRuntime(0, 1)], 1)
    assert msgs[0].config["density_a"] == pytest.approx(0.95) and msgs[0].config["density_b"] == pytest.approx(0.95)
    msgs = strategy.configure_round(2, [0])
    progress = 2.5 - 1.9  # L_0 (first-batch loss) minus L_1 (mean train loss of round 1)
    assert msgs[0].config["density_a"] == pytest.approx(0.6 + 0.35 * math.exp(-1.0 * progress))
    assert msgs[0].config["density_b"] == pytest.approx(0.5 + 0.45 * math.exp(-2.0 * progress))


def test_upload_density_is_exact_and_a_b_differ():
    init = {"l.lora_A.weight": torch.randn(10, 10), "l.lora_B.weight": torch.randn(10, 10)}
    strategy = build_strategy(_cfg("ecolora.num_segments=1", "ecolora.sparsification=fixed", "ecolora.fixed_density=0.3"), init)
    msgs = strategy.configure_round(1, [0])
    reply = strategy.client_round(FakeRuntime(0, 1, step=0.0), msgs[0])
    # step 0: the update is zero, so nothing but the residual-free zero tensor: nnz <= 30 per tensor
    assert all(int((v != 0).sum()) <= 30 for v in reply.tensors.values())
    runtime = FakeRuntime(1, 1)
    runtime.train = _noisy_train(runtime)  # type: ignore[method-assign]
    reply = strategy.client_round(runtime, strategy.configure_round(2, [1])[1])
    assert [int((v != 0).sum()) for v in reply.tensors.values()] == [30, 30]


def _noisy_train(runtime):
    original = runtime.train

    def train(server_round, config):
        result = original(server_round, config)
        g = torch.Generator().manual_seed(1)
        runtime.lora = {k: v + torch.randn(v.shape, generator=g) for k, v in runtime.lora.items()}
        return result

    return train


def test_ffa_ecolora_never_sends_or_changes_a():
    init = lora_template()
    strategy = build_strategy(load_config(None, ["method=ffa+ecolora", "fed.clients_per_round=2", "ecolora.num_segments=2"]), init)
    clients = [FakeRuntime(0, 1), FakeRuntime(1, 2)]
    for t in (1, 2):
        msgs, replies = _run_round(strategy, clients, t)
        assert all("lora_A" not in k for m in msgs.values() for k in m.tensors)
        assert all("lora_A" not in k for r in replies.values() for k in r.tensors)
    final = strategy.global_lora()
    assert all(torch.equal(final[k], init[k]) for k in init if "lora_A" in k)


def test_fixed_sparsification_asks_for_the_adaptive_budget():
    """Regression (issue 16, point 7): the fixed ablation defaulted to 0.6, not Table 3's budget."""
    with pytest.raises(ConfigError, match="`ecolora.fixed_density` must be set with sparsification=fixed"):
        _cfg("ecolora.sparsification=fixed")
    assert budget_density([{"upload_density": 0.8}, {"upload_density": None}, {"upload_density": 0.6}]) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="no round of this run records `upload_density`"):
        budget_density([{"round": 1}])


@pytest.mark.parametrize(("encoding", "value_coding", "position_bytes_per_value", "coding"), [
    ("coo", "auto", 2, "raw"), ("coo32", "auto", 4, "raw"), ("golomb", "raw", None, "raw"),
    ("golomb", "exponent", None, "exponent"),
])
def test_encoding_and_value_coding_are_separate_switches(encoding, value_coding, position_bytes_per_value, coding):
    """Regression (point 7): 'w/o encoding' used int32 positions (the paper: 16-bit), and values were
    always entropy-coded where smaller, so the encoding ablation mixed two effects."""
    strategy = build_strategy(_cfg(f"ecolora.encoding={encoding}", f"ecolora.value_coding={value_coding}"), lora_template())
    g = torch.Generator().manual_seed(0)
    values = torch.randn(400, generator=g) * (torch.rand(400, generator=g) < 0.3)
    [row] = codec.describe(strategy.pack(Message(tensors={"layers.0.q_proj.lora_B.weight": values}), "up"))
    assert row["value_coding"] == coding
    if position_bytes_per_value is not None:
        assert row["position_num_bytes"] == position_bytes_per_value * row["nnz"]


def test_upload_density_is_recorded_per_round():
    strategy = build_strategy(_cfg("ecolora.num_segments=2", "ecolora.sparsification=fixed", "ecolora.fixed_density=0.5"),
                              lora_template())
    clients = [FakeRuntime(cid, num_examples=1) for cid in range(5)]
    msgs = strategy.configure_round(1, [c.client_id for c in clients])
    replies = {c.client_id: strategy.client_round(c, msgs[c.client_id]) for c in clients}
    assert strategy.aggregate_round(1, replies)["upload_density"] == pytest.approx(0.5, abs=0.05)
