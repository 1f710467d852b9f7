"""Top-k: exact counts, deterministic ties, scopes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ecolora.compress import num_kept, sparsify_topk, topk_mask, topk_mask_joint


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(1, 12), min_size=1, max_size=3),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 999),
    ties=st.booleans(),
)
def test_exact_count_and_magnitude_order(shape, density, seed, ties):
    gen = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=gen)
    if ties:
        t = torch.round(t * 2) / 2  # many equal magnitudes
    k = round(density * t.numel())
    out = sparsify_topk(t, density)
    mask = topk_mask(t, density)
    assert out.shape == t.shape and int(mask.sum()) == k
    assert torch.equal(out, torch.where(mask, t, torch.zeros(())))
    if 0 < k < t.numel():
        assert t[mask].abs().min() >= t[~mask].abs().max()
        # ties at the threshold go to the lowest flat indices
        flat, fmask = t.abs().flatten(), mask.flatten()
        thr = flat[fmask].min()
        tied = torch.nonzero(flat == thr).flatten()
        chosen = tied[fmask[tied]]
        assert torch.equal(chosen, tied[: chosen.numel()])


def test_hand_worked_ties():
    t = torch.tensor([1.0, -2.0, 2.0, 0.5, -2.0, 3.0])
    # k = 3: 3.0, then two of the three |2.0| -- the lowest indices 1 and 2, not 4.
    assert sparsify_topk(t, 0.5).tolist() == [0.0, -2.0, 2.0, 0.0, 0.0, 3.0]


def test_rounding_is_pythons_round():
    assert num_kept(0.25, 6) == 2  # round(1.5) = 2
    assert num_kept(0.5, 5) == 2  # round(2.5) = 2
    assert num_kept(0.7, 5) == 4  # round(3.5) = 4
    t = torch.tensor([1.0, -2.0, 2.0, 0.5, -2.0, 3.0])
    assert sparsify_topk(t, 0.25).tolist() == [0.0, -2.0, 0.0, 0.0, 0.0, 3.0]


def test_density_edges_and_errors():
    t = torch.randn(3, 4)
    copy = sparsify_topk(t, 1.0)
    assert torch.equal(copy, t) and copy.data_ptr() != t.data_ptr()
    assert torch.equal(sparsify_topk(t, 0.0), torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"density must be in \[0, 1\], got 1.5"):
        sparsify_topk(t, 1.5)
    with pytest.raises(ValueError, match="has non-finite values"):
        sparsify_topk(torch.tensor([1.0, float("nan")]), 0.5)
    with pytest.raises(TypeError, match="must be a floating-point tensor, got torch.int64"):
        topk_mask(torch.tensor([1, 2]), 0.5)


def test_joint_mask_spans_tensors_with_ties_to_the_earlier_tensor():
    a = torch.tensor([[1.0, 5.0]])
    b = torch.tensor([5.0, 0.1, 4.0])
    ma, mb = topk_mask_joint([a, b], 2)
    assert ma.tolist() == [[False, True]] and mb.tolist() == [True, False, False]
    ma, mb = topk_mask_joint([a, b], 3)
    assert ma.tolist() == [[False, True]] and mb.tolist() == [True, False, True]
    assert topk_mask_joint([], 3) == []
