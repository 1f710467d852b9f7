"""In-process simulation: the three round loops and :func:`run_experiment`, which picks one by method.

The synchronous round loop (``sync_runner``), FedBuff's event loop in simulated time (``async_runner``)
and HierFedLoRA's group rounds (``hier_runner``). A method's loop is its
:attr:`~ecolora.methods.MethodSpec.loop`. Every loop hands client work to an executor
(``executor``), so the Flower ServerApp runs the same loops with the clients on SuperNodes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from ecolora.config import RunConfig
from ecolora.methods import Loop
from ecolora.sim.async_runner import run_async
from ecolora.sim.executor import ExecutorFactory
from ecolora.sim.hier_runner import run_hierarchical
from ecolora.sim.runner import ProgressHook
from ecolora.sim.sync_runner import run_sync

__all__ = ["LOOPS", "Runner", "get_runner", "run_experiment"]


class Runner(Protocol):
    """A round loop: runs ``config`` and writes the run directory ``out_dir``; returns the summary."""

    def __call__(self, config: RunConfig, out_dir: Path, progress: ProgressHook | None = None,
                 resume: bool = False, executor: ExecutorFactory | None = None) -> dict[str, Any]: ...


LOOPS: dict[Loop, Runner] = {"sync": run_sync, "hierarchical": run_hierarchical, "async": run_async}


def get_runner(config: RunConfig) -> Runner:
    """The loop of ``config.method`` (:attr:`ecolora.methods.MethodSpec.loop`).

    A runner is called as ``runner(config, out_dir, progress=None, resume=False, executor=None)``
    and writes the run directory (:mod:`ecolora.sim.runner`); ``executor``
    (:mod:`ecolora.sim.executor`) says where the clients work: in this process (None) or on Flower
    SuperNodes (:class:`ecolora.flower.executor.FlowerExecutor`, used by the ServerApp).
    """
    return LOOPS[config.parsed_method.spec.loop]


def run_experiment(config: RunConfig, out_dir: Path, progress: ProgressHook | None = None,
                   resume: bool = False, executor: ExecutorFactory | None = None) -> dict[str, Any]:
    """Run one federated fine-tuning experiment with its method's loop; return the summary.

    With ``resume=True`` the run in ``out_dir`` continues from its last complete checkpoint
    (written every ``fed.checkpoint_every`` rounds, see :mod:`ecolora.sim.checkpoint`) and ends
    exactly as the uninterrupted run would have; without a checkpoint it starts over in place.
    """
    return get_runner(config)(config, Path(out_dir), progress, resume, executor)
