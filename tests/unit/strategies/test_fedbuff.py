"""FedBuff: staleness weights, the buffered server step, and the simulated-time event loop."""

import math
from types import SimpleNamespace

import pytest
import torch

from ecolora.config import ConfigError, load_config
from ecolora.network import parse_scenario
from ecolora.network.ledger import ByteLedger
from ecolora.sim.async_runner import _EventLoop, client_speeds, play_async
from ecolora.sim.executor import InProcessExecutor
from ecolora.strategies import build_strategy
from ecolora.strategies.fedbuff import FedBuff, FedBuffEcoLoRA, staleness_weight

from .fakes import NoisyRuntime, lora_template


def _cfg(*overrides, method="fedbuff"):
    return load_config(None, [f"method={method}", "fed.num_clients=6", "fed.clients_per_round=3",
                              "fedbuff.buffer_size=2", "fedbuff.concurrency=3", "fedbuff.step_time_s=1.0",
                              "network.scenarios=[1/5]", *overrides])


def test_staleness_weight_is_the_documented_function():
    assert staleness_weight(0) == 1.0
    assert staleness_weight(3) == pytest.approx(0.5)  # 1 / sqrt(1 + 3)
    assert staleness_weight(8, exponent=1.0) == pytest.approx(1 / 9)
    assert staleness_weight(5, exponent=0.0) == 1.0
    with pytest.raises(ValueError, match=r"staleness must be >= 0 \(server steps since the download\), got -1."):
        staleness_weight(-1)


def _dispatch(strategy, client):
    return strategy.client_round(client, strategy.configure_round(0, [client.client_id])[client.client_id])


def test_server_step_weights_stale_updates_by_hand():
    strategy = build_strategy(_cfg("fedbuff.server_lr=0.5"), lora_template())
    clients = [NoisyRuntime(cid, num_examples=cid + 1) for cid in range(3)]
    r0, r1, r2 = (_dispatch(strategy, c) for c in clients)  # all at version 0
    p0 = {k: v.clone() for k, v in strategy.global_state.items()}
    metrics = strategy.aggregate_round(1, {10: r0, 11: r1})  # keys are job ids
    assert strategy.version == 1 and metrics["staleness"] == [0, 0]
    for k in p0:
        assert torch.allclose(strategy.global_state[k], p0[k] + 0.5 * (1 * r0.tensors[k] + 2 * r1.tensors[k]) / 3, atol=1e-6)
    r3 = _dispatch(strategy, clients[0])  # fresh, version 1
    p1 = {k: v.clone() for k, v in strategy.global_state.items()}
    metrics = strategy.aggregate_round(2, {12: r2, 13: r3})
    assert metrics["staleness"] == [1, 0] and strategy.version == 2
    w = 1 / math.sqrt(2)
    for k in p1:  # normaliser sum n_i = 3 + 1, not sum n_i w_i
        expected = p1[k] + 0.5 * (3 * w * r2.tensors[k] + 1 * r3.tensors[k]) / 4
        assert torch.allclose(strategy.global_state[k], expected, atol=1e-6)


def test_update_from_a_future_version_is_rejected():
    strategy = build_strategy(_cfg(), lora_template())
    reply = _dispatch(strategy, NoisyRuntime(0, num_examples=1))
    reply.config.update(version=5, round=5)
    metrics = strategy.aggregate_round(1, {0: reply})
    assert metrics["no_update"] and metrics["rejected"][0]["reason"].startswith("round:")
    assert strategy.version == 0


def _loop(config):
    init = lora_template()
    strategy = build_strategy(config, init)
    setup = SimpleNamespace(strategy=strategy, clients=[NoisyRuntime(c, num_examples=c + 1) for c in range(6)])
    ledger = ByteLedger()
    return _EventLoop(config, setup, InProcessExecutor(setup, ledger), ledger), ledger


@pytest.mark.parametrize("method", ["fedbuff", "fedbuff+ecolora"])
def test_event_loop_aggregates_exactly_when_m_updates_arrived(method):
    config = _cfg("fedbuff.buffer_size=2", "fedbuff.concurrency=3", "fed.rounds=4", "ecolora.num_segments=2",
                  method=method)
    loop, ledger = _loop(config)
    steps = []

    def on_step(jobs, buffer, now):
        strategy = loop.setup.strategy
        steps.append({"n": len(buffer), "now": now, "arrivals": [j.arrival_s for j in jobs],
                      "version": strategy.version, "in_flight": len(loop.in_flight),
                      "staleness": loop.last_metrics["staleness"],
                      "expected": [strategy.version - 1 - j.reply.config["version"] for j in jobs]})

    end = play_async(loop, 4, 2, on_step)
    assert [s["n"] for s in steps] == [2, 2, 2, 2]
    assert [s["version"] for s in steps] == [1, 2, 3, 4]
    arrivals = [a for s in steps for a in s["arrivals"]]
    assert arrivals == sorted(arrivals)
    assert all(s["now"] == s["arrivals"][-1] for s in steps)  # the step happens at the M-th arrival
    assert end == steps[-1]["now"]
    assert all(s["in_flight"] == 2 for s in steps)  # concurrency 3, the arrival not yet replaced
    assert all(s["staleness"] == s["expected"] for s in steps)
    assert any(x > 0 for s in steps for x in s["staleness"])
    assert sum(e.direction == "up" for e in ledger.entries) == 8
    assert sum(e.direction == "down" for e in ledger.entries) == loop.num_jobs == 3 + 7


def test_arrival_time_is_download_compute_upload_over_the_client_link():
    config = _cfg("fedbuff.link_sigma=0", "fedbuff.speed_sigma=0")
    loop, ledger = _loop(config)
    loop.dispatch(2.0)
    job = loop.in_flight[0]
    from ecolora.network import tcp_transfer_time_s

    down = tcp_transfer_time_s(ledger.entries[-1].num_bytes, 5.0, 50.0, reverse_rate_mbps=1.0)
    assert job.download_s == pytest.approx(down)
    assert job.compute_s == pytest.approx(1.0)  # step_time_s x 1 local step x factor 1
    assert job.arrival_s == pytest.approx(2.0 + down + 1.0 + job.upload_s)
    assert job.upload_s > job.download_s  # the uplink is 5 x slower


def test_client_speeds_are_seeded_and_spread():
    key, links, factors = client_speeds(_cfg("fedbuff.link=2/10", "fedbuff.link_sigma=0.5", "fedbuff.speed_sigma=0.5"))
    again = client_speeds(_cfg("fedbuff.link=2/10", "fedbuff.link_sigma=0.5", "fedbuff.speed_sigma=0.5"))
    assert key == "2/10" and (links, factors) == again[1:]
    assert len({round(p.uplink_mbps, 6) for p in links.values()}) == 6
    assert all(p.downlink_mbps / p.uplink_mbps == pytest.approx(5.0) for p in links.values())
    key, links, factors = client_speeds(_cfg("fedbuff.link_sigma=0", "fedbuff.speed_sigma=0"))
    assert key == "1/5" and set(links.values()) == {parse_scenario("1/5")} and set(factors.values()) == {1.0}


def test_ecolora_variant_without_compression_equals_fedbuff():
    base = ["ecolora.sparsification=none", "ecolora.segments=false", "ecolora.download_sparsification=false"]
    results = {}
    for method in ("fedbuff", "fedbuff+ecolora"):
        strategy = build_strategy(_cfg(*base, method=method), lora_template())
        clients = [NoisyRuntime(cid, num_examples=cid + 1) for cid in range(3)]
        r0, r1, r2 = (_dispatch(strategy, c) for c in clients)
        strategy.aggregate_round(1, {0: r0, 1: r1})
        strategy.aggregate_round(2, {2: r2})  # stale by one step
        results[method] = strategy.global_lora()
    assert isinstance(build_strategy(_cfg(*base, method="fedbuff+ecolora"), lora_template()), FedBuffEcoLoRA)
    for k in results["fedbuff"]:
        assert torch.allclose(results["fedbuff"][k], results["fedbuff+ecolora"][k], atol=1e-6)


def test_ecolora_segments_follow_dispatch_order_and_replica_moves_once_per_version():
    strategy = build_strategy(_cfg("ecolora.num_segments=3", method="fedbuff+ecolora"), lora_template())
    clients = [NoisyRuntime(cid, num_examples=2) for cid in range(5)]
    segments = [strategy.configure_round(0, [c])[c].config["segment"] for c in (0, 1, 2, 3)]
    assert segments == [0, 1, 2, 0]
    replies = {c: strategy.client_round(clients[c], strategy.configure_round(0, [c])[c]) for c in (0, 1)}
    strategy.aggregate_round(1, replies)
    assert strategy.version == 1
    first = strategy.configure_round(0, [3])[3]  # first dispatch at version 1: the replica moves
    replica = {k: v.clone() for k, v in strategy.compressor.require_replica().replica.items()}
    second = strategy.configure_round(0, [4])[4]  # same version: no move, same delta for a new client
    assert all(torch.equal(replica[k], strategy.compressor.require_replica().replica[k]) for k in replica)
    assert all(torch.equal(first.tensors[k], second.tensors[k]) for k in replica)
    assert first.config["download"] == second.config["download"] == "delta"
    assert (first.config["version"], first.config["segment"], second.config["segment"]) == (1, 0, 1)  # dispatches 6, 7


def test_ecolora_mixing_uses_model_versions():
    beta = 0.7
    strategy = build_strategy(_cfg(f"ecolora.beta={beta}", "ecolora.sparsification=none", "ecolora.segments=false",
                                  method="fedbuff+ecolora"), lora_template())
    client, other = NoisyRuntime(0, num_examples=1), NoisyRuntime(1, num_examples=1)
    strategy.aggregate_round(1, {0: strategy.client_round(client, strategy.configure_round(0, [0])[0])})
    local = {k: v.clone() for k, v in client.state["local"].items()}
    for step in (2, 3):
        strategy.aggregate_round(step, {1: strategy.client_round(other, strategy.configure_round(0, [1])[1])})
    msg = strategy.configure_round(0, [0])[0]  # client 0 last trained at version 0, now version 3
    assert msg.config["download"] == "dense" and msg.config["round"] == 3
    view = {k: msg.tensors[k] for k in local}
    strategy.client_round(client, msg)
    w = math.exp(-beta * 3)
    for k in local:
        assert torch.allclose(client.seen_start[k], (1 - w) * view[k] + w * local[k], atol=1e-6)


def test_build_strategy_types():
    assert type(build_strategy(_cfg(), lora_template())) is FedBuff


def test_config_errors_are_pinned():
    with pytest.raises(ConfigError, match=r"`fedbuff.concurrency` must be <= fed.num_clients \(6\), got 7."):
        _cfg("fedbuff.concurrency=7")
    with pytest.raises(ConfigError, match=r"`fedbuff\+ecolora` needs ecolora.aggregate=delta"):
        _cfg("ecolora.aggregate=paper", "ecolora.num_segments=3", method="fedbuff+ecolora")
    with pytest.raises(ConfigError, match=r"`fedbuff.link` must look like UPLINK/DOWNLINK in Mbps \(e.g. 1/5\), got 'fast'."):
        _cfg("fedbuff.link=fast")
    with pytest.raises(ConfigError, match=r"`fedbuff` needs a client link"):
        load_config(None, ["method=fedbuff", "network.scenarios=[]"])
