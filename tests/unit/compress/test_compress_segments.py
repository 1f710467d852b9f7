import pytest
import torch

from ecolora.compress.segments import SegmentLayout, assign_segment


def test_round_robin_assignment_covers_all_segments_each_round():
    for num_segments in range(1, 6):
        for t in range(1, 8):
            got = {assign_segment(j, t, num_segments) for j in range(5)}
            assert got == set(range(num_segments))
    assert [assign_segment(j, 1, 3) for j in range(5)] == [1, 2, 0, 1, 2]


def test_layout_pieces_tile_the_flat_vector():
    tensors = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.arange(6.0, 10.0)}
    layout = SegmentLayout.from_tensors(tensors, 3)
    assert layout.numel == 10
    assert [layout.bounds(s) for s in range(3)] == [(0, 3), (3, 6), (6, 10)]
    assert layout.pieces(1) == [("a", 3, 6)]
    assert layout.pieces(2) == [("b", 0, 4)]
    rebuilt = {k: torch.zeros_like(v) for k, v in tensors.items()}
    for s in range(3):
        layout.insert(rebuilt, s, layout.extract(tensors, s))
    assert all(torch.equal(rebuilt[k], tensors[k]) for k in tensors)


def test_layout_errors():
    tensors = {"a": torch.zeros(4)}
    with pytest.raises(ValueError, match=r"num_segments must be in \[1, 4\]"):
        SegmentLayout.from_tensors(tensors, 5)
    layout = SegmentLayout.from_tensors(tensors, 2)
    with pytest.raises(ValueError, match="do not match the layout"):
        layout.insert({"a": torch.zeros(4)}, 0, {"zzz": torch.zeros(2)})
    with pytest.raises(ValueError, match="has 3 values, expected 2"):
        layout.insert({"a": torch.zeros(4)}, 0, {"a": torch.zeros(3)})
