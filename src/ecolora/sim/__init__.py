"""In-process simulation: the synchronous round loop (``runner``) and the loops of methods whose
rounds are not synchronous FedAvg rounds: FedBuff's event loop in simulated time (``async_runner``)
and HierFedLoRA's group rounds (``hier_runner``). :func:`get_runner` picks one by method. The two
loops hand client work to an executor (``executor``), so the Flower ServerApp runs them too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ecolora.config import RunConfig

# Register the strategies whose runs go through ``ecolora.sim`` (``build_setup`` finds them by name).
from ecolora.strategies import fedbuff, flasc, hierfedlora  # noqa: F401

__all__ = ["get_runner"]

Runner = Callable[..., dict[str, Any]]


def get_runner(config: RunConfig) -> Runner | None:
    """The loop of ``config.method`` when it is not the synchronous one (None: ``run_experiment``).

    A runner is called as ``runner(config, out_dir, progress=None, resume=False, executor=None)``
    and writes the same run directory as :func:`ecolora.sim.runner.run_experiment`; ``executor``
    (:mod:`ecolora.sim.executor`) says where the clients work: in this process (None) or on Flower
    SuperNodes (:class:`ecolora.flower.executor.FlowerExecutor`, used by the ServerApp).
    """
    base = config.method.partition("+")[0]
    if base == "fedbuff":
        from ecolora.sim.async_runner import run_async

        return run_async
    if base == "hierfedlora":
        from ecolora.sim.hier_runner import run_hierarchical

        return run_hierarchical
    return None
