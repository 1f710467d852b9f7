"""EcoLoRACompressor: the one object every +ecolora method holds (schedule, segments, replica, residuals)."""

import math

import pytest
import torch

from ecolora.compress import EcoLoRACompressor, density_fn
from ecolora.config import EcoLoRAConfig


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"m.lora_A.weight": torch.randn(4, 6, generator=g), "m.lora_B.weight": torch.randn(6, 4, generator=g)}


def test_densities_follow_eq4_from_the_observed_losses():
    eco = EcoLoRAConfig(k_max=0.9, k_min_a=0.6, k_min_b=0.3, gamma_a=1.0, gamma_b=2.0)
    comp = EcoLoRACompressor(eco)
    assert comp.densities() == (0.9, 0.9)  # no loss yet: k_max
    comp.observe_losses(2.0, 2.5)  # L_0 = 2.5 (the first round's initial loss), L_{t-1} = 2.0
    comp.observe_losses(1.5, 9.9)  # later initial losses do not move L_0
    drop = 2.5 - 1.5
    expected = (0.6 + 0.3 * math.exp(-1.0 * drop), 0.3 + 0.6 * math.exp(-2.0 * drop))
    assert comp.densities() == pytest.approx(expected)
    with pytest.raises(ValueError, match="losses must be finite"):
        comp.observe_losses(math.nan, 1.0)


def test_no_sparsification_sends_everything_and_keeps_no_residual():
    comp = EcoLoRACompressor(EcoLoRAConfig(sparsification="none"))
    owner: dict[str, object] = {}
    tensors = _tensors()
    out = comp.compress(owner, "up", tensors, 0.5, 0.5)
    assert comp.densities() == (1.0, 1.0)
    assert all(torch.equal(out[k], tensors[k]) for k in tensors) and owner == {}


def test_compress_keeps_the_residual_in_the_owner_state_and_satisfies_eq6():
    comp = EcoLoRACompressor(EcoLoRAConfig())
    owner: dict[str, object] = {}
    g = torch.Generator().manual_seed(1)
    total = {k: torch.zeros_like(v) for k, v in _tensors().items()}
    sent_total = {k: torch.zeros_like(v) for k, v in total.items()}
    for _ in range(5):
        update = {k: torch.randn(v.shape, generator=g) for k, v in total.items()}
        sent = comp.compress(owner, "up", update, 0.5, 0.25)
        for k in total:
            total[k] += update[k]
            sent_total[k] += sent[k]
        assert int((sent["m.lora_A.weight"] != 0).sum()) == 12 and int((sent["m.lora_B.weight"] != 0).sum()) == 6
    residual = owner["feedback"]["residuals"]["up"]  # type: ignore[index]
    for k in total:
        assert torch.allclose(sent_total[k] + residual[k], total[k], atol=1e-5)


def test_owner_states_and_replica_survive_a_state_dict_round_trip():
    tensors = _tensors()
    comp = EcoLoRACompressor(EcoLoRAConfig(num_segments=2), tensors)
    target = {k: v + 1.0 for k, v in tensors.items()}
    comp.require_replica().advance(target, density_fn(0.5, 0.5))
    comp.compress(comp.owner_state("group1"), "g", target, 0.5, 0.5)
    comp.observe_losses(1.0, 2.0)
    other = EcoLoRACompressor(EcoLoRAConfig(num_segments=2), tensors)
    other.load_state_dict(comp.state_dict())
    assert other.densities() == comp.densities()
    assert other.segment(1, 4) == comp.segment(1, 4) == 1
    a, b = comp.require_replica().delta_for(7), other.require_replica().delta_for(7)
    assert all(torch.equal(a[k], b[k]) for k in a)
    r1 = comp.owner_state("group1")["feedback"]["residuals"]["g"]
    r2 = other.owner_state("group1")["feedback"]["residuals"]["g"]
    assert all(torch.equal(r1[k], r2[k]) for k in r1)


def test_methods_without_tensors_have_no_layout():
    comp = EcoLoRACompressor(EcoLoRAConfig())
    with pytest.raises(ValueError, match="no segment layout"):
        comp.segment(0, 1)
    with pytest.raises(ValueError, match="no download replica"):
        comp.require_replica()
