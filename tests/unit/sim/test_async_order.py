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
from ecolora.strategies import build_strategy


class _EagerLoop(_EventLoop):
    """The reference: wait for every started job before taking the next arrival."""

    def next_arrival(self):  # noqa: ANN201
        self.in_flight  # noqa: B018  (settles every started job)
        return super().next_arrival()


def _play(loop_type: type, overrides: list[str], method: str) -> tuple[list, dict, int]:
    config = load_config(None, [f"method={method}", "fed.num_clients=6", "fed.clients_per_round=3",
                                "fedbuff.step_time_s=1.0", "network.scenarios=[1/5]", "fed.rounds=6", "ecolora.num_segments=2",
                                *overrides])  # fmt: skip
    strategy = build_strategy(config, lora_template())
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


class _SlowClientsExecutor(InProcessExecutor):
    """Replies of ``slow`` clients come in only when nothing else is in flight (wall-clock order)."""

    def __init__(self, setup, ledger, slow: set[int]) -> None:  # noqa: ANN001
        super().__init__(setup, ledger)
        self.slow, self.client_of = slow, {}

    def start(self, server_round, jobs):  # noqa: ANN001, ANN201
        tickets = super().start(server_round, jobs)
        self.client_of.update({t: j.client for t, j in zip(tickets, jobs, strict=True)})
        return tickets

    def wait_any(self, tickets):  # noqa: ANN001, ANN201
        fast = [t for t in tickets if self.client_of[t] not in self.slow]
        return self.wait((fast or list(tickets))[:1])


def _play_wall(slow: set[int], method: str = "fedbuff") -> tuple[list[list[tuple[int, int]]], list[float], _EventLoop]:
    config = load_config(None, [f"method={method}", "fed.num_clients=6", "fed.clients_per_round=3", "fed.rounds=4",
                                "fedbuff.clock=wall", "fedbuff.concurrency=4", "fedbuff.buffer_size=2",
                                "ecolora.num_segments=2"])  # fmt: skip
    strategy = build_strategy(config, lora_template())
    setup = SimpleNamespace(strategy=strategy, clients=[NoisyRuntime(c, num_examples=c + 1) for c in range(6)])
    ledger = ByteLedger()
    loop = _EventLoop(config, setup, _SlowClientsExecutor(setup, ledger, slow), ledger)  # type: ignore[arg-type]
    steps: list[list[tuple[int, int]]] = []  # per step: (job id, client)
    times: list[float] = []
    play_async(loop, 4, config.fedbuff.buffer_size,
               lambda jobs, buffer, now: (steps.append([(j.job_id, j.client) for j in jobs]), times.append(now)))
    return steps, times, loop


@pytest.mark.parametrize("method", ["fedbuff", "fedbuff+ecolora"])
def test_wall_clock_buffers_replies_as_they_come_in_not_in_dispatch_order(method):
    fifo, _, _ = _play_wall(set(), method)
    # in-process, nothing slow: replies come in dispatch order, two per server step
    assert [job for step in fifo for job, _ in step] == list(range(8))
    # the client of job 0 is slow: the loop takes its four steps on the later jobs, job 0 stays out
    slow_client = fifo[0][0][1]
    steps, times, loop = _play_wall({slow_client}, method)
    assert [len(step) for step in steps] == [2, 2, 2, 2]
    assert [job for step in steps for job, _ in step] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert slow_client not in {client for step in steps for _, client in step}
    assert loop.step == 4 and loop.link_key == "wall" and loop.num_in_flight == 3  # job 0 and two later ones (none after the last step)
    assert times == sorted(times) and times[0] >= 0
