"""Dtypes on the wire and the two value codings: raw and exponent-ranked.

Values travel as the bit patterns of the wire dtype (fp16 by default), so a decoded value is
bit-identical to the wire value. The sign stays inside the fp16 word: a separate sign stream
would cost the same one bit per value, since the signs of top-k entries are close to fair coins.

*Raw* coding writes the words little-endian. *Exponent* coding keeps the sign and mantissa bits
verbatim (``1 + mantissa`` bits per value, packed) and entropy-codes the exponent field, which
is far from uniform for LoRA entries (a top-k survivor of a Kaiming-uniform ``A`` almost always
has the top exponent): exponents are ranked by frequency (the rank table travels in the manifest)
and the ranks are Golomb-coded with the ``M`` that minimizes the exact size, computed from the
histogram before encoding. Only the float wire dtypes with exponent fields of at most 8 bits use
it (fp16, bf16, fp32).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ecolora.codec.bits import encode_varint, num_field_bytes, pack_fields, unpack_fields
from ecolora.codec.golomb import golomb_decode, golomb_encode

__all__ = [
    "DTYPES",
    "DtypeSpec",
    "ExponentPlan",
    "decode_exponent_values",
    "dtype_spec",
    "plan_exponent_coding",
]


@dataclass(frozen=True)
class DtypeSpec:
    """A dtype the container can carry. ``mantissa_bits`` is None for non-float dtypes."""

    code: int
    name: str
    torch_dtype: torch.dtype
    bits_dtype: np.dtype  # little-endian unsigned view of one element
    int_view: torch.dtype  # same-width torch integer dtype (for bit-level views)
    mantissa_bits: int | None

    @property
    def itemsize(self) -> int:
        return self.bits_dtype.itemsize

    @property
    def exponent_bits(self) -> int:
        assert self.mantissa_bits is not None
        return self.itemsize * 8 - 1 - self.mantissa_bits

    @property
    def can_code_exponent(self) -> bool:
        return self.mantissa_bits is not None and self.exponent_bits <= 8


DTYPES: tuple[DtypeSpec, ...] = (
    DtypeSpec(0, "float32", torch.float32, np.dtype("<u4"), torch.int32, 23),
    DtypeSpec(1, "float16", torch.float16, np.dtype("<u2"), torch.int16, 10),
    DtypeSpec(2, "bfloat16", torch.bfloat16, np.dtype("<u2"), torch.int16, 7),
    DtypeSpec(3, "float64", torch.float64, np.dtype("<u8"), torch.int64, 52),
    DtypeSpec(4, "int8", torch.int8, np.dtype("u1"), torch.int8, None),
    DtypeSpec(5, "int16", torch.int16, np.dtype("<u2"), torch.int16, None),
    DtypeSpec(6, "int32", torch.int32, np.dtype("<u4"), torch.int32, None),
    DtypeSpec(7, "int64", torch.int64, np.dtype("<u8"), torch.int64, None),
    DtypeSpec(8, "uint8", torch.uint8, np.dtype("u1"), torch.uint8, None),
    DtypeSpec(9, "bool", torch.bool, np.dtype("u1"), torch.uint8, None),
)
_BY_TORCH = {spec.torch_dtype: spec for spec in DTYPES}


def dtype_spec(dtype: torch.dtype) -> DtypeSpec:
    """The :class:`DtypeSpec` of a torch dtype; ``TypeError`` listing the supported ones."""
    spec = _BY_TORCH.get(dtype)
    if spec is None:
        names = ", ".join(s.name for s in DTYPES)
        raise TypeError(f"dtype {dtype} cannot be packed; supported dtypes: {names}")
    return spec


@dataclass(frozen=True)
class ExponentPlan:
    """How one tensor's values are exponent-coded, and the exact bytes it will take."""

    symbols: np.ndarray  # exponent values by decreasing frequency, shape (k,)
    golomb_m: int
    num_bytes: int  # body bytes (unary + remainder + sign/mantissa streams)
    manifest_bytes: int  # extra manifest bytes (table and parameters)
    ranks: np.ndarray  # per-value rank, shape (nnz,)

    def encode(self, bits: np.ndarray, spec: DtypeSpec) -> tuple[list[int], list[np.ndarray]]:
        """Return the manifest integers after the table, and the body sections."""
        unary, rem = golomb_encode(self.ranks, self.golomb_m)
        sign_mantissa = pack_fields(_sign_mantissa(bits, spec), (spec.mantissa_bits or 0) + 1)
        return [self.golomb_m, unary.size, rem.size], [unary, rem, sign_mantissa]


def _sign_mantissa(bits: np.ndarray, spec: DtypeSpec) -> np.ndarray:
    """``(sign << mantissa_bits) | mantissa`` of each word, in the words' dtype."""
    mantissa = spec.mantissa_bits or 0
    word = bits.dtype.type
    top = spec.itemsize * 8 - 1
    out: np.ndarray = ((bits >> word(top)) << word(mantissa)) | (bits & word((1 << mantissa) - 1))
    return out


def plan_exponent_coding(bits: np.ndarray, spec: DtypeSpec) -> ExponentPlan:
    """Choose the rank table and Golomb ``M`` for the non-zero words ``bits`` (uint, (nnz,)).

    Sizes come from the exponent histogram alone, so every ``M`` in ``1..k`` is tried exactly.
    """
    mantissa = spec.mantissa_bits or 0
    count = int(bits.size)
    word = bits.dtype.type
    exponents = (bits >> word(mantissa)).astype(np.uint8)  # drops the sign for <= 8-bit exponents
    if spec.exponent_bits < 8:
        exponents &= np.uint8((1 << spec.exponent_bits) - 1)
    hist = np.bincount(exponents, minlength=1 << spec.exponent_bits)
    present = np.flatnonzero(hist)
    symbols = present[np.argsort(-hist[present], kind="stable")]
    counts = hist[symbols].astype(np.int64)  # (k,) decreasing
    k = int(symbols.size)
    best_m, unary_bytes, rem_bytes = _best_golomb_m(counts, count)
    body = unary_bytes + rem_bytes + num_field_bytes(count, mantissa + 1)
    extra = _varint_len(k) + k + _varint_len(best_m)
    extra += _varint_len(unary_bytes) + _varint_len(rem_bytes)
    rank_of = np.zeros(1 << spec.exponent_bits, dtype=np.uint8)
    rank_of[symbols] = np.arange(k, dtype=np.uint8)
    return ExponentPlan(symbols.astype(np.uint8), best_m, body, extra, rank_of.take(exponents))


def _varint_lens(values: np.ndarray) -> np.ndarray:
    """LEB128 lengths of non-negative int64 ``values`` (vectorized :func:`encode_varint`)."""
    lens = np.ones(values.shape, dtype=np.int64)
    for i in range(1, 9):
        lens += (values >= (1 << (7 * i))).astype(np.int64)
    return lens


_CEIL_LOG2 = np.array([(m - 1).bit_length() for m in range(1, 257)], dtype=np.int64)  # M = 1..256


def _best_golomb_m(counts: np.ndarray, count: int) -> tuple[int, int, int]:
    """Golomb ``M`` in ``1..k`` minimizing the exact bytes of the ranks; (M, unary, remainder).

    ``counts`` (k,) are the rank frequencies; all ``M`` are scored at once on a (k, k) grid.
    """
    k = int(counts.size)
    rank = np.arange(k, dtype=np.int64)[None, :]  # (1, k)
    m = np.arange(1, k + 1, dtype=np.int64)[:, None]  # (k, 1)
    quotients = rank // m  # (k, k)
    unary = ((counts[None, :] * (quotients + 1)).sum(axis=1) + 7) // 8  # (k,)
    c = _CEIL_LOG2[:k]
    u = (1 << c) - m[:, 0]
    width = np.where(u == 0, c, np.maximum(c - 1, 0))
    long = (rank - quotients * m) >= u[:, None]
    long_counts = np.where(u > 0, (counts[None, :] * long).sum(axis=1), 0)
    chunks = [(width // 8) * 8, width & 4, width & 2, width & 1]
    rem = sum((count * ch + 7) // 8 for ch in chunks) + (long_counts + 7) // 8
    rem[0] = 0  # M = 1 has no remainder
    size = unary + rem + _varint_lens(m[:, 0]) + _varint_lens(unary) + _varint_lens(rem)
    best = int(np.argmin(size))
    return best + 1, int(unary[best]), int(rem[best])


def _varint_len(value: int) -> int:
    return len(encode_varint(value))


def decode_exponent_values(
    sections: tuple[np.ndarray, np.ndarray, np.ndarray],
    count: int,
    symbols: np.ndarray,
    golomb_m: int,
    spec: DtypeSpec,
    what: str,
) -> np.ndarray:
    """Rebuild the ``count`` non-zero words (in ``spec.bits_dtype``) from the three sections."""
    unary, rem, sign_mantissa = sections
    k = int(symbols.size)
    ranks = golomb_decode(unary, rem, count, golomb_m, k - 1, f"{what} exponent ranks")
    mantissa = spec.mantissa_bits or 0
    word = spec.bits_dtype.type
    exponents = symbols.astype(spec.bits_dtype).take(ranks)
    fields = unpack_fields(sign_mantissa, count, mantissa + 1, f"{what} sign/mantissa")
    fields = fields.astype(spec.bits_dtype, copy=False)
    sign = (fields >> word(mantissa)) << word(spec.itemsize * 8 - 1)
    words: np.ndarray = sign | (exponents << word(mantissa)) | (fields & word((1 << mantissa) - 1))
    return words
