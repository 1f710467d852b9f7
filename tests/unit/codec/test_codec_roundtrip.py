"""Round trips: hypothesis over shapes, dtypes, densities, encodings; wire-value semantics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecolora.codec import CodecError, describe, pack, unpack

FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
OTHER_DTYPES = [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool]
ENCODINGS = ["auto", "dense", "bitmap", "golomb", "coo"]
VALUE_CODINGS = ["auto", "raw", "exponent"]
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _wire(t: torch.Tensor, value_dtype: torch.dtype) -> torch.Tensor:
    """What unpack must return: the wire values, in the input dtype."""
    if not t.is_floating_point():
        return t
    if torch.finfo(t.dtype).bits < torch.finfo(value_dtype).bits:
        return t
    return t.to(value_dtype).to(t.dtype)


@st.composite
def tensors(draw):
    shape = tuple(draw(st.lists(st.integers(0, 9), min_size=0, max_size=3)))
    dtype = draw(st.sampled_from(FLOAT_DTYPES + OTHER_DTYPES))
    density = draw(st.sampled_from([0.0, 0.01, 0.1, 0.3, 0.38, 0.5, 0.62, 0.9, 1.0]))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    numel = math.prod(shape)
    if dtype == torch.bool:
        values = torch.ones(numel, dtype=torch.bool)
    elif dtype.is_floating_point:
        scale = draw(st.sampled_from([1e-4, 1e-2, 1.0, 100.0]))
        values = (torch.randn(numel, generator=gen) * scale).to(dtype)
    else:
        values = torch.randint(-100 if dtype != torch.uint8 else 1, 100, (numel,), generator=gen)
        values = values.to(dtype)
    keep = torch.rand(numel, generator=gen) < density
    zero = torch.zeros((), dtype=dtype)
    return torch.where(keep, values, zero).reshape(shape)


@FAST
@given(
    items=st.lists(tensors(), min_size=0, max_size=4),
    encoding=st.sampled_from(ENCODINGS),
    value_coding=st.sampled_from(VALUE_CODINGS),
    value_dtype=st.sampled_from([torch.float16, torch.float32, torch.bfloat16]),
)
def test_round_trip(items, encoding, value_coding, value_dtype):
    named = {f"layers.{i}.ä.lora_{'AB'[i % 2]}.weight": t for i, t in enumerate(items)}
    payload = pack(named, encoding=encoding, value_coding=value_coding, value_dtype=value_dtype)
    out = unpack(payload)
    assert list(out) == list(named)
    for name, t in named.items():
        got = out[name]
        assert got.dtype == t.dtype and got.shape == t.shape
        assert torch.equal(got, _wire(t, value_dtype)), name
    rows = describe(payload)
    assert [r["name"] for r in rows] == list(named)
    for row, t in zip(rows, named.values(), strict=True):
        wire = _wire(t, value_dtype)
        if row["encoding"] != "dense":
            assert row["nnz"] == int(torch.count_nonzero(wire))


@FAST
@given(
    numel=st.integers(1, 3000),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_auto_is_never_larger_than_a_forced_encoding(numel, density, seed):
    gen = torch.Generator().manual_seed(seed)
    t = torch.randn(numel, generator=gen) * (torch.rand(numel, generator=gen) < density)
    sizes = {enc: len(pack({"t": t}, encoding=enc)) for enc in ENCODINGS}
    assert sizes["auto"] == min(sizes[e] for e in ("dense", "bitmap", "golomb"))
    assert torch.equal(unpack(pack({"t": t}))["t"], t.half().float())


def test_float32_values_round_trip_exactly():
    t = torch.randn(64, 33, dtype=torch.float64).float() * 1e-3
    t[t.abs() < 1e-3] = 0
    for encoding in ENCODINGS:
        out = unpack(pack({"x": t}, value_dtype=torch.float32, encoding=encoding))["x"]
        assert torch.equal(out, t), encoding


def test_signed_zero_nan_inf_and_subnormals():
    t = torch.tensor([0.0, -0.0, float("nan"), float("inf"), -float("inf"), 6e-8, -6e-8, 1e-9])
    for encoding in ENCODINGS:
        out = unpack(pack({"x": t}, encoding=encoding))["x"]
        ref = t.half().float()
        assert torch.equal(torch.isnan(out), torch.isnan(ref))
        finite = ~torch.isnan(ref)
        assert torch.equal(out[finite], ref[finite])  # -0.0 == 0.0; 1e-9 underflows to 0
    dense = unpack(pack({"x": t}, encoding="dense"))["x"]
    assert math.copysign(1.0, float(dense[1])) == -1.0  # dense keeps the sign of zero


def test_narrower_float_input_travels_in_its_own_dtype():
    t = torch.randn(100).to(torch.bfloat16)
    (row,) = describe(pack({"x": t}, value_dtype=torch.float32))
    assert row["wire_dtype"] == "bfloat16"
    assert torch.equal(unpack(pack({"x": t}, value_dtype=torch.float32))["x"], t)


def test_overflow_to_fp16_is_refused():
    t = torch.tensor([1.0, 70000.0, float("inf")])
    with pytest.raises(
        CodecError, match=r"1 finite values overflow float16.*value_dtype=torch.float32"
    ):
        pack({"big": t})
    assert torch.equal(unpack(pack({"big": t}, value_dtype=torch.float32))["big"], t)
    assert torch.equal(unpack(pack({"inf": t[[0, 2]]}))["inf"], t[[0, 2]])  # inf stays inf


def test_non_contiguous_requires_grad_and_zero_dim():
    base = torch.randn(6, 8, requires_grad=True)
    view = base.t()[::2]
    scalar = torch.tensor(3.5)
    out = unpack(pack({"v": view, "s": scalar, "e": torch.zeros(0, 5)}))
    assert torch.equal(out["v"], view.detach().half().float())
    assert out["s"].shape == () and float(out["s"]) == 3.5
    assert out["e"].shape == (0, 5)


def test_unpacked_tensors_do_not_alias_the_payload():
    t = torch.ones(16)
    payload = bytearray(pack({"x": t}, encoding="dense"))
    out = unpack(payload)
    out["x"].add_(1)  # writable, and the payload is unchanged
    assert unpack(payload)["x"].sum() == 16


def test_pack_argument_errors():
    with pytest.raises(ValueError, match="encoding must be one of auto, dense"):
        pack({}, encoding="zstd")
    with pytest.raises(ValueError, match="value_coding must be one of auto, raw, exponent"):
        pack({}, value_coding="huffman")
    with pytest.raises(ValueError, match="value_dtype must be one of"):
        pack({}, value_dtype=torch.int8)
    with pytest.raises(TypeError, match="tensor names must be str"):
        pack({1: torch.ones(1)})
    with pytest.raises(TypeError, match="must be a torch.Tensor, got ndarray"):
        pack({"x": np.ones(2)})
    with pytest.raises(TypeError, match="dtype torch.complex64 cannot be packed"):
        pack({"x": torch.ones(2, dtype=torch.complex64)})
    with pytest.raises(TypeError, match="has layout torch.sparse_coo; pack dense"):
        pack({"x": torch.eye(3).to_sparse()})
    with pytest.raises(TypeError, match="tensors must be a Mapping"):
        pack([("x", torch.ones(1))])
    with pytest.raises(CodecError, match="the limit is 1024"):
        pack({"n" * 1025: torch.ones(1)})
