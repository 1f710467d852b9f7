"""Exact byte counts, computed independently of the encoder from the format's definition."""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from ecolora.codec import describe, pack, unpack

FIXED = 4 + 1 + 1 + 4  # magic, version, flags, CRC-32


def _varint_len(value: int) -> int:
    return max(1, math.ceil(value.bit_length() / 7))


def _peft_names(num_layers: int) -> list[str]:
    return [
        f"base_model.model.model.layers.{layer}.self_attn.{proj}_proj.lora_{m}.weight"
        for layer in range(num_layers)
        for proj in ("q", "v")
        for m in ("A", "B")
    ]


def _name_bytes(names: list[str]) -> int:
    """Front-coded name bytes: shared-prefix varint, suffix-length varint, suffix."""
    total, previous = 0, b""
    for name in names:
        raw = name.encode()
        shared = len(os.path.commonprefix([raw, previous]))
        total += _varint_len(shared) + _varint_len(len(raw) - shared) + len(raw) - shared
        previous = raw
    return total


def test_dense_fp16_lora_payload_size_and_overhead_per_tensor():
    names = _peft_names(4)  # 16 tensors, A: (16, 64), B: (64, 16)
    tensors = {n: torch.randn(16, 64) if "lora_A" in n else torch.randn(64, 16) for n in names}
    payload = pack(tensors, encoding="dense")
    shapes = sum(1 + _varint_len(16) + _varint_len(64) for _ in names)  # ndim + dims
    manifest = _name_bytes(names) + 2 * len(names) + shapes
    values = sum(2 * t.numel() for t in tensors.values())
    header = 1 + _varint_len(manifest)  # tensor count + manifest length
    assert len(payload) == FIXED + header + manifest + values
    # Per tensor: 7 bytes of codes and shape plus the front-coded name (suffixes "B.weight",
    # "v_proj.lora_A.weight", ..., "1.self_attn.q_proj.lora_A.weight"); ~70 bytes uncoded.
    overhead = (len(payload) - values) / len(names)
    assert 25 < overhead < 28


def test_bitmap_size():
    t = torch.zeros(10, 10)
    t.view(-1)[::2] = 1.25  # density 0.5: bitmap wins
    payload = pack({"t": t}, value_coding="raw")
    (row,) = describe(payload)
    assert row["encoding"] == "bitmap"
    manifest = 3 + 2 + 3 + 1  # name, dtype/coding, ndim+dims, nnz (50)
    assert len(payload) == FIXED + 2 + manifest + math.ceil(100 / 8) + 2 * 50


def test_golomb_size_matches_the_code_length_formula():
    numel, nnz = 4096, 205  # density 0.05 -> M = 14 (optimal) vs 16 (Rice): whichever is smaller
    rng = np.random.default_rng(3)
    positions = np.sort(rng.choice(numel, nnz, replace=False))
    t = torch.zeros(numel)
    t[torch.from_numpy(positions)] = 0.5
    payload = pack({"t": t}, value_coding="raw")
    (row,) = describe(payload)
    m = row["coder_param"]
    assert row["encoding"] == "golomb" and m in (14, 16)
    gaps = np.diff(positions, prepend=-1) - 1
    q, r = np.divmod(gaps, m)
    c = (m - 1).bit_length()
    u = (1 << c) - m
    unary_bytes = math.ceil((q.sum() + nnz) / 8)
    if u == 0:
        rem_bytes = math.ceil(nnz * c / 8) if c % 8 == 0 else _planes(nnz, c)
    else:
        rem_bytes = _planes(nnz, c - 1) + math.ceil(int((r >= u).sum()) / 8)
    assert row["num_bytes"] == unary_bytes + rem_bytes + 2 * nnz
    params = _varint_len(m) + _varint_len(unary_bytes) + _varint_len(rem_bytes)
    manifest = 3 + 2 + 1 + _varint_len(numel) + _varint_len(nnz) + params
    assert row["manifest_num_bytes"] == manifest
    assert len(payload) == FIXED + 2 + manifest + row["num_bytes"]
    for other in (14, 16):  # the chosen M is the smaller of the two candidates
        qo, ro = np.divmod(gaps, other)
        co = (other - 1).bit_length()
        uo = (1 << co) - other
        bits = (
            qo.sum()
            + nnz
            + nnz * (co if uo == 0 else co - 1)
            + (int((ro >= uo).sum()) if uo else 0)
        )
        assert unary_bytes + rem_bytes <= math.ceil(bits / 8) + 2


def _planes(count: int, width: int) -> int:
    chunks = [8] * (width // 8) + [c for c in (4, 2, 1) if width % 8 & c]
    return sum(math.ceil(count * c / 8) for c in chunks)


def test_all_zero_and_all_nonzero_tensors():
    zeros = pack({"z": torch.zeros(1000)})
    (row,) = describe(zeros)
    assert row["encoding"] == "golomb" and row["nnz"] == 0 and row["num_bytes"] == 0
    assert len(zeros) == FIXED + 2 + 3 + 2 + 1 + 2 + 1 + 3  # name, codes, shape, nnz, M/sizes
    ones = pack({"o": torch.full((1000,), 0.75)})
    (row,) = describe(ones)
    # one exponent, one mantissa: zero rank bits, 11 sign/mantissa bits per value as planes
    assert row["coded"] == "zeros" and row["value_coding"] == "exponent"
    assert row["num_bytes"] == 1000 + 250 + 125 + math.ceil(1000 / 8)  # unary: 1000 one-bit codes
    assert torch.equal(unpack(ones)["o"], torch.full((1000,), 0.75))
