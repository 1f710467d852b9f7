"""Vectorized bit streams: fixed-width fields, unary codes and LEB128 varints.

All bit streams are MSB-first: the first bit of a stream is the most significant bit of its first
byte, and a stream that does not fill its last byte is padded with zero bits. Decoders check the
padding, so a payload has exactly one valid encoding of its content.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ecolora.codec.errors import CodecError

__all__ = [
    "MAX_FIELD_WIDTH",
    "field_chunks",
    "Reader",
    "check_bit_padding",
    "decode_unary",
    "encode_unary",
    "encode_varint",
    "num_field_bytes",
    "pack_fields",
    "unpack_fields",
]

MAX_FIELD_WIDTH = 32
_EMPTY = np.zeros(0, dtype=np.uint8)


def field_chunks(width: int) -> list[int]:
    """Plane widths of a ``width``-bit field, most significant first: 8s, then 4, 2, 1."""
    return [8] * (width // 8) + [c for c in (4, 2, 1) if width % 8 & c]


def num_field_bytes(count: int, width: int) -> int:
    """Bytes taken by ``count`` fields of ``width`` bits (each plane is byte-aligned)."""
    return sum((count * c + 7) // 8 for c in field_chunks(width))


def pack_fields(values: np.ndarray, width: int) -> np.ndarray:
    """Pack the low ``width`` bits of each value as bit planes; returns uint8 bytes.

    The field is cut, from its most significant bit, into chunks of 8 bits, then 4, 2 and 1 bits
    as the binary expansion of ``width`` says (11 = 8 + 2 + 1). Each chunk of all values forms one
    byte-aligned plane, MSB-first: 8-bit chunks are bytes, 4-bit chunks two per byte, and so on.
    Every step is a whole-array uint8 operation.

    Args:
        values: non-negative integers below ``2**width``, shape (n,).
        width: bits per field, 0..32.
    """
    count = int(values.size)
    if width == 0 or count == 0:
        return _EMPTY
    planes = []
    shift = width
    for chunk in field_chunks(width):
        shift -= chunk
        part = values >> shift if shift else values
        if chunk < 8 and shift + chunk < width:  # astype(uint8) already drops bits above 8
            part = part & ((1 << chunk) - 1)
        planes.append(_pack_plane(part.astype(np.uint8), chunk))
    return planes[0] if len(planes) == 1 else np.concatenate(planes)


def _pack_plane(chunk: np.ndarray, bits: int) -> np.ndarray:
    if bits == 8:
        return chunk
    if bits == 1:
        return np.packbits(chunk)
    per_byte = 8 // bits
    pad = -chunk.size % per_byte
    if pad:
        chunk = np.concatenate([chunk, np.zeros(pad, dtype=np.uint8)])
    groups = chunk.reshape(-1, per_byte)  # (bytes, per_byte)
    out = groups[:, 0] << np.uint8(8 - bits)
    for j in range(1, per_byte):
        out |= groups[:, j] << np.uint8(8 - bits * (j + 1))
    return out


def unpack_fields(data: np.ndarray, count: int, width: int, what: str) -> np.ndarray:
    """Inverse of :func:`pack_fields`; returns unsigned values, shape (count,).

    ``data`` must hold exactly :func:`num_field_bytes` bytes with zero padding bits. The result
    dtype is the narrowest of uint8/16/32 that holds ``width`` bits.
    """
    expected = num_field_bytes(count, width)
    if data.size != expected:
        raise CodecError(
            f"{what}: expected {expected} bytes of {width}-bit fields, got {data.size}"
        )
    dtype: type[np.unsignedinteger[Any]] = (
        np.uint8 if width <= 8 else np.uint16 if width <= 16 else np.uint32
    )
    if count == 0 or width == 0:
        return np.zeros(count, dtype=dtype)
    out = None
    shift, offset = width, 0
    for chunk in field_chunks(width):
        shift -= chunk
        size = (count * chunk + 7) // 8
        plane = _unpack_plane(data[offset : offset + size], count, chunk, what)
        offset += size
        part = plane.astype(dtype) << dtype(shift) if shift else plane
        out = part if out is None else out | part
    assert out is not None
    return out.astype(dtype, copy=False)


def _unpack_plane(plane: np.ndarray, count: int, bits: int, what: str) -> np.ndarray:
    _check_padding(plane, count * bits, what)
    if bits == 8:
        return plane
    if bits == 1:
        return np.unpackbits(plane, count=count)
    per_byte = 8 // bits
    mask = np.uint8((1 << bits) - 1)
    out = np.empty((plane.size, per_byte), dtype=np.uint8)
    for j in range(per_byte):
        out[:, j] = (plane >> np.uint8(8 - bits * (j + 1))) & mask
    return out.reshape(-1)[:count]


def encode_unary(quotients: np.ndarray) -> np.ndarray:
    """Unary-code each value ``q`` as ``q`` zero bits then a one bit; MSB-first bytes.

    Vectorized: the terminating ones sit at ``cumsum(q + 1) - 1``.
    """
    if quotients.size == 0:
        return _EMPTY
    count = int(quotients.size)
    wide = quotients.dtype.itemsize > 4 or count * (int(quotients.max()) + 1) >= 2**31
    ends: np.ndarray = np.cumsum(quotients, dtype=np.int64 if wide else np.int32)
    ends += np.arange(count, dtype=ends.dtype)  # terminator i sits at sum(q[:i+1]) + i
    bits = np.zeros(int(ends[-1]) + 1, dtype=np.uint8)
    bits[ends] = 1
    return np.packbits(bits)


def decode_unary(data: np.ndarray, count: int, what: str) -> np.ndarray:
    """Inverse of :func:`encode_unary`: ``count`` quotients (int64).

    The stream must end in the byte holding the last terminator (at most 7 zero padding bits).
    """
    if count == 0:
        if data.size:
            raise CodecError(f"{what}: expected an empty unary stream, got {data.size} bytes")
        return np.zeros(0, dtype=np.int64)
    ones = np.flatnonzero(np.unpackbits(data).view(bool))
    if ones.size != count:
        raise CodecError(f"{what}: expected {count} unary codes, found {ones.size}")
    if int(ones[-1]) < data.size * 8 - 8:
        raise CodecError(f"{what}: unary stream has trailing bytes after its last code")
    quotients = np.empty(count, dtype=np.int64)
    quotients[0] = ones[0]
    np.subtract(ones[1:], ones[:-1], out=quotients[1:])
    quotients[1:] -= 1
    return quotients


def _check_padding(data: np.ndarray, num_bits: int, what: str) -> None:
    pad = data.size * 8 - num_bits
    if 0 < pad < 8 and int(data[-1]) & ((1 << pad) - 1):
        raise CodecError(f"{what}: non-zero padding bits")


def check_bit_padding(data: np.ndarray, num_bits: int, what: str) -> None:
    """Raise unless ``data`` is exactly ``ceil(num_bits / 8)`` bytes with zero padding."""
    if data.size != (num_bits + 7) // 8:
        raise CodecError(f"{what}: expected {(num_bits + 7) // 8} bytes, got {data.size}")
    _check_padding(data, num_bits, what)


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, least significant group first, high bit = more."""
    if value < 0:
        raise ValueError(f"varint must be >= 0, got {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class Reader:
    """A bounds-checked cursor over a payload; every read failure is a :class:`CodecError`."""

    def __init__(self, data: bytes | memoryview, start: int = 0, end: int | None = None) -> None:
        self.data = memoryview(data)
        self.pos = start
        self.end = len(data) if end is None else end

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def u8(self, what: str) -> int:
        if self.pos >= self.end:
            raise CodecError(f"truncated payload: no byte left for {what}")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def take(self, num_bytes: int, what: str) -> memoryview:
        if num_bytes > self.remaining:
            raise CodecError(
                f"truncated payload: {what} needs {num_bytes} bytes, {self.remaining} left"
            )
        chunk = self.data[self.pos : self.pos + num_bytes]
        self.pos += num_bytes
        return chunk

    def varint(self, what: str, max_value: int) -> int:
        """Read a canonical (shortest-form) LEB128 varint no larger than ``max_value``."""
        value = 0
        for shift in range(0, 70, 7):
            byte = self.u8(what)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if byte == 0 and shift:
                    raise CodecError(f"{what}: over-long varint encoding")
                if value > max_value:
                    raise CodecError(f"{what} = {value} exceeds the limit {max_value}")
                return value
        raise CodecError(f"{what}: varint longer than 10 bytes")
