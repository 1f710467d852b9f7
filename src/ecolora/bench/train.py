"""``ecolora bench train``: tokens/s, peak memory and one round split into phases.

A round is played with the runner's own pieces (``build_setup``, the strategy, the in-process
transport and the byte ledger), exactly as ``ecolora run`` plays it without faults, while a
:class:`PhaseTimer` attributes the wall time of each call to one phase, exclusively (a phase's
time excludes the phases nested inside it):

========================  =================================================================
phase                     what
========================  =================================================================
``train``                 forward + backward + optimizer of every local step (``LocalTrainer``)
``lora_swap``             LoRA tensors into/out of the shared model (``set_lora``/``get_lora``)
``client_other``          the client's strategy work: mixing, top-k, residuals (``client_round``)
``server_configure``      the server's messages: mixing, download top-k (``configure_round``)
``pack`` / ``unpack``     codec encode / decode of every message (``Strategy.pack``/``unpack``)
``transport_other``       ledger and header handling around pack/unpack
``aggregate``             ``aggregate_begin/add/end``
``eval``                  held-out loss of the new global model
``other``                 the rest of the round (the loop itself)
========================  =================================================================

``overhead_share`` is the share of the round outside ``train`` and ``eval``: what the federated
runner adds to local training. ``non_train_share`` also counts ``eval``. On CUDA every phase
boundary synchronizes the device so that asynchronous kernels are charged to their phase.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ecolora.client.device import peak_memory_bytes, reset_peak_memory
from ecolora.client.shapes import SHAPE_NOTE, is_shape_model
from ecolora.config import RunConfig
from ecolora.network.ledger import ByteLedger
from ecolora.sim.runner import evaluate_global, sample_clients
from ecolora.sim.setup import RunSetup, build_setup
from ecolora.sim.transport import InProcessTransport

__all__ = ["PHASES", "PhaseTimer", "format_report", "run_train_bench"]

PHASES = (
    "train", "lora_swap", "client_other", "server_configure", "pack", "unpack",
    "transport_other", "aggregate", "eval", "other",
)  # fmt: skip


@dataclass
class PhaseTimer:
    """Exclusive wall time per phase: nested phases are subtracted from their parent."""

    device: torch.device = torch.device("cpu")
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    _stack: list[list[float]] = field(default_factory=list)  # [start, time in children]

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._sync()
        self._stack.append([time.perf_counter(), 0.0])
        try:
            yield
        finally:
            self._sync()
            start, children = self._stack.pop()
            elapsed = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - children
            if self._stack:
                self._stack[-1][1] += elapsed

    def wrap(self, obj: Any, method: str, name: str) -> Callable[[], None]:
        """Time ``obj.method`` as phase ``name`` (an instance attribute); returns the undo."""
        original = getattr(obj, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name):
                return original(*args, **kwargs)

        setattr(obj, method, timed)
        return lambda: delattr(obj, method)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def run_train_bench(config: RunConfig, *, rounds: int = 1, warmup_rounds: int = 1) -> dict[str, Any]:
    """Build the run, play ``warmup_rounds`` untimed rounds, then time ``rounds`` rounds by phase."""
    if rounds < 1 or warmup_rounds < 0:
        raise ValueError(f"`rounds` must be >= 1 and `warmup_rounds` >= 0, got {rounds} and {warmup_rounds}.")
    start = time.perf_counter()
    setup = build_setup(config)
    setup_s = time.perf_counter() - start
    trainer = setup.shared.trainer
    device = trainer.placement.device
    ledger = ByteLedger()
    transport = InProcessTransport(setup.strategy, ledger)
    rng = np.random.default_rng(config.seed)
    for server_round in range(1, warmup_rounds + 1):
        _play_round(config, setup, transport, server_round, rng, PhaseTimer(device))
    reset_peak_memory(device)
    timer = PhaseTimer(device)
    tokens_before = trainer.tokens_seen
    undo = _instrument(setup, timer)
    try:
        wall = time.perf_counter()
        for server_round in range(warmup_rounds + 1, warmup_rounds + rounds + 1):
            with timer.phase("other"):
                _play_round(config, setup, transport, server_round, rng, timer)
        wall_s = time.perf_counter() - wall
    finally:
        for fn in undo:
            fn()
    tokens = trainer.tokens_seen - tokens_before
    return _report(config, setup, timer, ledger, wall_s, tokens, rounds, warmup_rounds, setup_s, device)


def _instrument(setup: RunSetup, timer: PhaseTimer) -> list[Callable[[], None]]:
    strategy = setup.strategy
    undo = [
        timer.wrap(setup.shared.trainer, "train", "train"),
        timer.wrap(strategy, "pack", "pack"),
        timer.wrap(strategy, "unpack", "unpack"),
        timer.wrap(strategy, "configure_round", "server_configure"),
        timer.wrap(strategy, "client_round", "client_other"),
        timer.wrap(strategy, "aggregate_begin", "aggregate"),
        timer.wrap(strategy, "aggregate_add", "aggregate"),
        timer.wrap(strategy, "aggregate_end", "aggregate"),
    ]
    for client in [*setup.clients, setup.eval_client]:
        undo += [timer.wrap(client, "set_lora", "lora_swap"), timer.wrap(client, "get_lora", "lora_swap")]
    return undo


def _play_round(
    config: RunConfig,
    setup: RunSetup,
    transport: InProcessTransport,
    server_round: int,
    rng: np.random.Generator,
    timer: PhaseTimer,
) -> None:
    """One synchronous round as ``ecolora.sim.runner`` plays it (no faults), then the eval."""
    strategy = setup.strategy
    sampled = sample_clients(rng, config.fed.num_clients, config.fed.clients_per_round)
    messages = strategy.configure_round(server_round, sampled)
    strategy.aggregate_begin(server_round)
    for cid in sampled:
        with timer.phase("transport_other"):
            received = transport.send(server_round, cid, "down", messages.pop(cid))
        reply = strategy.client_round(setup.clients[cid], received)
        with timer.phase("transport_other"):
            arrived = transport.send(server_round, cid, "up", reply)
        strategy.aggregate_add(cid, arrived)
    strategy.aggregate_end(server_round)
    with timer.phase("eval"):
        evaluate_global(setup)


def _report(
    config: RunConfig, setup: RunSetup, timer: PhaseTimer, ledger: ByteLedger, wall_s: float,
    tokens: int, rounds: int, warmup_rounds: int, setup_s: float, device: torch.device,
) -> dict[str, Any]:  # fmt: skip
    seconds = timer.seconds
    total = sum(seconds.values())
    train_s = seconds["train"]
    steps = config.fed.clients_per_round * config.train.local_steps * config.train.grad_accum * rounds
    measured = range(warmup_rounds + 1, warmup_rounds + rounds + 1)
    up = sum(ledger.round_totals(r)["upload_bytes"] for r in measured)
    down = sum(ledger.round_totals(r)["download_bytes"] for r in measured)
    placement = setup.shared.trainer.placement
    return {
        "model": config.model.name,
        "note": SHAPE_NOTE if is_shape_model(config.model.name) else "",
        "method": config.method,
        "placement": placement.describe(),
        "batch_size": config.train.batch_size,
        "max_seq_len": config.data.max_seq_len,
        "clients_per_round": config.fed.clients_per_round,
        "local_steps": config.train.local_steps,
        "rounds": rounds,
        "setup_s": setup_s,
        "round_s": wall_s / rounds,
        "tokens_per_s": tokens / train_s if train_s > 0 else 0.0,
        "step_s": train_s / steps,
        "tokens_per_step": tokens / steps,
        "peak_memory_bytes": peak_memory_bytes(device),
        "peak_memory_kind": "max_memory_allocated" if device.type == "cuda" else "peak RSS",
        "up_bytes_per_round": up / rounds,
        "down_bytes_per_round": down / rounds,
        "lora_values": setup.lora_numel,
        "phases_s": {k: v / rounds for k, v in seconds.items()},
        "overhead_share": (total - train_s - seconds["eval"]) / total if total else 0.0,
        "non_train_share": (total - train_s) / total if total else 0.0,
    }


def format_report(report: dict[str, Any]) -> str:
    """A short human-readable table of a :func:`run_train_bench` report."""
    mib = 1 << 20
    lines = [
        f"{report['model']} ({report['note'] or 'pretrained'}), {report['method']}, {report['placement']}",
        f"batch {report['batch_size']} x <= {report['max_seq_len']} tokens, "
        f"{report['clients_per_round']} clients x {report['local_steps']} steps per round",
        f"tokens/s {report['tokens_per_s']:.1f}   step {report['step_s']:.3f} s   round {report['round_s']:.2f} s",
        f"peak memory {report['peak_memory_bytes'] / mib:.0f} MiB ({report['peak_memory_kind']})",
        f"bytes per round: up {report['up_bytes_per_round']:.0f}, down {report['down_bytes_per_round']:.0f}",
        "phase               s/round   share",
    ]
    total = sum(report["phases_s"].values()) or 1.0
    for name, seconds in report["phases_s"].items():
        lines.append(f"  {name:<18}{seconds:>8.3f}  {100 * seconds / total:5.1f}%")
    lines.append(
        f"runner overhead (not train, not eval): {100 * report['overhead_share']:.1f}%   "
        f"not train: {100 * report['non_train_share']:.1f}%"
    )
    return "\n".join(lines)
