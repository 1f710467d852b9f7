"""Coverage-guided fuzzing of ``codec.unpack`` / ``codec.describe`` with atheris (libFuzzer).

Not collected by pytest. Run for a bounded time (atheris is an optional tool, not a dependency)::

    pip install -c constraints.txt atheris
    python tests/fuzz/atheris_unpack.py -max_total_time=60 -rss_limit_mb=4096

Any exception other than :class:`ecolora.codec.CodecError` is a crash: libFuzzer stops and writes
the input to ``crash-<sha1>``. Each input is decoded twice: as given and re-sealed with a valid
CRC-32, so the fuzzer explores the parser rather than the checksum. The corpus starts from valid
payloads of every encoding. libFuzzer's last line ("Done N runs in T second(s)") counts the
inputs (each decoded twice); the numbers of the last run are in docs/reliability.md.
"""

from __future__ import annotations

import sys
import zlib

import atheris
import numpy  # noqa: F401  (imported before instrumentation: only the codec is instrumented)
import torch

with atheris.instrument_imports(include=["ecolora.codec"]):
    from ecolora.codec import CodecError, describe, pack, unpack

MAX_NUMEL = 2**16


def _seeds() -> list[bytes]:
    g = torch.Generator().manual_seed(0)
    sparse = torch.randn(24, 16, generator=g) * (torch.rand(24, 16, generator=g) < 0.1)
    lora = {"m.lora_A.weight": sparse, "m.lora_B.weight": torch.randn(6, 5, generator=g)}
    return [pack(lora, encoding=e) for e in ("auto", "golomb", "bitmap", "coo", "dense")] + [
        pack(lora, encoding="golomb", value_coding="exponent"),
        pack({"i": torch.arange(9), "b": torch.tensor([True, False])}),
    ]


def _reseal(data: bytes) -> bytes:
    return data[:-4] + zlib.crc32(data[:-4]).to_bytes(4, "little") if len(data) >= 4 else data


def test_one_input(data: bytes) -> None:
    for payload in (data, _reseal(data)):
        try:
            out = unpack(payload, max_numel=MAX_NUMEL)
        except CodecError:
            continue
        rows = describe(payload, max_numel=MAX_NUMEL)
        if [r["name"] for r in rows] != list(out):
            raise AssertionError("describe and unpack disagree on the tensor names")


def main() -> None:
    import os
    import tempfile

    corpus = tempfile.mkdtemp(prefix="ecolora-fuzz-corpus-")
    for i, seed in enumerate(_seeds()):
        with open(os.path.join(corpus, f"seed-{i}"), "wb") as fh:
            fh.write(seed)
    atheris.Setup([sys.argv[0], *sys.argv[1:], corpus], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
