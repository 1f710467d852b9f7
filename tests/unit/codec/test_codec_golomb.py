"""Golomb parameters, split-stream coding and the bit primitives."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecolora.codec import (
    CodecError,
    expected_golomb_bits,
    optimal_golomb_parameter,
    position_entropy_bits,
    rice_parameter,
)
from ecolora.codec.bits import (
    Reader,
    decode_unary,
    encode_unary,
    encode_varint,
    field_chunks,
    num_field_bytes,
    pack_fields,
    unpack_fields,
)
from ecolora.codec.golomb import golomb_decode, golomb_encode, golomb_num_bytes
from ecolora.codec.manifest import GOLOMB_NONZEROS, GOLOMB_ZEROS
from ecolora.codec.positions import plan_positions


@pytest.mark.parametrize(
    ("p", "b"),
    [
        (0.01, 6),
        (0.05, 4),
        (0.1, 3),
        (0.2, 2),
        (0.3, 1),
        (0.38, 1),
        (0.39, 0),
        (0.5, 0),
        (0.9, 0),
        (1.0, 0),
    ],
)
def test_rice_parameter_follows_sattler_formula_clipped_at_zero(p, b):
    phi = (1 + math.sqrt(5)) / 2
    if p < 0.6:
        raw = 1 + math.floor(math.log2(math.log(phi - 1) / math.log(1 - p)))
        assert max(raw, 0) == b
    assert rice_parameter(p) == b


@pytest.mark.parametrize(
    ("p", "m"), [(0.01, 69), (0.05, 14), (0.1, 7), (0.2, 3), (0.3, 2), (0.5, 1), (1.0, 1)]
)
def test_optimal_golomb_parameter(p, m):
    assert optimal_golomb_parameter(p) == m
    theta = 1 - p
    assert theta**m + theta ** (m + 1) <= 1 + 1e-12
    if m > 1:
        assert theta ** (m - 1) + theta**m > 1


def test_parameters_reject_bad_densities():
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\], got 0"):
        rice_parameter(0)
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\], got 1.5"):
        optimal_golomb_parameter(1.5)


@pytest.mark.parametrize(("p", "m"), [(0.05, 14), (0.05, 16), (0.2, 3), (0.3, 2), (0.45, 1)])
def test_expected_bits_match_exact_enumeration(p, m):
    theta = 1 - p
    c = (m - 1).bit_length()
    u = (1 << c) - m
    total = 0.0
    for g in range(5000):
        q, r = divmod(g, m)
        rem = 0 if m == 1 else (c - 1 if r < u else c)
        total += theta**g * p * (q + 1 + rem)
    assert expected_golomb_bits(p, m) == pytest.approx(total, rel=1e-9)


def test_golomb_is_within_one_percent_of_entropy_where_documented():
    # the numbers quoted in docs/codec.md
    for p, rice_pct, golomb_pct in [(0.05, 1.02, 0.59), (0.1, 1.40, 0.75), (0.2, 2.33, 0.82)]:
        entropy = -(p * math.log2(p) + (1 - p) * math.log2(1 - p)) / p
        rice = expected_golomb_bits(p, 1 << rice_parameter(p))
        golomb = expected_golomb_bits(p, optimal_golomb_parameter(p))
        assert 100 * (rice / entropy - 1) == pytest.approx(rice_pct, abs=0.01)
        assert 100 * (golomb / entropy - 1) == pytest.approx(golomb_pct, abs=0.01)


@settings(max_examples=80, deadline=None)
@given(
    m=st.integers(1, 300), p=st.floats(0.001, 0.9), n=st.integers(0, 400), seed=st.integers(0, 999)
)
def test_golomb_round_trip_and_exact_sizes(m, p, n, seed):
    values = np.random.default_rng(seed).geometric(p, n).astype(np.int64) - 1
    unary, rem = golomb_encode(values, m)
    assert (unary.size, rem.size) == golomb_num_bytes(values, m)
    limit = int(values.max()) if n else 0
    decoded = golomb_decode(unary, rem, n, m, limit, "test")
    np.testing.assert_array_equal(decoded, values)
    if n:
        with pytest.raises(CodecError, match="decoded value exceeds"):
            golomb_decode(unary, rem, n, m, limit - 1, "test")


@pytest.mark.parametrize("density", [0.01, 0.05, 0.1, 0.3])
def test_position_bits_within_three_percent_of_the_entropy_bound(density):
    numel = 65536
    nnz = round(density * numel)
    rng = np.random.default_rng(0)
    mask = np.zeros(numel, dtype=bool)
    mask[rng.choice(numel, nnz, replace=False)] = True
    index = np.flatnonzero(mask)
    plan = plan_positions(mask, nnz, index)
    assert plan.encoding == GOLOMB_NONZEROS
    bits = 8 * plan.num_bytes
    assert bits / position_entropy_bits(numel, nnz) < 1.03


def test_dense_masks_code_the_zeros():
    mask = np.ones(1000, dtype=bool)
    mask[[3, 500]] = False
    plan = plan_positions(mask, 998, None)
    assert plan.encoding == GOLOMB_ZEROS
    assert plan_positions(np.ones(8, dtype=bool), 8, None).num_bytes == 3  # no position at all


def test_position_entropy_bits():
    assert position_entropy_bits(8, 2) == pytest.approx(math.log2(28))
    assert position_entropy_bits(5, 0) == 0.0
    with pytest.raises(ValueError, match=r"nnz must be in \[0, numel=4\], got 5"):
        position_entropy_bits(4, 5)


@settings(max_examples=60, deadline=None)
@given(width=st.integers(0, 32), n=st.integers(0, 70), seed=st.integers(0, 999))
def test_fields_round_trip(width, n, seed):
    values = np.random.default_rng(seed).integers(0, 1 << width, n, dtype=np.uint64)
    packed = pack_fields(values, width)
    assert packed.size == num_field_bytes(n, width)
    assert packed.size <= (n * width + 7) // 8 + max(len(field_chunks(width)) - 1, 0)
    np.testing.assert_array_equal(unpack_fields(packed, n, width, "f").astype(np.uint64), values)


def test_field_errors():
    assert (
        field_chunks(11) == [8, 2, 1]
        and field_chunks(24) == [8, 8, 8]
        and field_chunks(7) == [4, 2, 1]
    )
    with pytest.raises(CodecError, match="f: expected 3 bytes of 3-bit fields, got 1"):
        unpack_fields(np.zeros(1, np.uint8), 5, 3, "f")
    with pytest.raises(CodecError, match="f: non-zero padding bits"):
        unpack_fields(np.array([0x01], np.uint8), 3, 2, "f")


def test_unary_errors():
    np.testing.assert_array_equal(
        decode_unary(encode_unary(np.array([0, 9, 1])), 3, "u"), [0, 9, 1]
    )
    with pytest.raises(CodecError, match="u: expected 4 unary codes, found 3"):
        decode_unary(encode_unary(np.array([0, 9, 1])), 4, "u")
    with pytest.raises(CodecError, match="u: expected an empty unary stream, got 1 bytes"):
        decode_unary(np.zeros(1, np.uint8), 0, "u")


def test_reader_varints():
    data = encode_varint(2**40) + b"\x80\x80"
    reader = Reader(data)
    assert reader.varint("v", 2**41) == 2**40
    with pytest.raises(CodecError, match="truncated payload: no byte left for w"):
        reader.varint("w", 10)
    with pytest.raises(CodecError, match="x = 300 exceeds the limit 299"):
        Reader(encode_varint(300)).varint("x", 299)
    with pytest.raises(CodecError, match="y: varint longer than 10 bytes"):
        Reader(b"\xff" * 11).varint("y", 2**80)
    with pytest.raises(ValueError, match="varint must be >= 0, got -1"):
        encode_varint(-1)


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(1, 500), min_size=1, max_size=40))
def test_exponent_rank_m_is_the_exact_minimum(counts):
    from ecolora.codec.values import _best_golomb_m

    counts_arr = np.array(sorted(counts, reverse=True), dtype=np.int64)
    ranks = np.repeat(np.arange(counts_arr.size), counts_arr)
    m, unary_bytes, rem_bytes = _best_golomb_m(counts_arr, int(ranks.size))
    unary, rem = golomb_encode(ranks, m)
    assert (unary.size, rem.size) == (unary_bytes, rem_bytes)

    def total(mm: int) -> int:
        u, r = golomb_encode(ranks, mm)
        return u.size + r.size + sum(len(encode_varint(x)) for x in (mm, u.size, r.size))

    assert total(m) == min(total(mm) for mm in range(1, counts_arr.size + 1))
