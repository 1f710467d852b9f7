"""ecolora's wire format: named tensors <-> bytes, lossless for the wire values (fp16 default).

Every message between server and clients is ``pack`` bytes. See ``docs/codec.md`` for the byte
layout, the coder choices and measurements.
"""

from ecolora.codec.container import FORMAT_VERSION, MAGIC, describe, pack, unpack
from ecolora.codec.errors import CodecError
from ecolora.codec.golomb import (
    expected_golomb_bits,
    optimal_golomb_parameter,
    position_entropy_bits,
    rice_parameter,
)

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "CodecError",
    "describe",
    "expected_golomb_bits",
    "optimal_golomb_parameter",
    "pack",
    "position_entropy_bits",
    "rice_parameter",
    "unpack",
]
