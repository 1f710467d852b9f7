"""DPO loss against hand-computed values (Rafailov et al. 2023, eq. 7)."""

from __future__ import annotations

import math

import pytest
import torch

from ecolora.client.dpo import dpo_loss


def test_dpo_loss_matches_hand_computed_case() -> None:
    # pc=-1, pr=-2, rc=-1.5, rr=-1.5, beta=0.5:
    # chosen log-ratio 0.5, rejected log-ratio -0.5, logits 0.5 * (0.5 + 0.5) = 0.5,
    # loss = -log sigmoid(0.5) = log(1 + e^-0.5) = 0.474077...
    losses, chosen, rejected = dpo_loss(
        torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5]), 0.5
    )
    assert losses.item() == pytest.approx(math.log1p(math.exp(-0.5)), abs=1e-6)
    assert losses.item() == pytest.approx(0.4740770, abs=1e-6)
    assert chosen.item() == pytest.approx(0.25)
    assert rejected.item() == pytest.approx(-0.25)


def test_dpo_loss_is_per_pair_and_log2_when_policy_equals_reference() -> None:
    logps = torch.tensor([-3.0, -7.0, -1.0])
    losses, chosen, rejected = dpo_loss(logps, logps - 1, logps, logps - 1, 0.1)
    assert losses.shape == (3,)
    assert torch.allclose(losses, torch.full((3,), math.log(2.0)))
    assert torch.equal(chosen, torch.zeros(3)) and torch.equal(rejected, torch.zeros(3))


def test_dpo_loss_gradient_raises_chosen_and_lowers_rejected() -> None:
    pc = torch.tensor([-2.0], requires_grad=True)
    pr = torch.tensor([-2.0], requires_grad=True)
    losses, chosen, _ = dpo_loss(pc, pr, torch.tensor([-2.0]), torch.tensor([-2.0]), 0.1)
    losses.sum().backward()
    # d/d pc of -log sigmoid(beta * (pc - pr)) at 0 = -beta / 2
    assert pc.grad.item() == pytest.approx(-0.05)
    assert pr.grad.item() == pytest.approx(0.05)
    assert not chosen.requires_grad


@pytest.mark.parametrize("beta", [0.0, -0.1])
def test_dpo_loss_rejects_non_positive_beta(beta: float) -> None:
    x = torch.zeros(2)
    with pytest.raises(ValueError, match=r"`beta` must be > 0, got"):
        dpo_loss(x, x, x, x, beta)


def test_dpo_loss_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="four log-prob tensors of one shape"):
        dpo_loss(torch.zeros(2), torch.zeros(3), torch.zeros(2), torch.zeros(2), 0.1)
