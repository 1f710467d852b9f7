"""FedBuff's loop waits only for jobs that might arrive first; the event order must not change."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from strategies.fakes import NoisyRuntime, lora_template

from ecolora.config import load_config
from ecolora.network.ledger import ByteLedger
from ecolora.sim.async_runner import _EventLoop, play_async
from ecolora.sim.executor import InProcessExecutor
from ecolora.strategies.fedbuff import build_fedbuff


class _EagerLoop(_EventLoop):
    """The reference: wait for every started job before taking the next arrival."""

    def next_arrival(self):  # noqa: ANN201
        self.in_flight  # noqa: B018  (settles every started job)
        return super().next_arrival()


def _play(loop_type: type, overrides: list[str], method: str) -> tuple[list, dict, int]:
    config = load_config(None, [f"method={method}", "fed.num_clients=6", "fed.clients_per_round=3",
                                "fedbuff.step_time_s=1.0", "network.scenarios=[1/5]", "fed.rounds=6", "ecolora.num_segments=2",
                                *overrides])  # fmt: skip
    strategy = build_fedbuff(config, lora_template())
    setup = SimpleNamespace(strategy=strategy, clients=[NoisyRuntime(c, num_examples=c + 1) for c in range(6)])
    ledger = ByteLedger()
    work = InProcessExecutor(setup, ledger)  # type: ignore[arg-type]
    waits: list[int] = []
    wait = work.wait
    work.wait = lambda tickets: (waits.append(len(tickets)), wait(tickets))[1]  # type: ignore[method-assign]
    loop = loop_type(config, setup, work, ledger)
    order: list[tuple[int, float]] = []
    play_async(loop, 6, config.fedbuff.buffer_size,
               lambda jobs, buffer, now: order.extend((j.job_id, j.arrival_s) for j in jobs))  # fmt: skip
    return order, strategy.global_lora(), len(waits)


@pytest.mark.parametrize("method", ["fedbuff", "fedbuff+ecolora"])
@pytest.mark.parametrize(
    "overrides",
    [
        ["fedbuff.concurrency=3", "fedbuff.buffer_size=2"],
        ["fedbuff.concurrency=5", "fedbuff.buffer_size=1", "fedbuff.speed_sigma=1.5", "fedbuff.link_sigma=1.0"],
        ["fedbuff.concurrency=4", "fedbuff.buffer_size=3", "fedbuff.speed_sigma=0", "fedbuff.link_sigma=0"],
        ["fedbuff.concurrency=2", "fedbuff.buffer_size=2", "fedbuff.link=0.1/0.2", "seed=3"],
    ],
)
def test_waiting_only_for_possible_first_arrivals_keeps_the_event_order(overrides, method):
    lazy, lazy_lora, lazy_waits = _play(_EventLoop, overrides, method)
    eager, eager_lora, eager_waits = _play(_EagerLoop, overrides, method)
    assert lazy == eager
    assert all(torch.equal(lazy_lora[k], eager_lora[k]) for k in eager_lora)
    assert lazy_waits <= eager_waits
