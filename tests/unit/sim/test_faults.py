"""Client faults in the in-process round: exact aggregates of what arrived, bytes, and records."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from strategies.fakes import FakeRuntime, lora_template

import ecolora.sim.sync_runner as runner
from ecolora.config import FaultConfig, load_config
from ecolora.network.ledger import ByteLedger
from ecolora.sim.executor import InProcessExecutor
from ecolora.sim.faults import ClientFault, draw_fault, faulty_runtime
from ecolora.strategies import Message, build_strategy


def _round(cfg, sizes, plan, server_round=1, monkeypatch=None, strategy=None, init=None):
    init = lora_template() if init is None else init
    strategy = strategy or build_strategy(cfg, init)
    clients = [FakeRuntime(cid, n) for cid, n in enumerate(sizes)]
    setup = SimpleNamespace(strategy=strategy, clients=clients)
    ledger = ByteLedger()
    work = InProcessExecutor(setup, ledger)
    monkeypatch.setattr(runner, "draw_fault", lambda faults, seed, r, cid: plan.get(cid))
    arrived, per_client, metrics = runner.play_round(cfg, strategy, work, ledger, server_round, list(range(len(sizes))), None)
    return init, strategy, ledger, arrived, per_client, metrics


def test_fedit_aggregates_exactly_what_arrived(monkeypatch):
    cfg = load_config(None, ["method=fedit", "fed.wire_dtype=float32", "fed.num_clients=5"])
    plan = {0: ClientFault("dropout"), 1: ClientFault("straggler"), 2: ClientFault("upload_failure", 0.5)}
    init, strategy, ledger, arrived, rows, metrics = _round(cfg, [10, 20, 30, 40, 50], plan, monkeypatch=monkeypatch)
    # client c adds c + 1; only clients 3 (n=40, +4) and 4 (n=50, +5) arrived
    for k, v in strategy.global_lora().items():
        assert torch.allclose(v, init[k] + (40 * 4 + 50 * 5) / 90, rtol=0, atol=1e-6)
    assert sorted(arrived) == [3, 4] and all(not m.tensors for m in arrived.values())
    assert metrics["dropped"] == [{"client": 0, "reason": "dropout: the client never replied"},
                                  {"client": 1, "reason": "straggler: the reply arrived after the round deadline"}]
    [rejected] = metrics["rejected"]
    assert rejected["client"] == 2 and rejected["reason"].startswith("payload: ")
    assert metrics["no_update"] is False
    assert [r.get("status", "ok").split(":")[0] for r in rows] == ["dropped", "dropped", "rejected", "ok", "ok"]
    up = {c: v.get("upload_bytes", 0) for c, v in ledger.per_client(1).items()}
    assert up[0] == 0  # never replied: nothing crossed
    assert up[1] == up[3] > 0  # the straggler's reply crossed the link in full
    payload = strategy.pack(Message(tensors={k: v + 3 for k, v in init.items()}), "up")
    header = strategy.pack_config({"round": 1}, 30, {"train_loss": 1.9, "initial_loss": 2.5, "compute_s": 0.01, "num_steps": 1.0})
    assert up[2] == len(header) + len(payload) // 2  # half of the codec payload arrived
    assert ledger.per_client(1)[2]["upload_params"] == 0


def test_ecolora_segment_of_a_dropped_uploader_keeps_its_value(monkeypatch):
    cfg = load_config(None, ["method=fedit+ecolora", "fed.clients_per_round=3", "ecolora.num_segments=3",
                             "ecolora.sparsification=none"])
    # round 1: positions 0, 1, 2 upload segments 1, 2, 0; position 2 drops out
    init, strategy, _, arrived, _, metrics = _round(cfg, [1, 1, 1], {2: ClientFault("dropout")}, monkeypatch=monkeypatch)
    flat_init = torch.cat([init[k].reshape(-1) for k in sorted(init)])
    flat = torch.cat([strategy.global_lora()[k].reshape(-1) for k in sorted(init)])
    assert torch.equal(flat[0:9], flat_init[0:9])
    assert torch.allclose(flat[9:18], flat_init[9:18] + 1.0, rtol=0, atol=1e-6)
    assert torch.allclose(flat[18:28], flat_init[18:28] + 2.0, rtol=0, atol=1e-6)
    assert metrics["segments_updated"] == 2 and sorted(arrived) == [0, 1]


@pytest.mark.parametrize("method", ["fedit", "fedit+ecolora", "flora"])
def test_round_without_usable_update_keeps_the_global_model(monkeypatch, caplog, method):
    cfg = load_config(None, [f"method={method}", "fed.clients_per_round=3", "ecolora.num_segments=3"])
    plan = {0: ClientFault("dropout"), 1: ClientFault("straggler"), 2: ClientFault("upload_failure", 0.9)}
    init = lora_template()
    strategy = build_strategy(cfg, init)
    before = {k: v.clone() for k, v in strategy.global_lora().items()}
    with caplog.at_level("WARNING", logger="ecolora"):
        _, strategy, _, arrived, _, metrics = _round(cfg, [1, 2, 3], plan, monkeypatch=monkeypatch, strategy=strategy, init=init)
    after = strategy.global_lora()
    assert metrics["no_update"] is True and arrived == {}
    assert sorted(before) == sorted(after) and all(torch.equal(before[k], after[k]) for k in before)
    assert "round 1: no usable update arrived; the global model is unchanged" in caplog.text


@pytest.mark.parametrize("cut", np.linspace(0.0, 0.999, 25).tolist())
def test_every_broken_upload_is_a_codec_rejection(monkeypatch, cut):
    cfg = load_config(None, ["method=fedit+ecolora", "fed.clients_per_round=2", "ecolora.num_segments=2"])
    _, _, _, arrived, _, metrics = _round(cfg, [3, 4], {1: ClientFault("upload_failure", cut)}, monkeypatch=monkeypatch)
    assert sorted(arrived) == [0]
    assert metrics["rejected"][0]["client"] == 1 and metrics["rejected"][0]["reason"].startswith("payload: ")


def test_fault_draws_are_seeded_per_round_and_client():
    faults = FaultConfig(dropout=0.2, straggler=0.1, upload_failure=0.1)
    first = [draw_fault(faults, 0, r, c) for r in range(1, 41) for c in range(100)]
    again = [draw_fault(faults, 0, r, c) for r in reversed(range(1, 41)) for c in reversed(range(100))][::-1]
    assert first == again  # order of draws does not matter
    assert first != [draw_fault(faults, 1, r, c) for r in range(1, 41) for c in range(100)]
    kinds = [f.kind if f else "ok" for f in first]
    rates = {k: kinds.count(k) / len(kinds) for k in ("dropout", "straggler", "upload_failure")}
    assert rates["dropout"] == pytest.approx(0.2, abs=0.03)
    assert rates["straggler"] == pytest.approx(0.8 * 0.1, abs=0.03)
    assert rates["upload_failure"] == pytest.approx(0.8 * 0.9 * 0.1, abs=0.03)
    assert all(0.0 <= f.cut_fraction < 1.0 for f in first if f and f.kind == "upload_failure")
    assert draw_fault(FaultConfig(), 0, 1, 1) is None
    assert draw_fault(FaultConfig(dropout=1.0), 5, 9, 3) == ClientFault("dropout")


@pytest.mark.parametrize("method", ["fedit", "fedit+ecolora", "ffa+ecolora", "flora+ecolora", "flasc"])
def test_nonfinite_lora_is_rejected_with_its_reason_and_changes_nothing_else(monkeypatch, method):
    """Regression: with sparsification on, top-k raised ValueError on the NaN and the run crashed."""
    cfg = load_config(None, [f"method={method}", "fed.clients_per_round=3", "ecolora.num_segments=3",
                             "ecolora.sparsification=fixed", "ecolora.fixed_density=0.5"])
    *_, rejected_strategy, _, arrived, rows, metrics = _round(cfg, [1, 2, 3], {1: ClientFault("nonfinite")},
                                                           monkeypatch=monkeypatch)
    [rejected] = metrics["rejected"]
    assert rejected["client"] == 1 and rejected["reason"].startswith("non_finite: ")
    assert sorted(arrived) == [0, 2] and rows[1]["status"].startswith("rejected: non_finite")
    *_, dropped_strategy, _, _, _, _ = _round(cfg, [1, 2, 3], {1: ClientFault("dropout")}, monkeypatch=monkeypatch)
    got, expected = rejected_strategy.global_lora(), dropped_strategy.global_lora()
    assert sorted(got) == sorted(expected) and all(torch.equal(got[k], expected[k]) for k in got)


def test_nonfinite_client_keeps_neither_its_lora_nor_a_residual(monkeypatch):
    cfg = load_config(None, ["method=fedit+ecolora", "fed.clients_per_round=2", "ecolora.num_segments=2"])
    clients = [FakeRuntime(0, 1), FakeRuntime(1, 1)]
    strategy = build_strategy(cfg, lora_template())
    messages = strategy.configure_round(1, [0, 1])
    reply = strategy.client_round(faulty_runtime(clients[1], ClientFault("nonfinite")), messages[1])
    assert reply.tensors == {} and reply.config["rejected"].startswith("non_finite: ")
    assert sorted(clients[1].state) == ["view"]  # no local LoRA for eq. 3, no residual


def test_nonfinite_draws_come_after_the_other_faults():
    faults = FaultConfig(dropout=0.2, straggler=0.1, upload_failure=0.1)
    with_nonfinite = FaultConfig(dropout=0.2, straggler=0.1, upload_failure=0.1, nonfinite=0.5)
    first = [draw_fault(faults, 0, r, c) for r in range(1, 11) for c in range(50)]
    second = [draw_fault(with_nonfinite, 0, r, c) for r in range(1, 11) for c in range(50)]
    assert all(a == b for a, b in zip(first, second, strict=True) if a is not None)  # earlier kinds unchanged
    share = sum(1 for b in second if b is not None and b.kind == "nonfinite") / len(second)
    assert share == pytest.approx(0.8 * 0.9 * 0.9 * 0.5, abs=0.05)


# ---- norm clipping --------------------------------------------------------------------------------
def test_fedit_clip_bounds_each_update_before_averaging(monkeypatch):
    numel = sum(v.numel() for v in lora_template().values())  # 28 values
    bound = math.sqrt(numel)  # client c's update is (c + 1) everywhere: norm (c + 1) sqrt(28)
    cfg = load_config(None, ["method=fedit", "fed.wire_dtype=float32", f"faults.clip_norm={bound}"])
    init, strategy, _, _, _, metrics = _round(cfg, [1, 1, 1], {}, monkeypatch=monkeypatch)
    for k, v in strategy.global_lora().items():  # every update clipped to +1 per value
        assert torch.allclose(v, init[k] + 1.0, rtol=0, atol=1e-5)
    assert [c["client"] for c in metrics["clipped"]] == [1, 2]
    assert [c["norm"] for c in metrics["clipped"]] == pytest.approx([2 * bound, 3 * bound], rel=1e-6)


def test_ecolora_clip_in_update_mode(monkeypatch):
    cfg = load_config(None, ["method=fedit+ecolora", "fed.clients_per_round=2", "ecolora.num_segments=1",
                             "ecolora.sparsification=none", "faults.clip_norm=0.5"])
    init, strategy, _, _, _, metrics = _round(cfg, [1, 3], {}, monkeypatch=monkeypatch)
    # both upload the whole LoRA (one segment): updates +1 and +2 per value, each clipped to norm 0.5
    per_value = 0.5 / math.sqrt(28)
    for k, v in strategy.global_lora().items():
        assert torch.allclose(v, init[k] + per_value, rtol=0, atol=1e-5)
    assert len(metrics["clipped"]) == 2


def test_flora_clip_norm_is_the_norm_of_s_b_a():
    cfg = load_config(None, ["method=flora", "flora.ranks=[4]", "faults.clip_norm=0.1"])
    template = {"m.lora_A.weight": torch.zeros(4, 6), "m.lora_B.weight": torch.zeros(5, 4)}
    strategy = build_strategy(cfg, template)
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(4, 6, generator=g), torch.randn(5, 4, generator=g)
    reply = Message(config={"round": 1}, tensors={"m.lora_A.weight": a, "m.lora_B.weight": b}, num_examples=1,
                    metrics={"train_loss": 1.0, "initial_loss": 1.0})
    clipped, norm = strategy.clip_reply(reply, 0.1)
    s = cfg.lora.alpha / 4
    assert norm == pytest.approx(float(torch.linalg.norm(s * b @ a)), rel=1e-5)
    dense = s * clipped.tensors["m.lora_B.weight"] @ clipped.tensors["m.lora_A.weight"]
    assert float(torch.linalg.norm(dense)) == pytest.approx(0.1, rel=1e-5)
    assert torch.equal(clipped.tensors["m.lora_A.weight"], a)


def test_clip_warns_once_for_an_algorithm_that_does_not_define_its_update(caplog):
    from ecolora.strategies.base import Strategy

    class Plain(Strategy):
        name = "plain-test"

        def configure_round(self, server_round, client_ids):
            return {}

        def client_round(self, runtime, message):
            return message

        def global_lora(self):
            return {}

        def aggregate_replies(self, server_round, replies):
            return {"seen": sorted(replies)}

    strategy = Plain(load_config(None, ["faults.clip_norm=1.0"]), {})
    reply = Message(config={"round": 1}, tensors={"x": torch.ones(3) * 10}, num_examples=1,
                    metrics={"train_loss": 1.0, "initial_loss": 1.0})
    with caplog.at_level("WARNING", logger="ecolora"):
        metrics = strategy.aggregate_round(1, {4: reply, 5: reply})
    assert metrics["seen"] == [4, 5] and metrics["clipped"] == []
    assert caplog.text.count("faults.clip_norm is ignored: plain-test does not define its client update.") == 1
