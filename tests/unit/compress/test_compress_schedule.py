"""The adaptive density schedule (EcoLoRA eq. 4)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from ecolora.compress import AdaptiveK, AdaptiveKConfig, lora_matrix
from ecolora.config import EcoLoRAConfig


@pytest.mark.parametrize("drop", [0.0, 0.1, 0.25, 0.5, 1.0, 3.0])
def test_density_follows_equation_4(drop):
    sched = AdaptiveK()
    l0 = 2.0
    for matrix, k_min, gamma in (("A", 0.6, 1.0), ("B", 0.5, 2.0)):
        expected = k_min + (0.95 - k_min) * math.exp(-gamma * drop)
        assert sched.density(matrix, l0, l0 - drop) == pytest.approx(expected, abs=1e-12)


def test_b_decays_faster_and_lower_than_a():
    sched = AdaptiveK()
    for drop in (0.1, 0.3, 1.0):
        assert sched.density("B", 2.0, 2.0 - drop) < sched.density("A", 2.0, 2.0 - drop)
    assert sched.config.gamma_b > sched.config.gamma_a
    assert sched.density("A", 2.0, -100.0) == pytest.approx(0.6)  # floor
    assert sched.density("B", 2.0, -100.0) == pytest.approx(0.5)


def test_unknown_losses_give_k_max_and_rising_loss_is_clipped():
    sched = AdaptiveK()
    assert sched.density("A", None, None) == 0.95
    assert sched.density("B", 2.0, None) == 0.95
    assert sched.density("A", 2.0, 2.5) == 0.95  # loss went up: exp(+) would exceed k_max


def test_fixed_density_and_name_routing():
    fixed = AdaptiveK(AdaptiveKConfig(fixed_density=0.1))
    assert fixed.density("A", 2.0, 1.0) == 0.1
    assert fixed.density_for("lm_head.weight", 2.0, 1.0) == 0.1
    sched = AdaptiveK()
    name = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
    assert lora_matrix(name) == "B" and lora_matrix("x.lora_A.default.weight") == "A"
    assert lora_matrix("model.norm.weight") is None
    assert sched.density_for(name, 2.0, 1.5) == sched.density("B", 2.0, 1.5)
    assert sched.density_for("model.norm.weight", 2.0, 1.5) == 0.95


def test_config_validation_messages():
    with pytest.raises(ValueError, match=r"`k_max` must be in \(0, 1\], got 1.5."):
        AdaptiveKConfig(k_max=1.5)
    with pytest.raises(ValueError, match=r"`k_min_b` must be <= k_max \(0.4\), got 0.5."):
        AdaptiveKConfig(k_max=0.4, k_min_a=0.3)
    with pytest.raises(ValueError, match="`gamma_a` must be a finite number >= 0, got -1"):
        AdaptiveKConfig(gamma_a=-1)
    with pytest.raises(ValueError, match=r"`fixed_density` must be in \[0, 1\] or None, got 2"):
        AdaptiveKConfig(fixed_density=2)
    with pytest.raises(ValueError, match="matrix must be 'A' or 'B', got 'C'"):
        AdaptiveK().density("C", 1.0, 1.0)
    with pytest.raises(ValueError, match="losses must be finite"):
        AdaptiveK().density("A", 1.0, float("nan"))


def test_schedule_defaults_equal_the_config_defaults():
    """Regression: AdaptiveKConfig had gamma 2/4 while ecolora.gamma_a/gamma_b were 1/2."""
    eco, sched = EcoLoRAConfig(), AdaptiveKConfig()
    for name in ("k_max", "k_min_a", "k_min_b", "gamma_a", "gamma_b"):
        assert getattr(sched, name) == getattr(eco, name), name
    assert {f.name for f in dataclasses.fields(AdaptiveKConfig)} >= {"gamma_a", "gamma_b"}
