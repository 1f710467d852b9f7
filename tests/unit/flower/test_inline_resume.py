"""A Flower run of the synchronous loop stopped after a round and resumed (run config ``resume``).

The ServerApp dies when it pushes round 2's first message; a new ServerApp with ``resume = true``
and fresh SuperNodes (new Contexts: the old client states are gone, as in a new ``flwr run``)
continues from the round-1 checkpoint and must end with the adapter of an uninterrupted run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import torch
from flwr.app import Message
from safetensors.torch import load_file

from ecolora.flower import client_app, server_app
from ecolora.flower.settings import resolve_settings
from ecolora.rundir import RunDirError

from .inline_grid import InlineGrid

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
BASE = ["fed.rounds=2", "lora.dropout=0", "train.num_threads=1", "data.limit=120", "data.eval_size=16",
        "data.max_seq_len=64", "network.scenarios=[]"]  # fmt: skip


class _Stopped(RuntimeError):
    """The ServerApp's process died."""


class _CrashingGrid(InlineGrid):
    """The ServerApp's process dies when it pushes the first TRAIN message of round ``crash_round``."""

    crash_round = 2

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        if any(m.metadata.message_type == "train" and m.metadata.group_id == str(self.crash_round) for m in messages):
            raise _Stopped("the ServerApp was stopped")
        return super().push_messages(messages)


def _run(out: Path, method: str, grid_type: type[InlineGrid] = InlineGrid, **extra: Any) -> dict[str, Any]:
    run_config = {"config": str(ROOT / "configs" / "smoke.yaml"), "out-dir": str(out),
                  "overrides": ";".join([f"method={method}", *BASE]), **extra}  # fmt: skip
    settings = resolve_settings(run_config)
    n = settings.config.fed.num_clients
    grid = grid_type(client_app.app, {100 + i: {"partition-id": i, "num-partitions": n} for i in range(n)}, run_config)
    return server_app.run_server(grid, settings)


def test_a_stopped_flower_run_resumes_to_the_adapter_of_an_uninterrupted_one(tmp_path):
    method = "fedit+ecolora"
    reference = _run(tmp_path / "straight", method)
    with pytest.raises(_Stopped):
        _run(tmp_path / "stopped", method, _CrashingGrid)
    assert [p.name for p in sorted((tmp_path / "stopped" / "checkpoints").iterdir())] == ["round-000001.safetensors"]
    summary = _run(tmp_path / "stopped", method, resume=True)

    a = load_file(tmp_path / "stopped" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    for key in ("rounds_completed", "upload_params", "download_params", "download_bytes", "final_eval_loss"):
        assert summary[key] == reference[key], key
    records = [json.loads(line) for line in (tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2]


def test_resume_is_refused_for_a_method_whose_flower_clients_keep_more_than_their_state(tmp_path):
    with pytest.raises(ValueError, match=r"flora cannot resume a Flower run .* drop `resume` and start over"):
        _run(tmp_path, "flora", resume=True)


def test_a_flower_run_never_writes_into_a_non_empty_out_dir(tmp_path):
    out = tmp_path / "old-run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"round": 1}\n', encoding="utf-8")
    with pytest.raises(RunDirError, match=r"is not empty \(holds metrics.jsonl\).* On Flower: run config `resume=true`"):
        _run(out, "fedit+ecolora")
    assert (out / "metrics.jsonl").read_text(encoding="utf-8") == '{"round": 1}\n'
    with pytest.raises(RunDirError, match="has no config.yaml"):
        _run(tmp_path / "missing", "fedit+ecolora", resume=True)
