"""Error feedback (EcoLoRA eqs. 5-6): residual accounting, scopes, state round trip."""

from __future__ import annotations

import pytest
import torch

from ecolora.codec import pack, unpack
from ecolora.compress import ErrorFeedback, sparsify_topk


def _updates(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)

    # multiples of 1/64 in a small range: every sum below is exact in float32
    def draw(*shape: int) -> torch.Tensor:
        return torch.randint(-64, 65, shape, generator=gen).float() / 64

    return {"l0.lora_A.weight": draw(4, 16), "l0.lora_B.weight": draw(16, 4), "head": draw(8)}


@pytest.mark.parametrize("scope", ["tensor", "group", "global"])
def test_sent_plus_residual_equals_the_sum_of_inputs(scope):
    ef = ErrorFeedback()
    densities = {"l0.lora_A.weight": 0.3, "l0.lora_B.weight": 0.1, "head": 0.5}
    total_in = {n: torch.zeros_like(t) for n, t in _updates(0).items()}
    total_sent = {n: torch.zeros_like(t) for n, t in total_in.items()}
    for round_ in range(6):
        updates = _updates(round_)
        sent = ef.compress("client0/up", updates, densities, scope=scope)
        for name in updates:
            total_in[name] += updates[name]
            total_sent[name] += sent[name]
            assert torch.equal(total_sent[name] + ef.residual("client0/up", name), total_in[name])


def test_one_round_by_hand():
    ef = ErrorFeedback()
    p1 = {"w": torch.tensor([4.0, -1.0, 0.5, 2.0])}
    sent = ef.compress("k", p1, {"w": 0.5})
    assert sent["w"].tolist() == [4.0, 0.0, 0.0, 2.0]
    assert ef.residual("k", "w").tolist() == [0.0, -1.0, 0.5, 0.0]
    p2 = {"w": torch.tensor([0.0, -1.5, 0.25, 0.0])}
    sent = ef.compress("k", p2, {"w": 0.25})  # P + R = [0, -2.5, 0.75, 0] -> keep -2.5
    assert sent["w"].tolist() == [0.0, -2.5, 0.0, 0.0]
    assert ef.residual("k", "w").tolist() == [0.0, 0.0, 0.75, 0.0]


def test_scopes_count_and_group_membership():
    updates = _updates(1)
    densities = {n: 0.25 for n in updates}
    per_tensor = ErrorFeedback().compress("k", updates, densities, scope="tensor")
    for name, t in updates.items():
        assert int((per_tensor[name] != 0).sum()) <= round(0.25 * t.numel())
        assert torch.equal(per_tensor[name], sparsify_topk(t, 0.25))
    ones = {
        "a.lora_A": torch.tensor([1.0, 1.0]),
        "a.lora_B": torch.tensor([9.0, 8.0]),
        "x": torch.tensor([7.0, 0.5]),
    }
    half = {n: 0.5 for n in ones}
    group = ErrorFeedback().compress("k", ones, half, scope="group")
    assert group["a.lora_A"].tolist() == [1.0, 0.0]  # A competes only with A
    assert group["a.lora_B"].tolist() == [9.0, 0.0]
    glob = ErrorFeedback().compress("k", ones, half, scope="global")  # k = round(3) = 3
    assert glob["a.lora_A"].tolist() == [0.0, 0.0]
    assert glob["a.lora_B"].tolist() == [9.0, 8.0] and glob["x"].tolist() == [7.0, 0.0]


def test_streams_are_independent_and_stats_add_up():
    ef = ErrorFeedback()
    ef.compress("c0", {"w": torch.ones(10)}, lambda name: 0.2)
    ef.compress("c1", {"w": torch.ones(10)}, lambda name: 0.5)
    assert ef.residual("c0", "w").sum() == 8 and ef.residual("c1", "w").sum() == 5
    assert ef.compression_stats("c0") == {
        "num_values_in": 10,
        "num_values_kept": 2,
        "density": 0.2,
        "compression_rate": 5.0,
    }
    assert ef.compression_stats()["num_values_kept"] == 7
    ef.reset("c0")
    assert ef.residual("c0", "w") is None and ef.residual("c1", "w") is not None


def test_state_dict_round_trip_continues_identically():
    a, b = ErrorFeedback(), ErrorFeedback()
    for r in range(2):
        a.compress("k", _updates(r), lambda n: 0.3)
    state = a.state_dict()
    b.load_state_dict(state)
    state["residuals"]["k"]["head"].add_(100)  # the loaded copy does not alias the state
    out_a = a.compress("k", _updates(7), lambda n: 0.3)
    out_b = b.compress("k", _updates(7), lambda n: 0.3)
    for name in out_a:
        assert torch.equal(out_a[name], out_b[name])
    assert a.compression_stats() == b.compression_stats()
    # the state survives the wire format too (residuals are plain tensors)
    payload = pack(a.state_dict()["residuals"]["k"], value_dtype=torch.float32)
    for name, r in unpack(payload).items():
        assert torch.equal(r, a.residual("k", name))


def test_errors():
    ef = ErrorFeedback()
    with pytest.raises(ValueError, match="scope must be one of tensor, group, global; got 'layer'"):
        ef.compress("k", {"w": torch.ones(2)}, {"w": 0.5}, scope="layer")
    with pytest.raises(ValueError, match="no density given for tensor 'w'"):
        ef.compress("k", {"w": torch.ones(2)}, {})
    with pytest.raises(ValueError, match=r"density of tensor 'w' must be in \[0, 1\], got 2.0"):
        ef.compress("k", {"w": torch.ones(2)}, {"w": 2.0}, scope="group")
    ef.compress("k", {"w": torch.ones(2)}, {"w": 0.5})
    with pytest.raises(ValueError, match=r"tensor 'w' has shape \[3\] but its residual has \[2\]"):
        ef.compress("k", {"w": torch.ones(3)}, {"w": 0.5})
    with pytest.raises(TypeError, match="tensor 'i' must be a floating-point torch.Tensor"):
        ef.compress("k", {"i": torch.ones(2, dtype=torch.int64)}, {"i": 0.5})
    with pytest.raises(ValueError, match="state must have keys"):
        ef.load_state_dict({"residuals": {}})
