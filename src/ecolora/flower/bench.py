"""Wall time per round of one run: in-process vs Flower simulation vs loopback deployment.

``python -m ecolora.flower.bench --out runs/flower-bench`` runs the same config three times
(smoke preset, fedit+ecolora, 2 clients, both sampled every round) and writes ``bench.json`` plus
a Markdown table (docs/flower.md). Per round it separates the server's wait for replies, the
ClientApps' own time (process setup + local round) and the training compute, so the rest of the
wait is Flower's part: process start and imports, FAB install, message transport.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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

__all__ = ["BENCH_OVERRIDES", "bench_deployment", "bench_in_process", "bench_simulation", "main"]

ROOT = Path(__file__).resolve().parents[3]
BENCH_OVERRIDES = [
    "method=fedit+ecolora", "fed.num_clients=2", "fed.clients_per_round=2", "ecolora.num_segments=2",
    "lora.dropout=0", "train.num_threads=1",
]  # fmt: skip


def _run_config(out: Path, rounds: int) -> dict[str, Any]:
    return {"config": str(ROOT / "configs" / "smoke.yaml"), "out-dir": str(out), "round-timeout": 600.0,
            "overrides": ";".join([*BENCH_OVERRIDES, f"fed.rounds={rounds}"])}  # fmt: skip


class _Stamps(logging.Handler):
    """Timestamps of the runner's log lines (initial eval, one line per finished round)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.stamps: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.stamps.append((record.created, record.getMessage()))


def bench_in_process(out: Path, rounds: int) -> dict[str, Any]:
    stamps, logger = _Stamps(), logging.getLogger("ecolora")
    logger.addHandler(stamps)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    start = time.time()
    try:
        run_experiment(resolve_settings(_run_config(out, rounds)).config, out)
    finally:
        logger.removeHandler(stamps)
        logger.setLevel(old_level)
    marks = [t for t, msg in stamps.stamps if msg.startswith("Initial eval loss")]
    marks += [t for t, msg in stamps.stamps if msg.startswith("round ") and f"/{rounds} |" in msg]
    return {"engine": "in-process", "wall_s": time.time() - start, "setup_s": marks[0] - start,
            "round_s": [b - a for a, b in zip(marks[:-1], marks[1:], strict=True)], "records": _records(out)}  # fmt: skip


def bench_simulation(out: Path, work: Path, rounds: int) -> dict[str, Any]:
    home = work / "flwr-home"
    with Processes(work / "procs", home) as procs:
        port = free_port()
        procs.superlink(port, simulation=True)
        write_connection(home, "sim", f"127.0.0.1:{port}")
        start = time.time()
        proc = flwr_run(
            ROOT, "sim", home, _run_config(out, rounds), {"num-supernodes": 2}, timeout_s=1800
        )
        wall = time.time() - start
    return _flower_result("simulation (Ray)", out, wall, proc)


def bench_deployment(out: Path, work: Path, rounds: int) -> dict[str, Any]:
    certs = generate_certificates(work / "certs", num_supernodes=2)
    home = work / "flwr-home"
    with Processes(work / "procs", home) as procs:
        port = free_port()
        procs.superlink(port, certs=certs, node_auth=True)
        write_connection(home, "loopback", f"127.0.0.1:{port}", root_certificates=certs.ca_cert)
        for _private, public in certs.supernode_keys:
            register_supernode(home, "loopback", public)
        nodes = [procs.supernode(f"supernode-{i}", f"127.0.0.1:{port}", free_port(), i, 2, certs.ca_cert,
                                 certs.supernode_keys[i][0]) for i in range(2)]  # fmt: skip
        for node in nodes:
            node.wait_for_log(r"SuperNode ID: \d+", 120)
        start = time.time()
        proc = flwr_run(ROOT, "loopback", home, _run_config(out, rounds), timeout_s=1800)
        wall = time.time() - start
    return _flower_result("deployment (TLS, 2 SuperNodes)", out, wall, proc)


def _records(out: Path) -> list[dict[str, Any]]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _flower_result(
    engine: str, out: Path, wall: float, proc: subprocess.CompletedProcess[str]
) -> dict[str, Any]:
    records = _records(out)
    if not (out / "summary.json").is_file():
        raise RuntimeError(
            f"{engine}: the run did not finish; flwr run said:\n{proc.stdout[-3000:]}"
        )
    summary = json.loads((out / "summary.json").read_text())
    ends = summary["flower_timing"]["round_end_s"]  # the first round's start, then each round's end
    rounds = [b - a for a, b in zip(ends[:-1], ends[1:], strict=True)]
    wait = summary["flower_timing"]["wait_s"] / max(len(rounds), 1)
    return {"engine": engine, "wall_s": wall, "setup_s": summary["wall_s"] - sum(rounds), "round_s": rounds,
            "wait_s": wait, "records": records}  # fmt: skip


def fresh_import_s() -> float:
    """Seconds a new Python process needs to import the ClientApp (what each flwr-clientapp pays)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import ecolora.flower.client_app"], check=True)
    return time.perf_counter() - start


def table(results: list[dict[str, Any]]) -> str:
    """Markdown: per engine, wall time and where each round's time goes (seconds)."""
    lines = [
        "| engine | wall (s) | before round 1 (s) | round 1 (s) | later rounds, mean (s) | training compute / round (s) "
        "| ClientApp time / round (s) | server waits / round (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for res in results:
        rounds, records = res["round_s"], res["records"]
        later = sum(rounds[1:]) / max(len(rounds) - 1, 1)
        compute = sum(sum(c["compute_s"] for c in r["per_client"]) for r in records) / max(
            len(records), 1
        )
        client = [sum(c.get("client_total_s", 0.0) for c in r["per_client"]) for r in records]
        client_s = f"{sum(client) / len(client):.1f}" if any(client) else "-"
        wait_s = f"{res['wait_s']:.1f}" if "wait_s" in res else "-"
        lines.append(f"| {res['engine']} | {res['wall_s']:.1f} | {res['setup_s']:.1f} | {rounds[0]:.1f} | {later:.1f} "
                     f"| {compute:.1f} | {client_s} | {wait_s} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/flower-bench"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engines", default="in-process,simulation,deployment")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    engines = [e.strip() for e in args.engines.split(",")]
    results = []
    if "in-process" in engines:
        results.append(bench_in_process(out / "in-process", args.rounds))
    if "simulation" in engines:
        results.append(bench_simulation(out / "simulation", out / "work-simulation", args.rounds))
    if "deployment" in engines:
        results.append(bench_deployment(out / "deployment", out / "work-deployment", args.rounds))
    meta = {"fresh_import_s": fresh_import_s(), "load_average": os.getloadavg(), "cpus": os.cpu_count(),
            "rounds": args.rounds, "overrides": BENCH_OVERRIDES}  # fmt: skip
    (out / "bench.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=2), encoding="utf-8"
    )
    sys.stdout.write(table(results) + "\n\n" + json.dumps(meta) + "\n")


if __name__ == "__main__":
    main()
