"""fedbuff and hierfedlora through the ServerApp and ClientApp over an in-process Grid.

Their loops (ecolora.sim.async_runner, ecolora.sim.hier_runner) run in the ServerApp with every
client job on a "SuperNode" (the ClientApp behind InlineGrid's push/pull, with Flower's protobuf
serde); the run must equal ``run_experiment`` of the same config bit for bit.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from safetensors.torch import load_file

from ecolora.flower import client_app, server_app
from ecolora.flower.settings import resolve_settings
from ecolora.sim import run_experiment

from .inline_grid import InlineGrid

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
BASE = ["fed.rounds=2", "lora.dropout=0", "train.num_threads=1", "data.limit=120", "data.eval_size=16",
        "data.max_seq_len=64"]  # fmt: skip
HIER = ["fed.num_clients=4", "fed.clients_per_round=4"]  # 2 groups of 2: a leader and a member each


def _run_config(out: Path, preset: str, method: str, extra: list[str]) -> dict:
    return {"config": str(ROOT / "configs" / "methods" / f"{preset}.yaml"), "out-dir": str(out),
            "overrides": ";".join([f"method={method}", *BASE, *extra])}  # fmt: skip


def _run_flower(run_config: dict, **extra: object) -> tuple[dict, InlineGrid]:
    run_config = {**run_config, **extra}
    settings = resolve_settings(run_config)
    n = settings.config.fed.num_clients
    nodes = {100 + i: {"partition-id": i, "num-partitions": n} for i in range(n)}
    grid = InlineGrid(client_app.app, nodes, run_config)
    return server_app.run_server(grid, settings), grid


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    ("method", "preset", "extra"),
    [
        ("fedbuff", "fedbuff", []),
        ("fedbuff+ecolora", "fedbuff", []),
        ("hierfedlora", "hierfedlora", HIER),
        ("hierfedlora+ecolora", "hierfedlora", HIER),
    ],
)
def test_flower_runs_the_loop_of_fedbuff_and_hierfedlora_like_in_process(tmp_path, method, preset, extra):
    run_config = _run_config(tmp_path / "flower", preset, method, extra)
    summary, grid = _run_flower(run_config)
    reference = run_experiment(resolve_settings(run_config).config, tmp_path / "inproc")

    a = load_file(tmp_path / "flower" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "inproc" / "adapter" / "adapter_model.safetensors")
    assert sorted(a) == sorted(b) and all(torch_equal(a[k], b[k]) for k in a)
    for fr, ir in zip(_records(tmp_path / "flower"), _records(tmp_path / "inproc"), strict=True):
        assert fr["clients"] == ir["clients"]
        assert [c["client"] for c in fr["per_client"]] == [c["client"] for c in ir["per_client"]]
        for key in ("upload_bytes", "download_bytes", "upload_params", "download_params", "train_loss", "eval_loss"):
            assert fr[key] == ir[key], key
        assert [(c["upload_bytes"], c["download_bytes"]) for c in fr["per_client"]] == [
            (c["upload_bytes"], c["download_bytes"]) for c in ir["per_client"]]
        assert fr["dropped"] == [] and fr.get("rejected", []) == []
    extras = ("sim_time_s", "jobs_dispatched", "mean_staleness") if preset == "fedbuff" else ("groups", "intra_group_bytes")
    for key in ("rounds_completed", "upload_bytes", "download_bytes", *extras):
        assert summary[key] == reference[key], key
    if preset == "hierfedlora":
        assert (tmp_path / "flower" / "groups.json").read_text() == (tmp_path / "inproc" / "groups.json").read_text()
        # every member trained on its node (leaders too); leaders' states were fetched by QUERY
        trains = [m for m in grid.sent if m.metadata.message_type == "train"]
        assert {m.metadata.dst_node_id for m in trains} == {100, 101, 102, 103}
    else:
        assert summary["sim_time_s"] > 0 and summary["jobs_dispatched"] >= 4
        # jobs stay in flight across arrivals: the loop waits only for those that might arrive first
        later = grid.in_flight_at_push[3:]  # after the first `fedbuff.concurrency` = 3 dispatches
        assert later and max(later) >= 2, grid.in_flight_at_push


def torch_equal(x, y) -> bool:  # noqa: ANN001
    return bool((x == y).all())


class _FirstJobHeldGrid(InlineGrid):
    """The reply to the first TRAIN message never comes in: a client far slower than the rest."""

    held: str | None = None

    def push_messages(self, messages):  # noqa: ANN001, ANN201
        ids = list(super().push_messages(messages))
        trains = [i for m, i in zip(self.sent[-len(ids):], ids, strict=True) if m.metadata.message_type == "train"]
        if self.held is None and trains:
            self.held = trains[0]
        return ids

    def pull_messages(self, message_ids):  # noqa: ANN001, ANN201
        return super().pull_messages([i for i in message_ids if i != self.held])


@pytest.mark.parametrize("method", ["fedbuff", "fedbuff+ecolora"])
def test_fedbuff_on_the_wall_clock_steps_on_the_replies_that_came_in(tmp_path, method):
    run_config = {**_run_config(tmp_path, "fedbuff", method, ["fedbuff.clock=wall", "fedbuff.step_time_s=null"]),
                  "round-timeout": 20}  # a loop that waited for the held reply would time out on it
    settings = resolve_settings(run_config)
    n = settings.config.fed.num_clients
    grid = _FirstJobHeldGrid(client_app.app, {100 + i: {"partition-id": i, "num-partitions": n} for i in range(n)},
                             run_config)  # fmt: skip
    summary = server_app.run_server(grid, settings)
    slow = next(m.metadata.dst_node_id for m in grid.sent if m.metadata.message_id == grid.held) - 100
    records = _records(tmp_path)
    assert summary["rounds_completed"] == 2 and summary["clock"] == "wall" and summary["link"] == "wall"
    assert all(len(r["clients"]) == 2 and slow not in r["clients"] for r in records)
    assert all(r["dropped"] == [] for r in records)  # never waited for: no timeout on the held reply
    assert summary["jobs_discarded"] >= 1 and summary["sim_time_s"] == records[-1]["sim_time_s"] > 0
    for r in records:
        assert set(r["net"]) == {"wall"} and r["net"]["wall"]["download_s"] == 0.0
        assert r["net"]["wall"]["round_s"] >= r["net"]["wall"]["compute_s"] >= 0
    assert summary["upload_bytes"] == sum(r["upload_bytes"] for r in records) > 0


def test_a_damaged_fedbuff_reply_is_left_out_with_its_reason_and_the_run_goes_on(tmp_path, caplog):
    run_config = _run_config(tmp_path, "fedbuff", "fedbuff+ecolora", [])
    with caplog.at_level(logging.WARNING, logger="ecolora"):
        summary, _ = _run_flower(run_config, **{"test-corrupt-partition": 5, "test-corrupt-mode": "bytes"})
    assert summary["rounds_completed"] == 2
    dropped = [d for r in _records(tmp_path) for d in r["dropped"]]
    assert dropped and all(d["client"] == 5 and d["reason"].startswith("payload: Payload of") for d in dropped)
    assert all(5 not in r["clients"] for r in _records(tmp_path))
    assert any("the update of client 5 (node 105) is left out: payload:" in r.getMessage() for r in caplog.records)


def test_a_damaged_hierfedlora_reply_stops_the_run_naming_the_node(tmp_path):
    run_config = _run_config(tmp_path, "hierfedlora", "hierfedlora", HIER)
    with pytest.raises(RuntimeError, match=r"client 2 \(node 102\) sent no usable update: payload: "):
        _run_flower(run_config, **{"test-corrupt-partition": 2, "test-corrupt-mode": "bytes"})


def test_client_faults_are_refused_on_flower(tmp_path):
    settings = resolve_settings({**_run_config(tmp_path, "fedbuff", "fedbuff", ["faults.dropout=0.2"])})
    with pytest.raises(ValueError, match="fedbuff on Flower does not simulate client faults; unset faults.dropout"):
        server_app.run_server(grid=None, settings=settings)  # refused before the grid is used
    assert not (tmp_path / "config.yaml").exists()
