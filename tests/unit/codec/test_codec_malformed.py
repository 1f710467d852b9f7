"""Malformed payloads: every failure is a CodecError with a reason, never a crash or a hang."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from ecolora.codec import CodecError, describe, pack, unpack
from ecolora.codec.bits import encode_varint as v


def _seal(raw: bytes) -> bytes:
    return raw + zlib.crc32(raw).to_bytes(4, "little")


def _payload(entries: list[bytes], body: bytes, num_tensors: int | None = None) -> bytes:
    """A payload with a valid checksum around hand-made manifest entries and body."""
    manifest = b"".join(entries)
    count = len(entries) if num_tensors is None else num_tensors
    return _seal(b"ECLR\x01\x00" + v(count) + v(len(manifest)) + manifest + body)


def _entry(name: bytes, dtypes: int, coding: int, shape: tuple[int, ...], *rest: int) -> bytes:
    out = v(0) + v(len(name)) + name + bytes([dtypes, coding]) + v(len(shape))
    return out + b"".join(v(d) for d in shape) + b"".join(v(x) for x in rest)


def _small_payloads() -> list[bytes]:
    t = torch.zeros(5, 7)
    t[0, 1], t[2, 3], t[4, 6] = 1.5, -0.25, 3.0
    named = {"a.lora_A": t, "a.lora_B": t.T.contiguous() * 2}
    return [
        pack(named),
        pack(named, encoding="golomb"),
        pack(named, encoding="golomb", value_coding="exponent"),
        pack(named, encoding="coo"),
        pack(named, encoding="dense"),
    ]


def test_truncation_at_every_offset_raises():
    for payload in _small_payloads():
        for cut in range(len(payload)):
            with pytest.raises(CodecError):
                unpack(payload[:cut])


def test_every_single_bit_flip_raises():
    payload = _small_payloads()[2]
    for i in range(len(payload) * 8):
        corrupted = bytearray(payload)
        corrupted[i // 8] ^= 0x80 >> (i % 8)
        with pytest.raises(CodecError):
            unpack(bytes(corrupted))


def test_header_errors_have_reasons():
    good = pack({"x": torch.ones(3)})
    with pytest.raises(CodecError, match="payload too short: 3 bytes"):
        unpack(b"ECL")
    with pytest.raises(CodecError, match="bad magic b'ECLX'"):
        unpack(b"ECLX" + good[4:])
    with pytest.raises(
        CodecError, match="unsupported format version 2; this build reads version 1"
    ):
        unpack(good[:4] + b"\x02" + good[5:])
    with pytest.raises(CodecError, match=r"unknown flags 0x01"):
        unpack(good[:5] + b"\x01" + good[6:])
    with pytest.raises(CodecError, match="checksum mismatch"):
        unpack(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(TypeError, match="payload must be bytes, got str"):
        unpack("ECLR")


def test_lying_sizes_are_caught_before_allocation():
    body16 = bytes(16)
    dense = _entry(b"x", 0x11, 0x00, (8,))
    assert unpack(_payload([dense], body16))["x"].shape == (8,)
    with pytest.raises(CodecError, match="sections end at body byte 16, past the body length 15"):
        unpack(_payload([dense], body16[:-1]))
    with pytest.raises(CodecError, match="body is 17 bytes but the manifest accounts for 16"):
        unpack(_payload([dense], body16 + b"\x00"))
    huge = _entry(b"x", 0x11, 0x00, (2**20, 2**20))
    with pytest.raises(CodecError, match=r"over the remaining limit 2147483648 \(raise max_numel"):
        unpack(_payload([huge], b""))
    with pytest.raises(CodecError, match="past the body length 16"):
        unpack(_payload([_entry(b"x", 0x11, 0x00, (1000,))], body16))
    grid = _entry(b"x", 0x11, 0x00, (2, 4))
    with pytest.raises(
        CodecError, match=r"shape \[2, 4\] has 8 elements, over the remaining limit 7"
    ):
        unpack(_payload([grid], body16), max_numel=7)
    with pytest.raises(CodecError, match="dim 0 = 8 exceeds the limit 7"):
        unpack(_payload([dense], body16), max_numel=7)
    two = [grid, _entry(b"y", 0x11, 0x00, (2, 4))]
    with pytest.raises(CodecError, match=r"tensor 'y'.*over the remaining limit 4"):
        unpack(_payload(two, body16 * 2), max_numel=12)  # the budget is for all tensors
    with pytest.raises(CodecError, match="truncated payload"):
        unpack(_payload([dense], body16, num_tensors=2))
    with pytest.raises(CodecError, match="manifest has 1 trailing bytes"):
        unpack(_payload([dense + b"\x00"], body16))
    with pytest.raises(CodecError, match="number of tensors = 300 exceeds the limit"):
        unpack(_seal(b"ECLR\x01\x00" + v(300) + v(0)))
    with pytest.raises(
        CodecError, match="manifest length 99 exceeds the 0 bytes left in the payload"
    ):
        unpack(_seal(b"ECLR\x01\x00" + v(0) + v(99)))


def test_manifest_field_errors():
    with pytest.raises(CodecError, match="duplicate tensor name 'x'"):
        unpack(_payload([_entry(b"x", 0x11, 0, (1,)), _entry(b"x", 0x11, 0, (1,))], bytes(4)))
    with pytest.raises(CodecError, match="name is not valid UTF-8"):
        unpack(_payload([_entry(b"\xff", 0x11, 0, (1,))], bytes(2)))
    with pytest.raises(CodecError, match=r"unknown dtype byte 0xf1"):
        unpack(_payload([_entry(b"x", 0xF1, 0, (1,))], bytes(2)))
    with pytest.raises(CodecError, match="a int64 tensor cannot travel as float16"):
        unpack(_payload([_entry(b"x", 0x71, 0, (1,))], bytes(2)))
    with pytest.raises(CodecError, match="unknown coding byte 0x06"):
        unpack(_payload([_entry(b"x", 0x11, 0x06, (1,))], bytes(2)))
    with pytest.raises(CodecError, match="ndim = 33 exceeds the limit 32"):
        unpack(_payload([_entry(b"x", 0x11, 0, (1,) * 33)], bytes(2)))
    with pytest.raises(CodecError, match="nnz = 9 exceeds the limit 8"):
        unpack(_payload([_entry(b"x", 0x11, 0x01, (8,), 9)], bytes(19)))
    with pytest.raises(CodecError, match="Golomb M must be >= 1, got 0"):
        unpack(_payload([_entry(b"x", 0x11, 0x02, (8,), 1, 0, 1, 0)], bytes(3)))
    with pytest.raises(CodecError, match="exponent value coding is not allowed here"):
        unpack(_payload([_entry(b"x", 0x11, 0x10, (8,))], bytes(16)))
    with pytest.raises(CodecError, match="over-long varint encoding"):
        unpack(_payload([b"\x00\x81\x00x"], b""))
    # An exponent table with a repeated symbol.
    table = _entry(b"x", 0x11, 0x12, (8,), 2, 1, 1, 0) + v(2) + b"\x0f\x0f" + v(1) + v(1) + v(0)
    with pytest.raises(CodecError, match="exponent table has out-of-range or repeated symbols"):
        unpack(_payload([table], bytes(6)))


def test_stream_content_errors():
    # bitmap claims nnz 2 but has 3 set bits
    bitmap = _entry(b"x", 0x11, 0x01, (8,), 2)
    with pytest.raises(CodecError, match="bitmap has 3 set bits, nnz is 2"):
        unpack(_payload([bitmap], b"\xe0" + bytes(4)))
    # bitmap padding bits must be zero (numel 4 -> 4 padding bits)
    with pytest.raises(CodecError, match="non-zero padding bits"):
        unpack(_payload([_entry(b"x", 0x11, 0x01, (4,), 1)], b"\x81" + bytes(2)))
    # golomb M = 1 stream naming a position past the end: numel 4, stream 0000 0001
    beyond = _entry(b"x", 0x11, 0x02, (4,), 1, 1, 1, 0)
    with pytest.raises(CodecError, match=r"position 7 is outside \[0, 4\)"):
        unpack(_payload([beyond], b"\x01" + bytes(2)))
    # golomb M = 2 with a quotient too large for the tensor
    big_q = _entry(b"x", 0x11, 0x02, (4,), 1, 2, 1, 1)
    with pytest.raises(CodecError, match="decoded value exceeds 3"):
        unpack(_payload([big_q], b"\x08\x00" + bytes(2)))
    # unary stream with a trailing empty byte
    trailing = _entry(b"x", 0x11, 0x02, (40,), 1, 4, 2, 1)
    with pytest.raises(CodecError, match="trailing bytes after its last code"):
        unpack(_payload([trailing], b"\x80\x00\x00" + bytes(2)))
    # coo indices must be strictly increasing
    coo = _entry(b"x", 0x11, 0x04, (8,), 2)
    idx = np.array([3, 3], dtype="<i4").tobytes()
    with pytest.raises(CodecError, match=r"coo indices must be strictly increasing in \[0, 8\)"):
        unpack(_payload([coo], idx + bytes(4)))
    # bool values other than 0/1
    with pytest.raises(CodecError, match="bool values must be 0 or 1"):
        unpack(_payload([_entry(b"x", 0x99, 0x00, (2,))], b"\x01\x02"))


def test_describe_validates_too():
    payload = pack({"x": torch.ones(4)})
    with pytest.raises(CodecError, match="checksum mismatch"):
        describe(payload[:-1] + b"\x00")
