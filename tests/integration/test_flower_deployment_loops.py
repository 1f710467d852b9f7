"""hierfedlora+ecolora and fedbuff+ecolora (wall clock) on a real deployment: TLS, node auth, 4 SuperNodes.

The synchronous methods have their deployment test (test_flower_deployment.py); this one runs the
two loops with their own rounds on the same kind of federation on loopback:

1. one global round of hierfedlora+ecolora (2 groups of 2, leaders' roles in the ServerApp) must
   equal the in-process run: adapter bit for bit, same upload, download and intra-group bytes;
2. three server steps of fedbuff+ecolora on the wall clock must finish with nothing dropped.

About 5-6 minutes on 2 cores (Flower 1.41 starts a process per message), so it is ``slow``:
``pytest -m slow tests/integration/test_flower_deployment_loops.py``.
"""

from __future__ import annotations

import json
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

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["fed.num_clients=4", "lora.dropout=0", "train.num_threads=1", "data.limit=120", "data.eval_size=16",
         "data.max_seq_len=64"]  # fmt: skip
RUNS = {
    "hier": ("hierfedlora", ["method=hierfedlora+ecolora", "fed.clients_per_round=4", "fed.rounds=1"]),
    "fedbuff": ("fedbuff", ["method=fedbuff+ecolora", "fed.rounds=3", "fedbuff.clock=wall",
                            "fedbuff.step_time_s=null"]),  # fmt: skip
}


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.flower
@pytest.mark.integration
def test_hierfedlora_and_wall_clock_fedbuff_on_a_tls_deployment(tmp_path):
    certs = generate_certificates(tmp_path / "certs", hosts=("127.0.0.1", "localhost"), num_supernodes=4)
    home = tmp_path / "flwr-home"
    configs = {
        name: {"config": str(ROOT / "configs" / "methods" / f"{preset}.yaml"),
               "overrides": ";".join([*overrides, *SMALL]), "out-dir": str(tmp_path / name),
               "round-timeout": 600.0, "node-wait": 90.0}
        for name, (preset, overrides) in RUNS.items()
    }  # fmt: skip
    with Processes(tmp_path / "procs", home) as procs:
        port = free_port()
        address = f"127.0.0.1:{port}"
        superlink = procs.superlink(port, certs=certs, node_auth=True)
        write_connection(home, "loopback", address, root_certificates=certs.ca_cert)
        for _private, public in certs.supernode_keys:
            register_supernode(home, "loopback", public)
        nodes = [procs.supernode(f"supernode-{i}", address, free_port(), i, 4, certs.ca_cert, certs.supernode_keys[i][0])
                 for i in range(4)]  # fmt: skip
        for node in nodes:
            assert node.wait_for_log(r"SuperNode ID: \d+", 90), node.log()[-2000:]
        for name, run_config in configs.items():
            proc = flwr_run(ROOT, "loopback", home, run_config, timeout_s=1200)
            # `flwr run` exits 0 even when the run failed: judge by the run directory.
            assert (tmp_path / name / "summary.json").is_file(), (proc.stdout[-4000:], superlink.log()[-4000:])

    # ---- hierfedlora+ecolora equals the in-process run ------------------------------------------
    summary = json.loads((tmp_path / "hier" / "summary.json").read_text())
    reference = run_experiment(resolve_settings(configs["hier"]).config, tmp_path / "hier-inproc")
    for key in ("upload_bytes", "download_bytes", "intra_group_bytes", "final_eval_loss"):
        assert summary[key] == reference[key], key
    a = load_file(tmp_path / "hier" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "hier-inproc" / "adapter" / "adapter_model.safetensors")
    assert sorted(a) == sorted(b) and all((a[k] == b[k]).all() for k in a)
    assert sorted(_records(tmp_path / "hier")[0]["clients"]) == [0, 1, 2, 3]

    # ---- fedbuff+ecolora on the wall clock ---------------------------------------------------------
    summary = json.loads((tmp_path / "fedbuff" / "summary.json").read_text())
    records = _records(tmp_path / "fedbuff")
    assert summary["rounds_completed"] == 3 and summary["clock"] == "wall" and summary["link"] == "wall"
    assert [len(r["clients"]) for r in records] == [2, 2, 2] and all(r["dropped"] == [] for r in records)
    times = [r["sim_time_s"] for r in records]
    assert times == sorted(times) and times[0] > 0
