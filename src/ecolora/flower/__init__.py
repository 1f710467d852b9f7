"""Flower adapters (``pip install ecolora[flower]``): the same strategies on many machines.

``flwr run .`` from the repository root loads :data:`ecolora.flower.server_app.app` and
:data:`ecolora.flower.client_app.app` (``[tool.flwr.app.components]`` in pyproject.toml). See
docs/flower.md (simulation, run-config keys, timings) and docs/deploy.md (TLS + authenticated
SuperNodes). Names are imported on first use, so ``python -m ecolora.flower.certs`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FlowerExecutor": "ecolora.flower.executor",
    "FlowerSettings": "ecolora.flower.settings",
    "PayloadError": "ecolora.flower.records",
    "WireMessage": "ecolora.flower.records",
    "decode_message": "ecolora.flower.records",
    "encode_message": "ecolora.flower.records",
    "generate_certificates": "ecolora.flower.certs",
    "load_state": "ecolora.flower.records",
    "resolve_settings": "ecolora.flower.settings",
    "save_state": "ecolora.flower.records",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ecolora.flower' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
