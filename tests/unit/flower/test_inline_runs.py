"""The ServerApp and ClientApp end to end over an in-process Grid (no Ray, no sockets).

Every message and node context goes through Flower's protobuf serde (see inline_grid.py), so these
runs exercise the same app code as ``flwr run``; the real engines are in tests/integration.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ecolora.flower import client_app, server_app
from ecolora.flower.settings import resolve_settings
from ecolora.sim import run_experiment
from ecolora.sim.runner import sample_clients
from ecolora.strategies.base import Strategy

from .inline_grid import InlineGrid

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
# Small and deterministic: no LoRA dropout (its masks come from the process-global torch RNG, whose
# history differs between one process and many), one thread (CPU kernels' reduction order).
BASE = [
    "fed.rounds=2",
    "lora.dropout=0",
    "train.num_threads=1",
    "data.limit=120",
    "data.eval_size=16",
    "data.max_seq_len=64",
]


def _run_flower(out: Path, method: str, *overrides: str, **extra: object) -> dict:
    run_config = {
        "config": str(ROOT / "configs" / "smoke.yaml"),
        "out-dir": str(out),
        "overrides": ";".join([f"method={method}", *BASE, *overrides]),
        **extra,
    }
    settings = resolve_settings(run_config)
    n = settings.config.fed.num_clients
    grid = InlineGrid(
        client_app.app,
        {100 + i: {"partition-id": i, "num-partitions": n} for i in range(n)},
        run_config,
    )
    return server_app.run_server(grid, settings)


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _upload_without_timing(record: dict) -> list[int]:
    """Upload bytes per client minus what the measured ``compute_s`` adds to the reply header
    (wall time differs between runs; with fixed-width metrics that part is a constant)."""
    return [c["upload_bytes"] - len(Strategy.pack_config({}, 0, {"compute_s": c["compute_s"]}))
            for c in record["per_client"]]  # fmt: skip


def assert_same_run(flower_dir: Path, inproc_dir: Path, atol: float = 0.0) -> None:
    """Same adapter (exactly, or within ``atol``), same clients, same bytes and value counts."""
    a = load_file(flower_dir / "adapter" / "adapter_model.safetensors")
    b = load_file(inproc_dir / "adapter" / "adapter_model.safetensors")
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=atol), (k, (a[k] - b[k]).abs().max().item())
    for fr, ir in zip(_records(flower_dir), _records(inproc_dir), strict=True):
        assert fr["clients"] == ir["clients"]
        for key in ("download_bytes", "download_params", "upload_params"):
            assert fr[key] == ir[key], key
        if atol == 0.0:
            assert _upload_without_timing(fr) == _upload_without_timing(ir)
            assert fr["eval_loss"] == ir["eval_loss"] and fr["train_loss"] == ir["train_loss"]
        else:  # the reply headers' losses differ in their last digits, so their JSON may too
            diffs = np.subtract(_upload_without_timing(fr), _upload_without_timing(ir))
            assert np.abs(diffs).max() <= 8, diffs


@pytest.mark.parametrize(
    ("method", "overrides", "atol"),
    [
        ("fedit", (), 0.0),
        ("fedit+ecolora", (), 0.0),
        ("fedit+ecolora", ("ecolora.aggregate=paper",), 0.0),  # per-client records, masked values
        ("ffa+ecolora", (), 0.0),
        ("flasc", (), 0.0),
        # FLoRA: in one process the server's eval merges its fp32 stacks into the base all clients share,
        # so later clients skip merging the fp16 stacks they received; on Flower each client merges the
        # fp16 wire values. Same algorithm, base weights differ by fp16 rounding of B_stack A_stack.
        ("flora+ecolora", ("flora.ranks=[8, 4]",), 1e-4),
    ],
)
def test_flower_apps_reproduce_the_in_process_run(tmp_path, method, overrides, atol):
    summary = _run_flower(tmp_path / "flower", method, *overrides)
    config = resolve_settings(
        {
            "config": str(ROOT / "configs" / "smoke.yaml"),
            "overrides": ";".join([f"method={method}", *BASE, *overrides]),
        }
    ).config
    reference = run_experiment(config, tmp_path / "inproc")
    assert summary["rounds_completed"] == 2 and summary["method"] == method
    assert summary["download_bytes"] == reference["download_bytes"]
    assert (tmp_path / "flower" / "plots" / "bytes.png").is_file()
    assert_same_run(tmp_path / "flower", tmp_path / "inproc", atol)


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("bytes", "payload: Payload of"),  # undecodable: CodecError
        ("shape", "missing_tensor: "),  # decodes, but a tensor the server asked for is absent
    ],
)
def test_a_damaged_reply_is_rejected_with_a_logged_reason_and_the_run_goes_on(
    tmp_path, caplog, mode, reason
):
    config = resolve_settings(
        {
            "config": str(ROOT / "configs" / "smoke.yaml"),
            "overrides": ";".join(["method=fedit+ecolora", *BASE]),
        }
    ).config
    bad = sample_clients(
        np.random.default_rng(config.seed), config.fed.num_clients, config.fed.clients_per_round
    )[0]
    with caplog.at_level(logging.WARNING, logger="ecolora"):
        summary = _run_flower(
            tmp_path, "fedit+ecolora", **{"test-corrupt-partition": bad, "test-corrupt-mode": mode}
        )
    assert summary["rounds_completed"] == 2 and summary["final_eval_loss"] is not None
    first = _records(tmp_path)[0]
    assert [r["client"] for r in first["rejected"]] == [bad] and first["dropped"] == []
    assert first["rejected"][0]["reason"].startswith(reason)
    row = next(c for c in first["per_client"] if c["client"] == bad)
    assert row["status"].startswith(f"rejected: {reason}")
    assert first["train_loss"] is not None and not first["no_update"]  # the others were aggregated
    assert row["upload_bytes"] > 0  # what crossed the wire is still counted
    assert first["upload_bytes"] == sum(c["upload_bytes"] for c in first["per_client"])
    others = [c for c in first["clients"] if c != bad]
    assert all("status" not in c for c in first["per_client"] if c["client"] in others)
    assert any(
        f"rejected the update of client {bad}: {reason}" in r.getMessage() for r in caplog.records
    )
