"""Mutation fuzzing of ``codec.unpack`` and ``codec.describe``: tensors or a CodecError, nothing else.

Valid payloads of every encoding are mutated (bit flips, random bytes, insertions, deletions,
duplicated ranges, 0x00/0xFF/0x80 runs, truncation, splices of two payloads, giant varints) and,
half of the time, re-sealed with a correct CRC-32 so that the mutation reaches the parser instead
of stopping at the checksum. Decoding uses ``max_numel=2**16``, as a server bounds it by the
LoRA size (``Strategy.max_message_numel``).

Two bounded runs: hypothesis (``max_examples`` below) and a seeded campaign of
``ECOLORA_FUZZ_CASES`` payloads (default 3000) capped at ``ECOLORA_FUZZ_SECONDS`` (default 20 s).
For a long campaign: ``ECOLORA_FUZZ_CASES=1000000 ECOLORA_FUZZ_SECONDS=600 pytest
tests/unit/codec/test_fuzz_unpack.py -k campaign -s`` (prints the counts; docs/reliability.md).
"""

from __future__ import annotations

import os
import time
import zlib

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecolora.codec import CodecError, describe, pack, unpack

MAX_NUMEL = 2**16


def _seed_payloads() -> list[bytes]:
    g = torch.Generator().manual_seed(0)
    sparse = torch.randn(24, 16, generator=g) * (torch.rand(24, 16, generator=g) < 0.1)
    dense_ish = torch.randn(12, 10, generator=g) * (torch.rand(12, 10, generator=g) < 0.8)
    lora = {"m.lora_A.weight": sparse, "m.lora_B.weight": dense_ish, "n.lora_A.weight": sparse[:3]}
    return [
        pack(lora),
        pack(lora, encoding="golomb"),
        pack(lora, encoding="golomb", value_coding="exponent"),
        pack(lora, encoding="bitmap"),
        pack(lora, encoding="coo"),
        pack(lora, encoding="dense"),
        pack(lora, value_dtype=torch.bfloat16),
        pack(lora, value_dtype=torch.float32),
        pack({"i": torch.arange(20, dtype=torch.int64), "b": torch.rand(9, generator=g) < 0.5,
              "h": torch.zeros(0, 5), "s": torch.tensor(2.5)}),
        pack({}),
    ]


SEEDS = _seed_payloads()


def _mutate(data: bytearray, op: int, a: int, b: int, other: bytes) -> bytearray:
    """One mutation; ``a``/``b`` are raw integers mapped onto the current length."""
    n = max(len(data), 1)
    i, j = a % n, b % n
    lo, hi = min(i, j), max(i, j)
    if op == 0 and data:  # flip one bit
        data[i] ^= 1 << (b % 8)
    elif op == 1 and data:  # random byte
        data[i] = b % 256
    elif op == 2:  # insert bytes
        data[i:i] = bytes((b + k * 37) % 256 for k in range(1 + b % 9))
    elif op == 3:  # delete a range
        del data[lo : hi + 1]
    elif op == 4:  # duplicate a range
        data[hi:hi] = data[lo : lo + 1 + (hi - lo) % 16]
    elif op == 5:  # runs of special bytes (varint continuation, all ones, zeros)
        fill = (0x00, 0xFF, 0x80)[b % 3]
        data[i : i + 1 + b % 12] = bytes([fill]) * (1 + b % 12)
    elif op == 6:  # truncate
        del data[i:]
    elif op == 7:  # splice with another payload
        k = b % max(len(other), 1)
        data[i:] = other[k:]
    elif op == 8:  # a giant varint
        data[i:i] = b"\xff" * 9 + b"\x01"
    return data


def _reseal(data: bytearray) -> bytes:
    if len(data) < 4:
        return bytes(data)
    body = bytes(data[:-4])
    return body + zlib.crc32(body).to_bytes(4, "little")


def _decode(payload: bytes) -> str:
    """'ok' or 'codec'; any other exception propagates (the test fails with the payload)."""
    try:
        out = unpack(payload, max_numel=MAX_NUMEL)
    except CodecError:
        return "codec"
    rows = describe(payload, max_numel=MAX_NUMEL)  # the same bytes must describe consistently
    assert [r["name"] for r in rows] == list(out)
    assert all(tuple(r["shape"]) == tuple(out[r["name"]].shape) for r in rows)
    return "ok"


MUTATION = st.tuples(st.integers(0, 8), st.integers(0, 2**16), st.integers(0, 2**16))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, len(SEEDS) - 1),
    other=st.integers(0, len(SEEDS) - 1),
    mutations=st.lists(MUTATION, min_size=1, max_size=6),
    reseal=st.booleans(),
)
def test_hypothesis_mutations_only_raise_codec_error(seed, other, mutations, reseal):
    data = bytearray(SEEDS[seed])
    for op, a, b in mutations:
        data = _mutate(data, op, a, b, SEEDS[other])
    payload = _reseal(data) if reseal else bytes(data)
    try:
        _decode(payload)
    except CodecError:  # describe may reject what unpack accepted only if both agree: never here
        raise AssertionError(f"describe raised but unpack did not: {payload.hex()}") from None


def test_seeded_mutation_campaign():
    cases = int(os.environ.get("ECOLORA_FUZZ_CASES", "3000"))
    budget_s = float(os.environ.get("ECOLORA_FUZZ_SECONDS", "20"))
    rng = np.random.default_rng(2025)
    counts = {"ok": 0, "codec": 0}
    resealed = 0
    start = time.perf_counter()
    tried = 0
    while tried < cases and time.perf_counter() - start < budget_s:
        data = bytearray(SEEDS[int(rng.integers(len(SEEDS)))])
        other = SEEDS[int(rng.integers(len(SEEDS)))]
        for _ in range(int(rng.integers(1, 7))):
            op, a, b = (int(x) for x in rng.integers(0, [9, 2**16, 2**16]))
            data = _mutate(data, op, a, b, other)
        reseal = bool(rng.integers(2))
        payload = _reseal(data) if reseal else bytes(data)
        try:
            counts[_decode(payload)] += 1
        except Exception as exc:  # anything but CodecError is a codec bug: show the bytes
            raise AssertionError(f"{type(exc).__name__}: {exc} on payload {payload.hex()}") from exc
        resealed += reseal
        tried += 1
    elapsed = time.perf_counter() - start
    print(f"\nfuzz unpack: {tried} mutated payloads ({resealed} re-sealed) in {elapsed:.1f} s: "
          f"{counts['codec']} CodecError, {counts['ok']} decoded, 0 other exceptions")
    assert tried >= min(cases, 200)
    assert counts["codec"] > 0 and counts["ok"] + counts["codec"] == tried
