"""Federated algorithms, one per file, found by name (``method: fedit``, ``ffa+ecolora``, ...)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ecolora.config import RunConfig
from ecolora.strategies.base import (
    AggregationError,
    ClientRuntime,
    Message,
    Strategy,
    TrainResult,
    get_strategy_class,
    register_strategy,
    strategy_names,
    weighted_average,
)
from ecolora.strategies.fedit import FedIT, FFALoRA
from ecolora.strategies.flora import FLoRA

__all__ = [
    "AggregationError",
    "ClientRuntime",
    "FFALoRA",
    "FLoRA",
    "FedIT",
    "Message",
    "Strategy",
    "TrainResult",
    "build_strategy",
    "get_strategy_class",
    "register_strategy",
    "strategy_names",
    "weighted_average",
]


def build_strategy(config: RunConfig, initial_lora: Mapping[str, torch.Tensor]) -> Strategy:
    """Instantiate ``config.method``: a base algorithm, optionally wrapped by EcoLoRA."""
    base_name, _, wrapper = config.method.partition("+")
    if wrapper == "ecolora":
        from ecolora.strategies.ecolora import build_ecolora

        return build_ecolora(base_name, config, initial_lora)
    return get_strategy_class(base_name)(config, initial_lora)


# Register the remaining algorithms (after build_strategy: they import the EcoLoRA wrapper).
from ecolora.strategies import fedbuff, flasc, hierfedlora  # noqa: E402, F401
