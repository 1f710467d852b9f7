"""``pack``/``unpack``: named tensors <-> one self-describing, checksummed payload.

Payload layout::

    "ECLR"           4 bytes magic
    u8 version       FORMAT_VERSION
    u8 flags         0 (reserved)
    varint           number of tensors
    varint           manifest length in bytes
    manifest         one entry per tensor (see ecolora.codec.manifest)
    body             the tensors' sections, in manifest order, back to back
    u32 LE           CRC-32 (zlib) of every byte before it

Per tensor the encoder picks the smallest of dense, bitmap + values and Golomb gaps + values
(``encoding="auto"``), counting the manifest bytes each one needs. Golomb codes the gaps of the
minority (non-zeros when density <= 1/2, else zeros), so its positions stay near the entropy bound
at every density and never fail where Sattler's ``b*`` reaches 0. ``unpack`` validates the whole
header and manifest against the payload length and limits before it allocates anything.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ecolora.codec.bits import Reader, check_bit_padding, encode_varint
from ecolora.codec.errors import CodecError
from ecolora.codec.manifest import (
    BITMAP,
    COO,
    COO16,
    DENSE,
    ENCODING_NAMES,
    EXPONENT,
    GOLOMB_NONZEROS,
    GOLOMB_ZEROS,
    RAW,
    VALUE_CODING_NAMES,
    Entry,
    read_entry,
    section_sizes,
    write_entry,
)
from ecolora.codec.positions import decode_positions, encode_positions, plan_positions
from ecolora.codec.values import (
    DtypeSpec,
    decode_exponent_values,
    dtype_spec,
    plan_exponent_coding,
)

__all__ = ["FORMAT_VERSION", "MAGIC", "describe", "pack", "unpack"]

FORMAT_VERSION = 1
MAGIC = b"ECLR"
ENCODINGS = ("auto", "dense", "bitmap", "golomb", "coo", "coo16")
VALUE_CODINGS = ("auto", "raw", "exponent")
_WIRE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_MIN_PAYLOAD = len(MAGIC) + 2 + 1 + 1 + 4


def pack(
    tensors: Mapping[str, torch.Tensor],
    *,
    value_dtype: torch.dtype = torch.float16,
    encoding: str = "auto",
    value_coding: str = "auto",
) -> bytes:
    """Serialize named tensors into one payload; zeros are not sent.

    Args:
        tensors: name -> tensor (float, integer or bool; any shape, any device). Names are UTF-8
            strings of at most 1024 bytes; order is kept.
        value_dtype: wire precision of float values (float16, bfloat16, float32, float64). A
            float input narrower than it travels in its own dtype. Narrowing rounds to nearest;
            a finite value that would overflow raises :class:`CodecError`.
        encoding: ``"auto"`` (smallest per tensor), or force ``"dense"`` (raw values, the
            uncompressed baseline), ``"bitmap"``, ``"golomb"``, ``"coo"`` (int32 indices and
            raw values) or ``"coo16"`` (uint16 indices and raw values, tensors of at most 2**16
            elements: the EcoLoRA paper's "without encoding" positions).
        value_coding: how bitmap/golomb values travel: ``"auto"`` (smaller of the two),
            ``"raw"`` (wire words as is) or ``"exponent"`` (exponent field entropy-coded).

    Returns:
        The payload. ``unpack(pack(t))`` returns the wire values in the original dtypes/shapes.
    """
    if not isinstance(tensors, Mapping):
        raise TypeError(
            f"tensors must be a Mapping[str, torch.Tensor], got {type(tensors).__name__}"
        )
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}; got {encoding!r}")
    if value_coding not in VALUE_CODINGS:
        raise ValueError(
            f"value_coding must be one of {', '.join(VALUE_CODINGS)}; got {value_coding!r}"
        )
    if value_dtype not in _WIRE_DTYPES:
        names = ", ".join(str(d) for d in _WIRE_DTYPES)
        raise ValueError(f"value_dtype must be one of {names}; got {value_dtype}")
    manifest = bytearray()
    body: list[Any] = []
    previous = b""
    for name, tensor in tensors.items():
        name_bytes = _check_item(name, tensor)
        entry, sections = _encode_tensor(name, tensor, value_dtype, encoding, value_coding)
        manifest += write_entry(entry, name_bytes, previous)
        body.extend(sections)
        previous = name_bytes
    head = MAGIC + bytes([FORMAT_VERSION, 0])
    head += encode_varint(len(tensors)) + encode_varint(len(manifest))
    parts = [head, bytes(manifest), *body]
    crc = 0
    for part in parts:
        crc = zlib.crc32(part, crc)
    parts.append(crc.to_bytes(4, "little"))
    return b"".join(parts)


def unpack(
    payload: bytes | bytearray | memoryview, *, max_numel: int = 2**31
) -> dict[str, torch.Tensor]:
    """Decode a payload from :func:`pack`; raise :class:`CodecError` on anything malformed.

    ``max_numel`` bounds the total number of elements the payload may declare (all tensors
    together), so a small hostile payload cannot make the decoder allocate without limit.
    """
    data, entries, body_start = _parse(payload, max_numel)
    out: dict[str, torch.Tensor] = {}
    offset = body_start
    for entry in entries:
        sections = []
        for size in section_sizes(entry):
            sections.append(np.frombuffer(data, dtype=np.uint8, count=size, offset=offset))
            offset += size
        out[entry.name] = _decode_tensor(entry, sections)
    return out


def describe(payload: bytes | bytearray | memoryview, *, max_numel: int = 2**31) -> list[dict[str, Any]]:
    """Validate a payload's header and manifest and list one dict per tensor, in order.

    Keys: name, shape, dtype, wire_dtype, encoding (dense/bitmap/golomb/coo/coo16), coded (which
    positions the Golomb streams list: "nonzeros"/"zeros"/None), nnz (values sent), coder_param
    (Golomb M or None), value_coding (raw/exponent), value_param (exponent-rank M or None),
    num_bytes (body bytes), position_num_bytes (the part of num_bytes naming positions; values
    take the rest), manifest_num_bytes.
    """
    _, entries, _ = _parse(payload, max_numel)
    rows = []
    for e in entries:
        golomb = e.encoding in (GOLOMB_NONZEROS, GOLOMB_ZEROS)
        sizes = section_sizes(e)
        rows.append({
            "name": e.name,
            "shape": e.shape,
            "dtype": e.spec.name,
            "wire_dtype": e.wire.name,
            "encoding": ENCODING_NAMES[e.encoding],
            "coded": ("zeros" if e.encoding == GOLOMB_ZEROS else "nonzeros") if golomb else None,
            "nnz": e.nnz,
            "coder_param": e.params[0] if golomb else None,
            "value_coding": VALUE_CODING_NAMES[e.value_coding],
            "value_param": e.value_params[0] if e.value_coding == EXPONENT else None,
            "num_bytes": sum(sizes),
            "position_num_bytes": sum(sizes[: _num_position_sections(e)]),
            "manifest_num_bytes": e.manifest_num_bytes,
        })  # fmt: skip
    return rows


def _num_position_sections(entry: Entry) -> int:
    if entry.encoding == DENSE:
        return 0
    return 2 if entry.encoding in (GOLOMB_NONZEROS, GOLOMB_ZEROS) else 1


# --- packing -----------------------------------------------------------------------------------


def _check_item(name: object, tensor: object) -> bytes:
    if not isinstance(name, str):
        raise TypeError(f"tensor names must be str, got {type(name).__name__}: {name!r}")
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor {name!r} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.layout != torch.strided:
        raise TypeError(f"tensor {name!r} has layout {tensor.layout}; pack dense (strided) tensors")
    try:
        name_bytes = name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CodecError(f"tensor name {name!r} is not encodable as UTF-8: {exc.reason}") from None
    if len(name_bytes) > 1024:
        raise CodecError(
            f"tensor name {name[:40]!r}... is {len(name_bytes)} bytes; the limit is 1024"
        )
    return name_bytes


def _wire_bits(
    name: str, tensor: torch.Tensor, value_dtype: torch.dtype, need_magnitude: bool
) -> tuple[DtypeSpec, DtypeSpec, np.ndarray, np.ndarray | None]:
    """Cast to the wire dtype; return (spec, wire spec, flat unsigned words, words without sign).

    The sign-less words (float wires only, computed when needed or when narrowing) double as
    the zero test and the overflow check: a finite input that became inf refuses to pack.
    """
    spec = dtype_spec(tensor.dtype)
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    wire = spec
    if spec.mantissa_bits is not None and dtype_spec(value_dtype).itemsize <= spec.itemsize:
        wire = dtype_spec(value_dtype)
    w = t if wire is spec else t.to(wire.torch_dtype)
    bits = w.contiguous().view(wire.int_view).numpy().reshape(-1).view(wire.bits_dtype)
    if wire.mantissa_bits is None or not (need_magnitude or wire is not spec):
        return spec, wire, bits, None
    magnitude = bits & _magnitude(wire)
    inf_bits = ((1 << wire.exponent_bits) - 1) << wire.mantissa_bits
    if wire is not spec and magnitude.size and int(magnitude.max()) >= inf_bits:
        overflow = torch.isinf(w) & torch.isfinite(t)
        if overflow.any():
            peak = float(t[overflow].abs().max())
            raise CodecError(
                f"tensor {name!r}: {int(overflow.sum())} finite values overflow {wire.name} "
                f"(max |value| {peak:.4g}); pack with value_dtype=torch.float32"
            )
    return spec, wire, bits, magnitude


def _magnitude(wire: DtypeSpec) -> np.generic:
    """All bits but the sign, as a scalar of the wire's unsigned type."""
    word: type[np.generic] = np.dtype(wire.bits_dtype).type
    return word((1 << (wire.itemsize * 8 - 1)) - 1)


def _encode_tensor(
    name: str, tensor: torch.Tensor, value_dtype: torch.dtype, encoding: str, value_coding: str
) -> tuple[Entry, list[np.ndarray]]:
    spec, wire, bits, magnitude = _wire_bits(name, tensor, value_dtype, encoding != "dense")
    shape = tuple(int(d) for d in tensor.shape)
    numel = int(bits.size)
    if encoding == "dense":
        return Entry(name, spec, wire, DENSE, RAW, shape, numel), [bits.view(np.uint8)]
    nonzero = (bits if magnitude is None else magnitude) != 0
    nnz = int(np.count_nonzero(nonzero))
    index = None  # flat indices of the non-zeros, when some but not all are
    if nnz == numel:
        values = bits
    elif nnz == 0:
        values = bits[:0]
    else:
        index = np.flatnonzero(nonzero)
        values = bits.take(index)  # gather by index: far faster than a boolean mask here
    # Values: raw, or exponent-coded when it is smaller (or forced).
    vcoding, plan = RAW, None
    value_bytes = nnz * wire.itemsize
    usable = wire.can_code_exponent and nnz > 0 and encoding not in ("coo", "coo16") and value_coding != "raw"
    if usable:
        plan = plan_exponent_coding(values, wire)
        if value_coding == "exponent" or plan.num_bytes + plan.manifest_bytes < value_bytes:
            vcoding, value_bytes = EXPONENT, plan.num_bytes + plan.manifest_bytes
    nnz_bytes = len(encode_varint(nnz))
    if encoding == "coo":
        if numel >= 2**31:
            raise CodecError(f"tensor {name!r}: coo needs fewer than 2**31 elements, got {numel}")
        chosen = COO
    elif encoding == "coo16":
        if numel > 2**16:
            raise CodecError(f"tensor {name!r}: coo16 needs at most 2**16 elements, got {numel}; use coo (int32)")
        chosen = COO16
    else:
        pos_plan = plan_positions(nonzero, nnz, index)
        sizes = {
            BITMAP: (numel + 7) // 8 + nnz_bytes + value_bytes,
            pos_plan.encoding: pos_plan.num_bytes + nnz_bytes + value_bytes,
        }
        if encoding == "auto":
            sizes[DENSE] = numel * wire.itemsize
            chosen = min(sizes, key=lambda enc: (sizes[enc], enc))
        else:
            chosen = BITMAP if encoding == "bitmap" else pos_plan.encoding
    if chosen == DENSE:
        return Entry(name, spec, wire, DENSE, RAW, shape, numel), [bits.view(np.uint8)]
    entry = Entry(name, spec, wire, chosen, vcoding, shape, nnz)
    if chosen == BITMAP:
        sections = [np.packbits(nonzero)]
    elif chosen == COO:
        coo = np.flatnonzero(nonzero) if index is None else index
        sections = [coo.astype("<i4").view(np.uint8)]
    elif chosen == COO16:
        coo = np.flatnonzero(nonzero) if index is None else index
        sections = [coo.astype("<u2").view(np.uint8)]
    else:
        unary, rem = encode_positions(pos_plan, nonzero)
        entry.params = (pos_plan.golomb_m, unary.size, rem.size)
        sections = [unary, rem]
    if vcoding == RAW:
        return entry, sections + [values.view(np.uint8)]
    assert plan is not None
    entry.symbols = plan.symbols
    params, value_sections = plan.encode(values, wire)
    entry.value_params = (params[0], params[1], params[2])
    return entry, sections + value_sections


# --- unpacking ---------------------------------------------------------------------------------


def _parse(payload: object, max_numel: int) -> tuple[memoryview, list[Entry], int]:
    """Check magic, version, checksum and the manifest; return (data, entries, body offset)."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
    data = memoryview(payload).cast("B") if isinstance(payload, memoryview) else memoryview(payload)
    if len(data) < _MIN_PAYLOAD:
        raise CodecError(f"payload too short: {len(data)} bytes, a valid one has >= {_MIN_PAYLOAD}")
    if bytes(data[:4]) != MAGIC:
        raise CodecError(
            f"bad magic {bytes(data[:4])!r}: not an ecolora codec payload (expected {MAGIC!r})"
        )
    if data[4] != FORMAT_VERSION:
        raise CodecError(
            f"unsupported format version {data[4]}; this build reads version {FORMAT_VERSION}"
        )
    if data[5] != 0:
        raise CodecError(f"unknown flags 0x{data[5]:02x} (expected 0)")
    stored = int.from_bytes(data[-4:], "little")
    actual = zlib.crc32(data[:-4])
    if stored != actual:
        raise CodecError(
            f"checksum mismatch: stored 0x{stored:08x}, computed 0x{actual:08x} (corrupted or truncated payload)"
        )
    end = len(data) - 4
    reader = Reader(data, 6, end)
    num_tensors = reader.varint("number of tensors", end)
    manifest_len = reader.varint("manifest length", 2**63)
    if manifest_len > reader.remaining:
        raise CodecError(
            f"manifest length {manifest_len} exceeds the {reader.remaining} bytes left in the payload"
        )
    body_start = reader.pos + manifest_len
    manifest = Reader(data, reader.pos, body_start)
    entries: list[Entry] = []
    names: set[str] = set()
    previous, budget, body_len = b"", max_numel, 0
    for index in range(num_tensors):
        entry, previous = read_entry(manifest, previous, index, budget, max(max_numel, 0))
        if entry.name in names:
            raise CodecError(f"duplicate tensor name {entry.name!r}")
        names.add(entry.name)
        budget -= entry.numel
        body_len += sum(section_sizes(entry))
        if body_len > end - body_start:
            raise CodecError(
                f"tensor {entry.name!r}: sections end at body byte {body_len}, "
                f"past the body length {end - body_start}"
            )
        entries.append(entry)
    if manifest.remaining:
        raise CodecError(
            f"manifest has {manifest.remaining} trailing bytes after {num_tensors} entries"
        )
    if body_len != end - body_start:
        raise CodecError(
            f"body is {end - body_start} bytes but the manifest accounts for {body_len}"
        )
    return data, entries, body_start


def _decode_tensor(entry: Entry, sections: list[np.ndarray]) -> torch.Tensor:
    wire, numel, nnz = entry.wire, entry.numel, entry.nnz
    what = f"tensor {entry.name!r}"
    if entry.encoding == DENSE:
        bits = sections[0].view(wire.bits_dtype).copy()
    else:
        if entry.encoding == BITMAP:
            check_bit_padding(sections[0], numel, f"{what} bitmap")
            index = np.flatnonzero(np.unpackbits(sections[0], count=numel).view(bool))
            if index.size != nnz:
                raise CodecError(f"{what}: bitmap has {index.size} set bits, nnz is {nnz}")
        elif entry.encoding in (COO, COO16):
            index = sections[0].view("<i4" if entry.encoding == COO else "<u2").astype(np.int64)
            if nnz and (index[0] < 0 or index[-1] >= numel or np.any(np.diff(index) <= 0)):
                raise CodecError(f"{what}: coo indices must be strictly increasing in [0, {numel})")
        else:
            index = decode_positions(entry, sections[0], sections[1], what)
        if entry.value_coding == RAW:
            values = sections[-1].view(wire.bits_dtype)
        else:
            values = decode_exponent_values(
                (sections[-3], sections[-2], sections[-1]), nnz, entry.symbols,
                entry.value_params[0], wire, what,
            )  # fmt: skip
        if nnz == numel:
            bits = values.copy() if entry.value_coding == RAW else values
        else:
            bits = np.zeros(numel, dtype=wire.bits_dtype)
            bits[index] = values
    if wire.torch_dtype is torch.bool and np.any(bits > 1):
        raise CodecError(f"{what}: bool values must be 0 or 1")
    signed = bits.view(np.int8 if wire.itemsize == 1 else f"<i{wire.itemsize}")
    tensor = torch.from_numpy(signed).view(wire.torch_dtype)
    if entry.spec is not wire:
        tensor = tensor.to(entry.spec.torch_dtype)
    return tensor.reshape(entry.shape)
