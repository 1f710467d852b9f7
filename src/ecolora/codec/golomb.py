"""Golomb codes for geometric integers, laid out as split streams for vectorized decoding.

Positions of the non-zeros of a sparse tensor are sent as *gaps* (the number of zeros before each
non-zero). If every entry is non-zero independently with probability ``p``, the gaps are geometric,
``P(g) = (1 - p)^g p``, and the entropy bound is ``H(p) / p`` bits per gap. Sattler et al. (2019,
"Robust and communication-efficient federated learning from non-iid data", eq. 12), followed by
EcoLoRA (Liu et al., 2025), code them with a Rice code ``M = 2^b*``::

    b* = 1 + floor(log2(ln(phi - 1) / ln(1 - p)))        phi = (1 + sqrt 5) / 2

The optimal Golomb parameter (Gallager and van Voorhis, 1975) is the smallest ``M`` with
``theta^M + theta^(M+1) <= 1`` (``theta = 1 - p``); it need not be a power of two. ``b*`` reaches
0 near ``p = 0.38`` and goes negative above ``p = 0.62``; it is clipped at 0 (unary code), which
is the optimal code for ``p >= 0.38`` anyway.

A value ``x`` is coded as ``q = x // M`` in unary (``q`` zeros then a one) and ``r = x % M`` in
truncated binary (``c = ceil(log2 M)``, ``u = 2^c - M``: ``r < u`` takes ``c - 1`` bits, otherwise
``r + u`` takes ``c`` bits). Instead of interleaving the codes, the unary parts of all values form
one stream and the remainders another, so both decode without a sequential scan:

* unary stream: terminators are the set bits (``np.flatnonzero``), ``q = diff(ones) - 1``;
* remainder stream: every value's first ``c - 1`` (or, when ``u = 0``, all ``c``) remainder bits
  as fixed-width fields, then, from the next byte, one extra bit for each field ``>= u`` in order.

The split costs no bits beyond byte alignment of the three sub-streams.
"""

from __future__ import annotations

import math

import numpy as np

from ecolora.codec.bits import (
    MAX_FIELD_WIDTH,
    check_bit_padding,
    decode_unary,
    encode_unary,
    num_field_bytes,
    pack_fields,
    unpack_fields,
)
from ecolora.codec.errors import CodecError

__all__ = [
    "MAX_GOLOMB_PARAMETER",
    "expected_golomb_bits",
    "golomb_decode",
    "golomb_encode",
    "golomb_num_bytes",
    "optimal_golomb_parameter",
    "position_entropy_bits",
    "rice_parameter",
]

MAX_GOLOMB_PARAMETER = 1 << MAX_FIELD_WIDTH
_PHI = (1.0 + math.sqrt(5.0)) / 2.0


def rice_parameter(p: float) -> int:
    """Sattler et al.'s ``b*`` for non-zero probability ``p`` in (0, 1], clipped at 0."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {p}")
    if p >= 1.0:
        return 0
    ratio = math.log(_PHI - 1.0) / math.log1p(-p)
    return max(0, 1 + math.floor(math.log2(ratio)))


def optimal_golomb_parameter(p: float) -> int:
    """Smallest ``M >= 1`` with ``(1-p)^M + (1-p)^(M+1) <= 1`` (Gallager and van Voorhis)."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {p}")
    theta = 1.0 - p
    if theta <= 0.0:
        return 1
    m = max(1, math.ceil(math.log1p(theta) / -math.log(theta)))
    return min(m, MAX_GOLOMB_PARAMETER)


def expected_golomb_bits(p: float, m: int) -> float:
    """Expected code length in bits of one geometric gap with parameter ``p`` under Golomb ``M``.

    ``E[q] = theta^M / (1 - theta^M)`` plus the terminator, plus ``c`` remainder bits for
    ``M = 2^c``, else ``c - 1`` bits and one more with probability
    ``P(r >= u) = (theta^u - theta^M) / (1 - theta^M)``.
    """
    theta = 1.0 - p
    tm = theta**m
    bits = tm / (1.0 - tm) + 1.0
    if m == 1:
        return bits
    c = (m - 1).bit_length()
    u = (1 << c) - m
    if u == 0:
        return bits + c
    return bits + (c - 1) + (theta**u - tm) / (1.0 - tm)


def position_entropy_bits(numel: int, nnz: int) -> float:
    """``log2 C(numel, nnz)``: bits needed to name which ``nnz`` of ``numel`` positions are set."""
    if not 0 <= nnz <= numel:
        raise ValueError(f"nnz must be in [0, numel={numel}], got {nnz}")
    ln_c = math.lgamma(numel + 1) - math.lgamma(nnz + 1) - math.lgamma(numel - nnz + 1)
    return ln_c / math.log(2.0)


def _split(m: int) -> tuple[int, int, int]:
    """Remainder layout for ``M``: (c, u, field width)."""
    c = (m - 1).bit_length()
    u = (1 << c) - m
    return c, u, (c if u == 0 else c - 1)


def golomb_num_bytes(values: np.ndarray, m: int) -> tuple[int, int]:
    """Sizes ``(unary_bytes, remainder_bytes)`` of :func:`golomb_encode` without encoding."""
    count = int(values.size)
    if count == 0:
        return 0, 0
    if m == 1:
        return num_field_bytes(int(values.sum()) + count, 1), 0
    quotients = values // m
    unary_bits = int(quotients.sum()) + count
    c, u, width = _split(m)
    rem_bytes = num_field_bytes(count, width)
    if u:
        remainders = values - quotients * m
        rem_bytes += num_field_bytes(int(np.count_nonzero(remainders >= u)), 1)
    return num_field_bytes(unary_bits, 1), rem_bytes


def golomb_encode(values: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Golomb-code non-negative int64 ``values`` with parameter ``m`` as (unary, remainder) bytes."""
    if m == 1 or values.size == 0:
        return encode_unary(values), np.zeros(0, dtype=np.uint8)
    quotients = values // m
    remainders = values - quotients * m
    c, u, width = _split(m)
    if u == 0:
        return encode_unary(quotients), pack_fields(remainders, width)
    long = remainders >= u
    fields = np.where(long, (remainders + u) >> 1, remainders)
    extra = ((remainders[long] + u) & 1).astype(np.uint8)
    rem = np.concatenate([pack_fields(fields, width), np.packbits(extra)])
    return encode_unary(quotients), rem


def golomb_decode(
    unary: np.ndarray, rem: np.ndarray, count: int, m: int, max_value: int, what: str
) -> np.ndarray:
    """Inverse of :func:`golomb_encode`; every decoded value must be ``<= max_value``.

    The quotient bound is checked before multiplying, so a hostile stream cannot overflow int64.
    """
    quotients = decode_unary(unary, count, f"{what} unary stream")
    if count and int(quotients.max()) > max_value // m:
        raise CodecError(f"{what}: decoded value exceeds {max_value}")
    if m == 1:
        if rem.size:
            raise CodecError(f"{what}: expected no remainder bytes for M = 1, got {rem.size}")
        return quotients
    c, u, width = _split(m)
    field_bytes = num_field_bytes(count, width)
    if rem.size < field_bytes:
        raise CodecError(f"{what}: remainder stream needs {field_bytes} bytes, got {rem.size}")
    fields = unpack_fields(rem[:field_bytes], count, width, f"{what} remainders").astype(np.int64)
    if u == 0:
        if rem.size != field_bytes:
            raise CodecError(f"{what}: remainder stream has {rem.size - field_bytes} extra bytes")
        remainders = fields
    else:
        long = fields >= u
        num_long = int(np.count_nonzero(long))
        extra_bytes = rem[field_bytes:]
        check_bit_padding(extra_bytes, num_long, f"{what} remainder extra bits")
        extra = np.unpackbits(extra_bytes)[:num_long].astype(np.int64)
        remainders = fields.copy()
        remainders[long] = ((fields[long] << 1) | extra) - u
    values = quotients * m + remainders
    if count and int(values.max()) > max_value:
        raise CodecError(f"{what}: decoded value exceeds {max_value}")
    return values
