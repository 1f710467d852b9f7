"""Golden byte vectors worked out by hand (see docs/codec.md for the layout)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from ecolora.codec import FORMAT_VERSION, CodecError, describe, pack, unpack
from ecolora.codec.bits import encode_unary, encode_varint, pack_fields
from ecolora.codec.golomb import golomb_encode

# w = [[0, 1.5, 0, 0], [0, 0, -2, 0]]: fp16 1.5 = 0x3E00, -2 = 0xC000; non-zeros at flat 1 and 6.
W = {"w": torch.tensor([[0.0, 1.5, 0.0, 0.0], [0.0, 0.0, -2.0, 0.0]])}
HEADER = "45 43 4c 52 01 00 01"  # "ECLR", version 1, flags 0, one tensor
NAME = "00 01 77"  # shared prefix 0, suffix length 1, "w"
SHAPE = "02 02 04"  # ndim 2, dims 2 and 4


def _sealed(hex_without_crc: str) -> bytes:
    body = bytes.fromhex(hex_without_crc)
    return body + zlib.crc32(body).to_bytes(4, "little")


def test_empty_mapping_is_a_twelve_byte_payload():
    payload = pack({})
    assert payload == _sealed("45 43 4c 52 01 00 00 00")
    assert len(payload) == 12
    assert unpack(payload) == {}
    assert describe(payload) == []
    assert FORMAT_VERSION == 1


def test_auto_picks_bitmap_for_the_small_case():
    # dense = 16 B; bitmap = 1 B + nnz varint + 4 B values = 6; golomb (M = 2) = 10; raw values
    # (4 B) beat exponent coding (5 B body + 6 B table).
    # manifest: name, dtypes 0x01 (float32 via float16), coding 0x01 (raw, bitmap), shape, nnz 2.
    # body: bitmap 0b01000010 = 0x42, then 0x3E00 and 0xC000 little-endian.
    expected = _sealed(f"{HEADER} 09 {NAME} 01 01 {SHAPE} 02  42 00 3e 00 c0")
    assert pack(W) == expected
    out = unpack(expected)
    assert out["w"].dtype == torch.float32
    assert torch.equal(out["w"], W["w"])


def test_forced_golomb_positions():
    # p = 2/8: b* = 1 + floor(log2(ln 0.618 / ln 0.75)) = 1 and the optimal M is 2 -> M = 2.
    # gaps [1, 4] -> q = [0, 2], r = [1, 0]; unary "1" "001" -> 1001 0000 = 0x90; remainders
    # (1 bit each) "10" -> 0x80. Manifest adds M = 2, unary bytes 1, remainder bytes 1.
    expected = _sealed(f"{HEADER} 0c {NAME} 01 02 {SHAPE} 02 02 01 01  90 80 00 3e 00 c0")
    assert pack(W, encoding="golomb") == expected
    assert torch.equal(unpack(expected)["w"], W["w"])


def test_forced_exponent_value_coding():
    # exponents 15 (1.5) and 16 (-2), one each -> rank table [15, 16]; ranks [0, 1] with M = 1:
    # unary "1" "01" -> 1010 0000 = 0xA0. Sign/mantissa fields (11 bits): 1.5 -> 0x200,
    # -2 -> 0x400; planes of 8, 2 and 1 bits: [0x40, 0x80], [0x00], [0x00].
    # coding byte 0x12 = exponent values (1 << 4) | golomb over non-zeros (2).
    manifest = f"{NAME} 01 12 {SHAPE} 02 02 01 01  02 0f 10 01 01 00"
    expected = _sealed(f"{HEADER} 12 {manifest}  90 80  a0  40 80 00 00")
    assert pack(W, encoding="golomb", value_coding="exponent") == expected
    assert torch.equal(unpack(expected)["w"], W["w"])
    (row,) = describe(expected)
    assert row == {
        "name": "w",
        "shape": (2, 4),
        "dtype": "float32",
        "wire_dtype": "float16",
        "encoding": "golomb",
        "coded": "nonzeros",
        "nnz": 2,
        "coder_param": 2,
        "value_coding": "exponent",
        "value_param": 1,
        "num_bytes": 7,
        "position_num_bytes": 2,
        "manifest_num_bytes": 18,
    }


def test_dense_and_coo():
    dense = "00 00 00 3e 00 00 00 00  00 00 00 00 00 c0 00 00"
    assert pack(W, encoding="dense") == _sealed(f"{HEADER} 08 {NAME} 01 00 {SHAPE}  {dense}")
    coo = "01 00 00 00 06 00 00 00  00 3e 00 c0"  # int32 LE indices 1 and 6, then values
    assert pack(W, encoding="coo") == _sealed(f"{HEADER} 09 {NAME} 01 04 {SHAPE} 02  {coo}")


def test_front_coded_names_and_float32_wire():
    tensors = {"lora_A": torch.tensor([1.0]), "lora_B": torch.tensor([0.1])}
    payload = pack(tensors, value_dtype=torch.float32)
    # "lora_B" shares 5 bytes with "lora_A": entry 2 starts 05 01 "B". dtypes 0x00 (fp32/fp32).
    entry_a = "00 06 6c 6f 72 61 5f 41  00 00 01 01"
    entry_b = "05 01 42  00 00 01 01"
    values = np.array([1.0, 0.1], dtype="<f4").tobytes().hex()
    assert payload == _sealed(f"45 43 4c 52 01 00 02 13 {entry_a} {entry_b} {values}")
    out = unpack(payload)
    assert torch.equal(out["lora_B"], tensors["lora_B"])  # exact fp32 round trip


def test_bit_primitives_golden():
    assert encode_varint(0) == b"\x00"
    assert encode_varint(127) == b"\x7f"
    assert encode_varint(300) == b"\xac\x02"
    assert bytes(encode_unary(np.array([0, 2, 1]))) == bytes([0b10010100])  # "1" "001" "01" + pad
    # 11-bit fields 0x5A5 and 0x001 -> planes: top 8 bits [0xB4, 0x00], 2 bits [10, 00] -> 0x80,
    # 1 bit [1, 1] -> 0xC0.
    assert bytes(pack_fields(np.array([0x5A5, 0x001]), 11)) == bytes([0xB4, 0x00, 0x80, 0xC0])
    # Truncated binary, M = 3 (c = 2, u = 1): r = 0 -> "0"; r = 1 -> "10"; r = 2 -> "11".
    # values [0, 1, 2, 5] -> q [0, 0, 0, 1], r [0, 1, 2, 2]; unary 1110 1000 = 0xE8;
    # fields [0, 1, 1, 1] -> 0x70; extra bits of the three long codes [0, 1, 1] -> 0x60.
    unary, rem = golomb_encode(np.array([0, 1, 2, 5]), 3)
    assert bytes(unary) == b"\xe8"
    assert bytes(rem) == b"\x70\x60"


@pytest.mark.parametrize("flip", [0, 5, 9, 20])
def test_golden_payload_rejects_single_byte_changes(flip):
    from ecolora.codec import CodecError

    payload = bytearray(pack(W))
    payload[flip] ^= 0x01
    with pytest.raises(CodecError):
        unpack(bytes(payload))


def test_coo16_golden_bytes_and_limit():
    """coo16: uint16 little-endian indices then raw fp16 values (the paper's 16-bit positions)."""
    t = torch.tensor([0.0, 1.0, 0.0, -2.0, 0.0])
    payload = pack({"x": t}, encoding="coo16")
    body = payload[-4 - 2 * 2 - 2 * 2:-4]  # two indices, two fp16 values, before the CRC
    assert body == bytes([1, 0, 3, 0]) + torch.tensor([1.0, -2.0], dtype=torch.float16).numpy().tobytes()
    assert len(pack({"x": t}, encoding="coo")) == len(payload) + 2 * 2  # int32 indices: 2 bytes more each
    assert torch.equal(unpack(payload)["x"], t)
    with pytest.raises(CodecError, match="coo16 needs at most 2\\*\\*16 elements, got 65537; use coo"):
        pack({"x": torch.ones(2**16 + 1)}, encoding="coo16")
