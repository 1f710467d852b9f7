"""HierFedLoRA: near-IID grouping, the tau/depth controller, hierarchical rounds, the ledger."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ecolora.config import ConfigError, load_config
from ecolora.network import parse_scenario, round_timing, tcp_transfer_time_s
from ecolora.network.ledger import ByteLedger
from ecolora.sim.executor import InProcessExecutor
from ecolora.sim.faults import ClientFault, faulty_runtime
from ecolora.sim.hier_runner import _group_round, hier_round_timing
from ecolora.sim.transport import InProcessTransport
from ecolora.strategies import build_strategy
from ecolora.strategies.grouping import (
    category_counts,
    control_group,
    distribution_divergence,
    group_divergences,
    near_iid_groups,
)
from ecolora.strategies.hierfedlora import HierFedLoRA

from .fakes import NoisyRuntime, lora_template

LAYER0 = ["layers.0.q_proj.lora_A.weight", "layers.0.q_proj.lora_B.weight"]
LAYER1 = ["layers.1.q_proj.lora_A.weight", "layers.1.q_proj.lora_B.weight"]


# ---- grouping ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["kl", "tv"])
def test_single_category_clients_form_exactly_iid_groups(kind):
    # 6 clients, each holding one of 3 categories; the optimum puts one of each in both groups.
    counts = np.array([[10, 0, 0], [10, 0, 0], [0, 10, 0], [0, 10, 0], [0, 0, 10], [0, 0, 10]])
    groups = near_iid_groups(counts, 2, kind=kind, seed=3)
    assert sorted(len(g) for g in groups) == [3, 3]
    assert np.allclose(group_divergences(counts, groups, kind), 0.0)
    for g in groups:
        assert sorted(int(np.argmax(counts[c])) for c in g) == [0, 1, 2]


def test_swaps_reach_the_optimum_where_greedy_alone_does_not():
    # Greedy order (by size): 1 -> g0, 3 -> g1, 0 -> g1 (closer), 2 -> g0: {1, 2} = (14, 1) and
    # {0, 3} = (8, 7), TV sum 0.098. The optimum {0, 1} = {2, 3} = (11, 4) = the global 22:8 ratio.
    counts = np.array([[4, 3], [7, 1], [7, 0], [4, 4]])
    groups = near_iid_groups(counts, 2, kind="tv", seed=0)
    assert sorted(groups) == [[0, 1], [2, 3]]
    assert group_divergences(counts, groups, "tv").sum() == pytest.approx(0.0, abs=1e-12)


def test_grouping_is_seeded_and_deterministic():
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 20, size=(12, 5))
    assert near_iid_groups(counts, 3, seed=5) == near_iid_groups(counts, 3, seed=5)
    groups = near_iid_groups(counts, 3, seed=5)
    assert sorted(c for g in groups for c in g) == list(range(12)) and [len(g) for g in groups] == [4, 4, 4]
    reference = counts.sum(axis=0)
    mean_client = np.mean([distribution_divergence(c, reference) for c in counts])
    assert group_divergences(counts, groups).max() < mean_client / 4  # groups are far closer to IID


def test_divergences_by_hand():
    assert distribution_divergence(np.array([1, 0]), np.array([1, 1]), "kl") == pytest.approx(np.log(2))
    assert distribution_divergence(np.array([3, 1]), np.array([1, 1]), "tv") == pytest.approx(0.25)
    with pytest.raises(ValueError, match=r"divergence must be one of kl, tv, got 'js'."):
        distribution_divergence(np.array([1]), np.array([1]), "js")
    with pytest.raises(ValueError, match=r"num_groups must be in \[1, 2\] \(the number of clients\), got 3."):
        near_iid_groups(np.array([[1], [1]]), 3)


def test_category_counts_from_partition_stats():
    stats = {"categories": ["a", "b"], "clients": [
        {"partition_id": 1, "num_examples": 2, "category_counts": {"a": 0, "b": 2}},
        {"partition_id": 0, "num_examples": 3, "category_counts": {"a": 3, "b": 0}}]}
    assert category_counts(stats).tolist() == [[3, 0], [0, 2]]


# ---- controller ----------------------------------------------------------------------------------
def test_controller_rule():
    # IID group (h = 0): tau = max, depth = floor(B / tau); fully skewed (h >= 1): tau 1, full depth.
    assert control_group(0.0, 0.8, num_layers=30, max_intra_rounds=3) == (3, 10)
    assert control_group(0.9, 0.8, num_layers=30, max_intra_rounds=3) == (1, 30)
    assert control_group(0.4, 0.8, num_layers=30, max_intra_rounds=3) == (2, 15)  # h = 0.5
    assert control_group(0.0, 0.8, num_layers=30, max_intra_rounds=3, budget=60) == (3, 20)
    # budget smaller than tau: depth 1, tau cut so that tau * depth <= B
    assert control_group(0.0, 0.8, num_layers=2, max_intra_rounds=3) == (2, 1)
    # fixed values win; a fixed depth still bounds the controller's tau
    assert control_group(0.0, 0.8, num_layers=30, max_intra_rounds=3, depth=20) == (1, 20)
    assert control_group(0.0, 0.8, num_layers=30, max_intra_rounds=3, intra_rounds=2, depth=4) == (2, 4)
    assert control_group(0.3, 0.0, num_layers=4, max_intra_rounds=2) == (2, 2)  # IID clients: h = 0


# ---- hierarchical rounds -------------------------------------------------------------------------
def _strategy(*overrides, method="hierfedlora", counts=None):
    config = load_config(None, [f"method={method}", "fed.num_clients=4", "fed.clients_per_round=4",
                                "hier.num_groups=2", "ecolora.num_segments=2", "network.scenarios=[1/5]", *overrides])
    strategy = build_strategy(config, lora_template())
    strategy.form_groups(np.array([[5, 0], [0, 5], [5, 0], [0, 5]]) if counts is None else counts)
    return strategy


def _play(strategy, server_round, clients, ledger=None):
    ledger = ledger or ByteLedger()
    transport = InProcessTransport(strategy, ledger)
    setup = SimpleNamespace(clients=clients, strategy=strategy)
    groups = strategy.round_groups(list(range(len(clients))), {c.client_id: c.num_examples for c in clients})
    downs = strategy.configure_round(server_round, [m[0] for m in groups.values()])
    uploads, traffic, last = {}, {}, {}
    for g, members in groups.items():
        uploads[members[0]], traffic[g] = _group_round(strategy, transport, ledger, server_round, g, members,
                                                       downs[members[0]], last, None, InProcessExecutor(setup, ledger))
    metrics = strategy.aggregate_round(server_round, uploads)
    return uploads, traffic, metrics, ledger


def test_build_strategy_registers_hierfedlora():
    config = load_config(None, ["method=hierfedlora"])
    assert isinstance(build_strategy(config, lora_template()), HierFedLoRA)


def test_depth_limits_training_and_payloads_and_tau_counts_trainings():
    strategy = _strategy("hier.depth=1", "hier.intra_rounds=3", counts=np.array([[5, 0], [0, 5], [0, 5], [5, 0]]))
    assert [p.members for p in strategy.plans] == [(0, 1), (2, 3)]  # one A and one B client each
    assert strategy.trained_keys(1) == LAYER1
    clients = [NoisyRuntime(c, num_examples=c + 1) for c in range(4)]
    before = strategy.global_lora()
    uploads, traffic, metrics, ledger = _play(strategy, 1, clients)
    assert [c.calls for c in clients] == [3, 3, 3, 3]  # tau_g intra rounds for every member
    for c in clients:
        assert c.frozen == set(LAYER0)  # lower layer frozen while training ...
        for k in LAYER0:  # ... unchanged (the shared initial LoRA) ...
            assert torch.equal(c.lora[k], before[k])
    for reply in uploads.values():
        assert sorted(reply.tensors) == LAYER1  # ... and absent from every payload
    after = strategy.global_lora()
    assert all(torch.equal(after[k], before[k]) for k in LAYER0)
    assert not any(torch.equal(after[k], before[k]) for k in LAYER1)
    leaders = {t["leader"] for t in traffic.values()}
    assert leaders == {1, 3}  # most examples lead
    assert all(e.num_params == 8 + 6 for e in ledger.entries)  # layer 1's A (2 x 4) and B (3 x 2), dense
    channels = [(e.channel, e.direction, e.client) for e in ledger.entries]
    assert channels.count(("global", "down", 1)) == channels.count(("global", "up", 3)) == 1
    assert channels.count(("group", "down", 0)) == channels.count(("group", "up", 2)) == 3
    assert not any(e.channel == "group" and e.client in leaders for e in ledger.entries)


def test_server_aggregates_groups_by_hand_with_different_depths():
    strategy = _strategy("hier.intra_rounds=1", counts=np.array([[5, 0], [0, 5], [0, 5], [5, 0]]))
    strategy.plans[0] = strategy.plans[0].__class__(0, (0, 1), 0.0, 1, 2)  # group 0: both layers
    strategy.plans[1] = strategy.plans[1].__class__(1, (2, 3), 0.0, 1, 1)  # group 1: top layer only
    clients = [NoisyRuntime(c, num_examples=c + 1) for c in range(4)]
    before = strategy.global_lora()
    uploads, _, metrics, _ = _play(strategy, 1, clients)
    u0, u1 = uploads[1], uploads[3]
    assert sorted(u0.tensors) == LAYER0 + LAYER1 and sorted(u1.tensors) == LAYER1
    assert (u0.num_examples, u1.num_examples) == (3, 7)
    after = strategy.global_lora()
    for k in LAYER0:  # only group 0 trains layer 0
        assert torch.allclose(after[k], before[k] + u0.tensors[k], atol=1e-6)
    for k in LAYER1:  # both groups, weighted by their examples 3 and 7
        assert torch.allclose(after[k], before[k] + (3 * u0.tensors[k] + 7 * u1.tensors[k]) / 10, atol=1e-6)
    assert metrics["tensors_updated"] == 4


def test_group_update_is_the_weighted_mean_of_member_updates_per_intra_round():
    strategy = _strategy("hier.intra_rounds=1", "hier.depth=2", counts=np.array([[5, 0], [0, 5], [0, 5], [5, 0]]))
    clients = [NoisyRuntime(c, num_examples=c + 1) for c in range(4)]
    start = strategy.global_lora()
    uploads, _, _, _ = _play(strategy, 1, clients)
    for leader, (a, b) in ((1, (0, 1)), (3, (2, 3))):
        for k in LAYER0 + LAYER1:
            u_a = clients[a].lora[k] - start[k]
            u_b = clients[b].lora[k] - start[k]
            expected = (clients[a].num_examples * u_a + clients[b].num_examples * u_b) / (a + b + 2)
            assert torch.allclose(uploads[leader].tensors[k], expected, atol=2e-3)  # fp16 wire rounding


def test_compressed_views_stay_identical_on_both_sides():
    strategy = _strategy("hier.intra_rounds=2", "hier.depth=2", method="hierfedlora+ecolora")
    assert strategy.name == "hierfedlora+ecolora"
    clients = [NoisyRuntime(c, num_examples=c + 1) for c in range(4)]
    for t in (1, 2, 3):
        _, _, metrics, ledger = _play(strategy, t, clients)
        assert metrics["next_density_a"] < 1.0
    for c in clients:
        for k, v in strategy.views[c.client_id].items():
            assert torch.equal(c.state["view"][k], v)
    member_ups = [e for e in ledger.entries if e.channel == "group" and e.direction == "up"]
    assert all(e.num_params < 28 for e in member_ups)  # sparse uploads


def test_hier_round_timing_by_hand():
    traffic = {0: {"leader": 1, "down_bytes": 10_000, "up_bytes": 20_000, "intra": [
        [{"client": 1, "download_bytes": 0, "upload_bytes": 0, "compute_s": 2.0},
         {"client": 0, "download_bytes": 5_000, "upload_bytes": 6_000, "compute_s": 1.0}]]}}
    config = load_config(None, ["method=hierfedlora", "hier.intra_link=10/50"])
    timing = hier_round_timing(traffic, "1/5", config)
    down = tcp_transfer_time_s(10_000, 5.0, 50.0, reverse_rate_mbps=1.0)
    up = tcp_transfer_time_s(20_000, 1.0, 50.0, reverse_rate_mbps=5.0)
    intra = round_timing(traffic[0]["intra"][0], parse_scenario("10/50"))
    assert timing.round_s == pytest.approx(down + intra.round_s + up)
    assert timing.comm_s == pytest.approx(timing.round_s - intra.compute_s)


def test_config_errors_are_pinned():
    with pytest.raises(ConfigError, match=r"`hier.num_groups` must be <= fed.num_clients \(4\), got 5."):
        load_config(None, ["method=hierfedlora", "fed.num_clients=4", "fed.clients_per_round=2", "hier.num_groups=5"])
    with pytest.raises(ConfigError, match=r"`hier.divergence` must be kl or tv, got 'l2'."):
        load_config(None, ["hier.divergence=l2"])
    with pytest.raises(ConfigError, match=r"`hier.depth` must be >= 1 or null, got 0."):
        load_config(None, ["hier.depth=0"])
    with pytest.raises(ConfigError, match=r"`hier.intra_link` must look like UPLINK/DOWNLINK in Mbps"):
        load_config(None, ["hier.intra_link=lan"])
    fresh = build_strategy(load_config(None, ["method=hierfedlora"]), lora_template())
    with pytest.raises(ValueError, match=r"HierFedLoRA has no groups yet: call form_groups\(category counts\) before round 1"):
        fresh.configure_round(1, [0])


def test_group_upload_residual_follows_the_group_when_the_leader_changes():
    """Regression: the group's upload residual was kept on whichever member led the round, so a
    new leader started from an empty residual and the old one kept a stale part of the group's."""
    strategy = _strategy("hier.depth=2", "ecolora.sparsification=fixed", "ecolora.fixed_density=0.5",
                         method="hierfedlora+ecolora")
    group, (a, b) = 0, (NoisyRuntime(0, num_examples=1), NoisyRuntime(2, num_examples=1))
    g = torch.Generator().manual_seed(3)
    start = {k: torch.randn(strategy.global_state[k].shape, generator=g) for k in LAYER0 + LAYER1}
    model = {k: v + torch.randn(v.shape, generator=g) for k, v in start.items()}
    update = {k: model[k] - start[k] for k in start}
    strategy.group_examples[group], strategy.group_losses[group] = 1, (1.0, 2.0)
    strategy.group_start[group], strategy.group_model[group] = start, model
    first = strategy.close_group(a, 1, group).tensors
    strategy.group_model[group] = dict(start)  # round 2: a new leader, the group model did not move
    second = strategy.close_group(b, 2, group).tensors
    for k in start:  # round 2 sends the top half of what round 1 left (U - SC(U)), not nothing
        left = update[k] - first[k]
        kept = second[k] != 0
        assert int(kept.sum()) == round(0.5 * left.numel())
        assert torch.equal(second[k][kept], left[kept].half().float())  # fp16 on the wire
    sent_total = {k: first[k] + second[k] for k in start}
    residual = strategy.compressor.owner_state(f"group{group}")["feedback"]["residuals"][f"hier/group{group}"]
    for k in start:  # eq. 6 over the group's stream: sent + residual = the group's updates
        assert torch.allclose(sent_total[k] + residual[k], update[k], atol=1e-6)
    assert "feedback" not in a.state and "feedback" not in b.state


def test_replan_sets_tau_and_depth_from_the_participants_divergence():
    """Issue 16, point 8: the plan was computed once before round 1; with hier.replan_every it
    follows the divergence of each group's participants (a lone member carries its own skew)."""
    strategy = _strategy("hier.replan_every=2", "hier.max_intra_rounds=3", counts=np.array([[5, 0], [0, 5], [0, 5], [5, 0]]))
    first = list(strategy.plans)
    assert [(p.intra_rounds, p.depth) for p in first] == [(2, 1), (2, 1)]  # IID groups: frequent, shallow
    assert not strategy.replan(2, {0: [0]})  # due in rounds 1, 3, 5, ...
    assert strategy.replan(3, {0: [first[0].members[0]]})
    replanned = strategy.plans[0]
    assert (replanned.intra_rounds, replanned.depth) == (1, 2) and replanned.divergence > 0
    assert replanned.members == first[0].members and strategy.plans[1] == first[1]
    with pytest.raises(ConfigError, match="`hier.replan_every` must be >= 0"):
        _strategy("hier.replan_every=-1")


def test_member_with_nonfinite_lora_stops_the_round_with_its_reason():
    """Regression (issue 16, point 5): top-k raised on the NaN inside the member's compression."""
    strategy = _strategy("hier.intra_rounds=1", "hier.depth=2", method="hierfedlora+ecolora")
    clients = [NoisyRuntime(c, num_examples=c + 1) for c in range(4)]
    clients[0] = faulty_runtime(clients[0], ClientFault("nonfinite"))  # a member, not a leader
    with pytest.raises(RuntimeError, match="sent no usable update: non_finite: "):
        _play(strategy, 1, clients)
