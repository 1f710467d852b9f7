"""The per-tensor manifest entry: what it holds, how it is written, and how it is validated.

Entry layout (all integers are LEB128 varints unless marked u8)::

    shared        bytes shared with the previous name's UTF-8 (front coding)
    suffix_len    then suffix_len bytes of UTF-8
    u8 dtypes     (tensor dtype code << 4) | wire dtype code
    u8 coding     (value coding << 4) | position encoding
    ndim          then ndim dims
    nnz           number of values sent          (not for dense)
    M, unary_bytes, remainder_bytes               (golomb only)
    k, k x u8 exponent symbols by rank, M_v, unary_bytes_v, remainder_bytes_v
                                                  (exponent value coding only)

Body section lengths all follow from the entry, so the byte offset of every tensor is the running
sum of the lengths of the tensors before it; :func:`section_sizes` computes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ecolora.codec.bits import Reader, encode_varint, num_field_bytes
from ecolora.codec.errors import CodecError
from ecolora.codec.golomb import MAX_GOLOMB_PARAMETER
from ecolora.codec.values import DTYPES, DtypeSpec

__all__ = [
    "BITMAP",
    "COO",
    "COO16",
    "DENSE",
    "ENCODING_NAMES",
    "EXPONENT",
    "GOLOMB_NONZEROS",
    "GOLOMB_ZEROS",
    "MAX_NAME_BYTES",
    "MAX_NDIM",
    "RAW",
    "VALUE_CODING_NAMES",
    "Entry",
    "read_entry",
    "section_sizes",
    "write_entry",
]

DENSE, BITMAP, GOLOMB_NONZEROS, GOLOMB_ZEROS, COO, COO16 = 0, 1, 2, 3, 4, 5
ENCODING_NAMES = ("dense", "bitmap", "golomb", "golomb", "coo", "coo16")
RAW, EXPONENT = 0, 1
VALUE_CODING_NAMES = ("raw", "exponent")
MAX_NDIM = 32
MAX_NAME_BYTES = 1024
_FLOAT_WIRE = frozenset({0, 1, 2, 3})  # float32, float16, bfloat16, float64


@dataclass
class Entry:
    """One tensor's manifest entry (``params``: golomb M and stream sizes; ``value_params``:
    exponent M_v and stream sizes)."""

    name: str
    spec: DtypeSpec
    wire: DtypeSpec
    encoding: int
    value_coding: int
    shape: tuple[int, ...]
    nnz: int
    params: tuple[int, int, int] = (0, 0, 0)
    symbols: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))
    value_params: tuple[int, int, int] = (0, 0, 0)
    manifest_num_bytes: int = 0

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def coded_count(self) -> int:
        """How many positions the Golomb streams list (non-zeros or zeros)."""
        return self.numel - self.nnz if self.encoding == GOLOMB_ZEROS else self.nnz


def write_entry(entry: Entry, name_bytes: bytes, previous: bytes) -> bytes:
    """Serialize ``entry``; the name is front-coded against ``previous``."""
    shared = 0
    for a, b in zip(name_bytes, previous, strict=False):
        if a != b:
            break
        shared += 1
    out = bytearray(encode_varint(shared))
    out += encode_varint(len(name_bytes) - shared) + name_bytes[shared:]
    out.append((entry.spec.code << 4) | entry.wire.code)
    out.append((entry.value_coding << 4) | entry.encoding)
    out += encode_varint(len(entry.shape))
    for dim in entry.shape:
        out += encode_varint(dim)
    if entry.encoding != DENSE:
        out += encode_varint(entry.nnz)
    if entry.encoding in (GOLOMB_NONZEROS, GOLOMB_ZEROS):
        for value in entry.params:
            out += encode_varint(value)
    if entry.value_coding == EXPONENT:
        out += encode_varint(int(entry.symbols.size)) + entry.symbols.tobytes()
        for value in entry.value_params:
            out += encode_varint(value)
    return bytes(out)


def read_entry(
    reader: Reader, previous: bytes, index: int, numel_budget: int, max_dim: int
) -> tuple[Entry, bytes]:
    """Parse and validate one entry; returns it and its UTF-8 name for the next front coding.

    ``numel_budget`` is how many elements the payload may still declare (``max_numel`` minus the
    tensors before); a larger tensor is refused before anything is allocated. Each dimension is
    at most ``max_dim``.
    """
    start = reader.pos
    where = f"tensor #{index}"
    shared = reader.varint(f"{where} shared name prefix", len(previous))
    suffix_len = reader.varint(f"{where} name length", MAX_NAME_BYTES - shared)
    name_bytes = previous[:shared] + bytes(reader.take(suffix_len, f"{where} name"))
    try:
        name = name_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CodecError(f"{where}: name is not valid UTF-8 ({exc.reason})") from None
    where = f"tensor {name!r}"
    spec, wire = _read_dtypes(reader.u8(f"{where} dtype byte"), where)
    coding = reader.u8(f"{where} coding byte")
    encoding, value_coding = coding & 0x0F, coding >> 4
    if encoding > COO16 or value_coding > EXPONENT:
        raise CodecError(f"{where}: unknown coding byte 0x{coding:02x}")
    ndim = reader.varint(f"{where} ndim", MAX_NDIM)
    shape = tuple(reader.varint(f"{where} dim {i}", max_dim) for i in range(ndim))
    entry = Entry(name, spec, wire, encoding, value_coding, shape, 0)
    numel = entry.numel
    if numel > numel_budget:
        raise CodecError(
            f"{where}: shape {list(shape)} has {numel} elements, over the remaining limit "
            f"{numel_budget} (raise max_numel to accept larger payloads)"
        )
    entry.nnz = numel if encoding == DENSE else reader.varint(f"{where} nnz", numel)
    if encoding in (GOLOMB_NONZEROS, GOLOMB_ZEROS):
        m = reader.varint(f"{where} Golomb M", MAX_GOLOMB_PARAMETER)
        if m < 1:
            raise CodecError(f"{where}: Golomb M must be >= 1, got 0")
        limit = reader.data.nbytes
        entry.params = (m, reader.varint(f"{where} unary bytes", limit),
                        reader.varint(f"{where} remainder bytes", limit))  # fmt: skip
    if value_coding == EXPONENT:
        _read_exponent_table(reader, entry, where)
    entry.manifest_num_bytes = reader.pos - start
    return entry, name_bytes


def _read_dtypes(byte: int, where: str) -> tuple[DtypeSpec, DtypeSpec]:
    code, wire_code = byte >> 4, byte & 0x0F
    if code >= len(DTYPES) or wire_code >= len(DTYPES):
        raise CodecError(f"{where}: unknown dtype byte 0x{byte:02x}")
    spec, wire = DTYPES[code], DTYPES[wire_code]
    floats = spec.mantissa_bits is not None
    if (floats and wire.code not in _FLOAT_WIRE) or (not floats and wire.code != spec.code):
        raise CodecError(f"{where}: a {spec.name} tensor cannot travel as {wire.name}")
    return spec, wire


def _read_exponent_table(reader: Reader, entry: Entry, where: str) -> None:
    wire = entry.wire
    if entry.encoding in (DENSE, COO, COO16) or not wire.can_code_exponent or entry.nnz == 0:
        raise CodecError(f"{where}: exponent value coding is not allowed here")
    num_symbols = 1 << wire.exponent_bits
    k = reader.varint(f"{where} exponent table size", num_symbols)
    if k < 1:
        raise CodecError(f"{where}: exponent table is empty")
    symbols = np.frombuffer(bytes(reader.take(k, f"{where} exponent table")), dtype=np.uint8)
    if int(symbols.max()) >= num_symbols or int(np.bincount(symbols).max()) > 1:
        raise CodecError(f"{where}: exponent table has out-of-range or repeated symbols")
    m = reader.varint(f"{where} exponent Golomb M", k)
    if m < 1:
        raise CodecError(f"{where}: exponent Golomb M must be >= 1, got 0")
    limit = reader.data.nbytes
    entry.symbols = symbols
    entry.value_params = (m, reader.varint(f"{where} exponent unary bytes", limit),
                          reader.varint(f"{where} exponent remainder bytes", limit))  # fmt: skip


def section_sizes(entry: Entry) -> list[int]:
    """Byte lengths of the entry's body sections, in body order."""
    numel, nnz, wire = entry.numel, entry.nnz, entry.wire
    if entry.encoding == DENSE:
        return [numel * wire.itemsize]
    if entry.encoding == BITMAP:
        positions = [num_field_bytes(numel, 1)]
    elif entry.encoding == COO:
        positions = [4 * nnz]
    elif entry.encoding == COO16:
        positions = [2 * nnz]
    else:
        positions = [entry.params[1], entry.params[2]]
    if entry.value_coding == RAW:
        return positions + [nnz * wire.itemsize]
    _, unary, rem = entry.value_params
    return positions + [unary, rem, num_field_bytes(nnz, (wire.mantissa_bits or 0) + 1)]
