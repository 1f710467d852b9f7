"""Run-config mapping, client sampling parity and reply validation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from strategies.fakes import FakeRuntime, lora_template

from ecolora.config import ConfigError, load_config
from ecolora.flower.settings import find_config_file, resolve_settings, split_overrides
from ecolora.flower.validate import ReplyError, expected_reply_shapes, validate_reply
from ecolora.sim.runner import sample_clients
from ecolora.strategies import FedIT, Message, build_strategy

ROOT = Path(__file__).resolve().parents[3]


def test_run_config_keys_map_onto_the_ecolora_config(tmp_path):
    settings = resolve_settings({
        "config": "configs/smoke.yaml", "overrides": "method=fedit+ecolora; fed.rounds=2 ;", "out-dir": str(tmp_path),
        "round-timeout": 30, "node-wait": 5.5, "test-corrupt-partition": 1, "test-corrupt-mode": "shape",
    }, search=[ROOT])
    expected = load_config(ROOT / "configs" / "smoke.yaml", ["method=fedit+ecolora", "fed.rounds=2"])
    assert settings.config == expected
    assert (settings.out_dir, settings.round_timeout_s, settings.node_wait_s) == (tmp_path, 30.0, 5.5)
    assert (settings.corrupt_partition, settings.corrupt_mode) == (1, "shape")
    assert resolve_settings({}).config == load_config(None)  # no preset: the defaults
    assert split_overrides(" a=1;;b.c=2 ") == ["a=1", "b.c=2"]


def test_run_config_errors_say_what_is_valid(tmp_path):
    with pytest.raises(ValueError, match="Unknown run-config key\\(s\\) rounds; valid keys: config, node-wait"):
        resolve_settings({"rounds": 2})
    with pytest.raises(ValueError, match="`config` file 'nope.yaml' not found in"):
        resolve_settings({"config": "nope.yaml"}, search=[tmp_path])
    with pytest.raises(ValueError, match="`config` file /nonexistent/x.yaml does not exist"):
        find_config_file("/nonexistent/x.yaml")
    with pytest.raises(ConfigError, match="Unknown key\\(s\\) fed.roundz"):
        resolve_settings({"overrides": "fed.roundz=2"})
    with pytest.raises(ValueError, match="`round-timeout` must be > 0 seconds, got 0.0"):
        resolve_settings({"round-timeout": 0})
    with pytest.raises(ValueError, match="`test-corrupt-mode` must be one of bytes, shape, got 'x'"):
        resolve_settings({"test-corrupt-mode": "x"})


def test_sampling_matches_the_in_process_draw():
    """The ServerApp and run_experiment share sample_clients and the seeded generator."""
    rng, ref = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(3):
        assert sample_clients(rng, 10, 4) == [int(c) for c in ref.choice(10, size=4, replace=False)]


# ---- reply validation ------------------------------------------------------------------------------
def _fedit_round():
    strategy = FedIT(load_config(None), lora_template())
    sent = strategy.configure_round(2, [0])[0]
    reply = strategy.client_round(FakeRuntime(0, num_examples=5), sent)
    return strategy, sent, reply


def test_fedit_expected_shapes_and_a_valid_reply_passes():
    strategy, sent, reply = _fedit_round()
    assert expected_reply_shapes(strategy, sent) == {k: tuple(v.shape) for k, v in lora_template().items()}
    validate_reply(strategy, sent, reply)


def test_ecolora_expects_the_assigned_segment_pieces():
    cfg = load_config(None, ["method=fedit+ecolora", "fed.clients_per_round=3", "ecolora.num_segments=3"])
    strategy = build_strategy(cfg, lora_template())
    sent = strategy.configure_round(1, [4, 2, 0])
    # 28 values in 3 segments [0, 9), [9, 18), [18, 28); position j uploads (j + 1) mod 3.
    total = sum(math.prod(s) for s in expected_reply_shapes(strategy, sent[4]).values())
    assert sent[4].config["segment"] == 1 and total == 9
    assert sum(math.prod(s) for s in expected_reply_shapes(strategy, sent[0]).values()) == 9  # segment 0
    reply = strategy.client_round(FakeRuntime(4, num_examples=3), sent[4])
    validate_reply(strategy, sent[4], reply)
    wrong = Message(config={**reply.config, "segment": 2}, tensors=reply.tensors, num_examples=3, metrics=reply.metrics)
    with pytest.raises(ReplyError, match="Reply has segment 2, expected 1"):
        validate_reply(strategy, sent[4], wrong)


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r.config.update(round=1), "Reply has round 1, expected 2"),
    (lambda r: setattr(r, "num_examples", 0), "num_examples=0, expected >= 1"),
    (lambda r: r.metrics.pop("initial_loss"), "metric 'initial_loss' is None, expected a finite number"),
    (lambda r: r.metrics.update(train_loss=math.nan), "metric 'train_loss' is nan"),
    (lambda r: r.tensors.pop("layers.0.q_proj.lora_A.weight"), r"missing \['layers.0.q_proj.lora_A.weight'\], unexpected \[\]"),
    (lambda r: r.tensors.update(extra=torch.zeros(1)), r"missing \[\], unexpected \['extra'\]"),
    (lambda r: r.tensors.update({"layers.1.q_proj.lora_B.weight": torch.zeros(2, 3)}), r"has shape \(2, 3\), expected \(3, 2\)"),
    (lambda r: r.tensors["layers.0.q_proj.lora_B.weight"].fill_(math.inf), "holds NaN or infinite values"),
])
def test_bad_replies_are_refused_with_a_reason(change, message):
    strategy, sent, reply = _fedit_round()
    change(reply)
    with pytest.raises(ReplyError, match=message):
        validate_reply(strategy, sent, reply)


def test_flora_expects_the_assigned_rank():
    cfg = load_config(None, ["method=flora", "flora.ranks=[2, 1]"])
    strategy = build_strategy(cfg, lora_template())
    sent = strategy.configure_round(1, [1])[1]
    shapes = expected_reply_shapes(strategy, sent)
    assert shapes["layers.0.q_proj.lora_A.weight"] == (1, 4) and shapes["layers.0.q_proj.lora_B.weight"] == (3, 1)
