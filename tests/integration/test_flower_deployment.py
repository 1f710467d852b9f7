"""A real deployment on loopback: TLS, SuperNode authentication, two SuperNodes, ``flwr run``.

Mirrors docs/deploy.md step by step on 127.0.0.1 with a throw-away CA: the SuperLink serves TLS and
admits only registered SuperNode keys; two registered SuperNodes hold partitions 0 and 1; a third
SuperNode with a key nobody registered is refused. Then

1. 2 rounds of fedit+ecolora must finish and equal the in-process run of the same config (adapter
   bit for bit, same clients, same bytes), and
2. a second run on the same federation, where partition 1 sends a garbled payload, must reject that
   reply (``rejected`` in the record, with its reason) and still finish.

Every process is stopped by PID (its session) in ``Processes.__exit__``, also on failure.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from ecolora.flower.certs import generate_certificates
from ecolora.flower.launch import (
    Processes,
    flwr_run,
    free_port,
    register_supernode,
    write_connection,
)
from ecolora.flower.settings import resolve_settings
from ecolora.sim import run_experiment
from ecolora.strategies.base import Strategy

from .test_cli_smoke import _check_run_dir

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = [
    "method=fedit+ecolora",
    "fed.rounds=2",
    "fed.num_clients=2",
    "fed.clients_per_round=2",
    "ecolora.num_segments=2",
    "lora.dropout=0",
    "train.num_threads=1",
    "data.limit=120",
    "data.eval_size=16",
    "data.max_seq_len=64",
]


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _upload_without_timing(record: dict) -> list[int]:
    """Upload bytes per client minus what the measured ``compute_s`` adds to the reply header
    (wall time differs between runs; with fixed-width metrics that part is a constant)."""
    return [c["upload_bytes"] - len(Strategy.pack_config({}, 0, {"compute_s": c["compute_s"]}))
            for c in record["per_client"]]  # fmt: skip


@pytest.mark.flower
@pytest.mark.integration
def test_tls_and_node_auth_deployment_matches_in_process_and_rejects_a_bad_reply(tmp_path):
    certs = generate_certificates(
        tmp_path / "certs", hosts=("127.0.0.1", "localhost"), num_supernodes=3
    )
    home = tmp_path / "flwr-home"
    run_config = {
        "config": str(ROOT / "configs" / "smoke.yaml"),
        "overrides": ";".join(OVERRIDES),
        "out-dir": str(tmp_path / "flower"),
        "round-timeout": 300.0,
        "node-wait": 60.0,
    }
    with Processes(tmp_path / "procs", home) as procs:
        port = free_port()
        address = f"127.0.0.1:{port}"
        superlink = procs.superlink(port, certs=certs, node_auth=True)
        write_connection(home, "loopback", address, root_certificates=certs.ca_cert)
        for _private, public in certs.supernode_keys[:2]:
            register_supernode(home, "loopback", public)
        nodes = [
            procs.supernode(
                f"supernode-{i}",
                address,
                free_port(),
                i,
                2,
                certs.ca_cert,
                certs.supernode_keys[i][0],
            )
            for i in range(2)
        ]

        # ---- a SuperNode without valid credentials is refused ----------------------------------
        intruder = procs.supernode(
            "intruder",
            address,
            free_port(),
            1,
            2,
            certs.ca_cert,
            certs.supernode_keys[2][0],
            max_retries=1,
        )
        assert intruder.popen.wait(timeout=120) != 0
        assert "Failed to activate SuperNode" in intruder.log(), intruder.log()[-2000:]
        assert "No SuperNode found with the given public key" in superlink.log()
        for node in nodes:
            assert node.wait_for_log(r"SuperNode ID: \d+", 60), node.log()[-2000:]

        # ---- run 1: 2 rounds of fedit+ecolora ----------------------------------------------------
        start = time.perf_counter()
        proc = flwr_run(ROOT, "loopback", home, run_config, timeout_s=900)
        deploy_s = time.perf_counter() - start
        out = tmp_path / "flower"
        assert (out / "summary.json").is_file(), (proc.stdout[-4000:], superlink.log()[-4000:])

        # ---- run 2: partition 1 garbles its payload; its reply is rejected, the run goes on ----------
        bad = dict(
            run_config, **{"out-dir": str(tmp_path / "corrupt"), "test-corrupt-partition": 1}
        )
        bad["overrides"] += ";fed.rounds=1"  # one round shows it; saves a minute
        proc2 = flwr_run(ROOT, "loopback", home, bad, timeout_s=900)
        assert (tmp_path / "corrupt" / "summary.json").is_file(), proc2.stdout[-4000:]

    metrics, summary = _check_run_dir(out, "fedit+ecolora", 2)
    assert all(
        m["dropped"] == m["rejected"] == [] and sorted(m["clients"]) == [0, 1] for m in metrics
    )
    reference = run_experiment(resolve_settings(run_config).config, tmp_path / "inproc")
    for key in ("final_eval_loss", "download_bytes", "upload_params", "download_params"):
        assert summary[key] == reference[key], key
    for fr, ir in zip(metrics, _records(tmp_path / "inproc"), strict=True):
        assert fr["clients"] == ir["clients"] and fr["eval_loss"] == ir["eval_loss"]
        assert _upload_without_timing(fr) == _upload_without_timing(ir)
    a = load_file(out / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "inproc" / "adapter" / "adapter_model.safetensors")
    assert sorted(a) == sorted(b) and all((a[k] == b[k]).all() for k in a)

    corrupt = _records(tmp_path / "corrupt")
    assert len(corrupt) == 1
    for record in corrupt:
        assert [r["client"] for r in record["rejected"]] == [1] and record["dropped"] == []
        assert record["rejected"][0]["reason"].startswith("payload: Payload of")
        assert record["train_loss"] is not None  # partition 0 was aggregated
    print(
        f"deployment: {deploy_s:.1f} s for run 1 (server {summary['wall_s']:.1f} s), "  # noqa: T201
        f"rounds end at {[round(e, 1) for e in summary['flower_timing']['round_end_s']]} s; in-process {reference['wall_s']:.1f} s"
    )
