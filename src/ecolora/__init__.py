"""ecolora: communication-efficient federated fine-tuning of LLMs with LoRA (EcoLoRA and baselines).

The public API, re-exported from the module that defines each name. Importing ``ecolora`` is
cheap: a name's module (and torch with it) is imported on first access, so ``import ecolora``
loads neither torch nor any optional package (flwr, gguf, datasets, zstandard).

>>> import ecolora
>>> config = ecolora.load_config("configs/smoke.yaml", ["fed.rounds=2"])  # doctest: +SKIP
>>> summary = ecolora.run_experiment(config, pathlib.Path("runs/smoke"))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    __version__: str

    from ecolora.codec.container import describe, pack, unpack
    from ecolora.codec.errors import CodecError
    from ecolora.config import ConfigError, RunConfig, apply_overrides, load_config
    from ecolora.methods import MethodSpec, get_method, method_names, register_method
    from ecolora.network.ledger import ByteLedger, LedgerEntry
    from ecolora.sim import run_experiment
    from ecolora.strategies import build_strategy
    from ecolora.strategies.base import (
        AggregationError,
        ClientRuntime,
        Message,
        Strategy,
        TrainResult,
    )

# name -> module that defines it (imported on first access, see __getattr__)
_EXPORTS: dict[str, str] = {
    "ConfigError": "ecolora.config",
    "RunConfig": "ecolora.config",
    "apply_overrides": "ecolora.config",
    "load_config": "ecolora.config",
    "run_experiment": "ecolora.sim",
    "MethodSpec": "ecolora.methods",
    "get_method": "ecolora.methods",
    "method_names": "ecolora.methods",
    "register_method": "ecolora.methods",
    "AggregationError": "ecolora.strategies.base",
    "ClientRuntime": "ecolora.strategies.base",
    "Message": "ecolora.strategies.base",
    "Strategy": "ecolora.strategies.base",
    "TrainResult": "ecolora.strategies.base",
    "build_strategy": "ecolora.strategies",
    "CodecError": "ecolora.codec.errors",
    "describe": "ecolora.codec.container",
    "pack": "ecolora.codec.container",
    "unpack": "ecolora.codec.container",
    "ByteLedger": "ecolora.network.ledger",
    "LedgerEntry": "ecolora.network.ledger",
}

__all__ = [
    "__version__",
    "AggregationError",
    "ByteLedger",
    "ClientRuntime",
    "CodecError",
    "ConfigError",
    "LedgerEntry",
    "Message",
    "MethodSpec",
    "RunConfig",
    "Strategy",
    "TrainResult",
    "apply_overrides",
    "build_strategy",
    "describe",
    "get_method",
    "load_config",
    "method_names",
    "pack",
    "register_method",
    "run_experiment",
    "unpack",
]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # ~50 ms: only when asked

    try:
        return version("ecolora")
    except PackageNotFoundError:  # a source tree on sys.path, not installed
        return "0.0.0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
        globals()[name] = value
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ecolora' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | {"__version__"})
