"""Checkpoint files: exact round trips, atomic writes, partial and broken files ignored, RNG state."""

from __future__ import annotations

import math
import os
import random

import numpy as np
import pytest
import torch

import ecolora.sim.checkpoint as ckpt
from ecolora.sim.checkpoint import (
    PAUSE_ENV,
    capture_rng,
    checkpoint_due,
    checkpoint_path,
    decode_tree,
    encode_tree,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)


def _state(server_round: int) -> dict:
    g = torch.Generator().manual_seed(server_round)
    return {
        "round": server_round,
        "strategy": {"global_state": {"a.lora_A.weight": torch.randn(3, 4, generator=g)},
                     "replica_history": {0: {"x": torch.zeros(2)}, 3: {"x": torch.ones(2)}},
                     "client_sync_round": {7: 3}, "initial_loss": None, "last_loss": 2.5},
        "clients": {2: {"view": {"w": torch.randn(5, generator=g).to(torch.bfloat16)}, "tau": 3},
                    11: {"mask": torch.tensor([True, False])}},
        "shared": {"merged_tags": {"flora/2", "flora/1"}, "active_adapter": "default"},
        "history": [{"round": 1, "eval_loss": math.nan, "clients": [2, 11], "dunder": {"__tensor__": "not one"}}],
        "rng": capture_rng(np.random.default_rng(5)),
        "pair": (1, "two", (3.5, None)),
        "counts": np.arange(4, dtype=np.int64),
        "scalar": np.float32(0.25),
        "wire": [b"\x00payload\xff", b""],
    }


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b and type(a) is type(b) or (isinstance(a, np.generic) and a.item() == b)


def test_tree_round_trip_is_exact():
    state = _state(3)
    tree, tensors = encode_tree(state)
    assert _same(state, decode_tree(tree, tensors))
    assert all(t.is_contiguous() for t in tensors.values())


def test_save_load_round_trip_keeps_last_two(tmp_path):
    for r in (1, 2, 3):
        path = save_checkpoint(tmp_path, r, _state(r))
        assert path == checkpoint_path(tmp_path, r) == tmp_path / f"round-{r:06d}.safetensors"
    assert [r for r, _ in list_checkpoints(tmp_path)] == [2, 3]
    loaded, expected = load_checkpoint(tmp_path / "round-000003.safetensors"), _state(3)
    assert [k for k in expected if not _same(expected[k], loaded[k])] == []
    assert _same(expected, loaded)
    assert latest_checkpoint(tmp_path)["round"] == 3
    assert not list(tmp_path.glob(".*tmp*"))


def test_crash_mid_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, _state(1))
    monkeypatch.setenv(PAUSE_ENV, "2:5")
    seen = {}

    class Killed(BaseException):
        pass

    def die(seconds):  # the process dies while paused inside the write
        seen["tmp"] = sorted(p.name for p in tmp_path.iterdir())
        seen["seconds"] = seconds
        raise Killed

    monkeypatch.setattr(ckpt.time, "sleep", die)
    with pytest.raises(Killed):
        save_checkpoint(tmp_path, 2, _state(2))
    tmp_name = f".round-000002.safetensors.tmp-{os.getpid()}"
    assert seen == {"tmp": [tmp_name, "round-000001.safetensors"], "seconds": 5.0}
    assert 0 < (tmp_path / tmp_name).stat().st_size  # half of the bytes are on disk
    assert [r for r, _ in list_checkpoints(tmp_path)] == [1]  # the partial file is not a checkpoint
    assert latest_checkpoint(tmp_path)["round"] == 1
    monkeypatch.delenv(PAUSE_ENV)
    save_checkpoint(tmp_path, 2, _state(2))  # the next save removes the leftover
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round-000001.safetensors", "round-000002.safetensors"]


def test_broken_newest_falls_back_to_the_previous(tmp_path, caplog):
    save_checkpoint(tmp_path, 1, _state(1))
    path = save_checkpoint(tmp_path, 2, _state(2))
    path.write_bytes(path.read_bytes()[:100])  # e.g. a disk that lost the tail
    with caplog.at_level("WARNING", logger="ecolora"):
        assert latest_checkpoint(tmp_path)["round"] == 1
    assert "Skipping checkpoint of round 2: Checkpoint" in caplog.text
    (tmp_path / "round-000001.safetensors").write_bytes(b"garbage")
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "missing") is None


def test_foreign_or_inconsistent_files_are_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "round-000004.safetensors"))
    with pytest.raises(ValueError, match=r"is not an ecolora-checkpoint-1 file"):
        load_checkpoint(tmp_path / "round-000004.safetensors")
    save_checkpoint(tmp_path, 5, _state(5))
    os.replace(tmp_path / "round-000005.safetensors", tmp_path / "round-000006.safetensors")
    raw = (tmp_path / "round-000006.safetensors").read_bytes().replace(b'"round":"5"', b'"round":"6"')
    (tmp_path / "round-000006.safetensors").write_bytes(raw)
    with pytest.raises(ValueError, match=r"metadata round 6 but state round 5"):
        load_checkpoint(tmp_path / "round-000006.safetensors")


def test_unsupported_values_and_bad_arguments():
    with pytest.raises(TypeError, match=r"Cannot checkpoint a value of type object"):
        encode_tree({"x": object()})
    with pytest.raises(ValueError, match=r"keep must be >= 1, got 0"):
        save_checkpoint("unused", 1, {"round": 1}, keep=0)


def test_pause_hook_spec_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv(PAUSE_ENV, "two")
    with pytest.raises(ValueError, match=r"ECOLORA_TEST_CHECKPOINT_PAUSE must look like ROUND:SECONDS \(e.g. 2:60\), got 'two'"):
        save_checkpoint(tmp_path, 1, {"round": 1})
    monkeypatch.setenv(PAUSE_ENV, "3:1")  # another round: no pause
    monkeypatch.setattr(ckpt.time, "sleep", lambda s: pytest.fail("paused in the wrong round"))
    save_checkpoint(tmp_path, 1, {"round": 1})


def test_rng_states_restore_every_generator(tmp_path):
    sampler = np.random.default_rng(7)
    sampler.random(3)
    save_checkpoint(tmp_path, 1, {"round": 1, "rng": capture_rng(sampler)})
    expected = (random.random(), np.random.rand(), torch.rand(2), sampler.random())
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    other = np.random.default_rng(123)
    restore_rng(latest_checkpoint(tmp_path)["rng"], other)
    got = (random.random(), np.random.rand(), torch.rand(2), other.random())
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2]) and got[3] == expected[3]


def test_checkpoint_due_every_n_rounds_and_after_the_last():
    assert [r for r in range(1, 8) if checkpoint_due(r, 3, 7)] == [3, 6, 7]
    assert [r for r in range(1, 4) if checkpoint_due(r, 1, 3)] == [1, 2, 3]
    assert not any(checkpoint_due(r, 0, 3) for r in range(1, 4))
