"""Federated algorithms, one per file, found by name through the method registry (:mod:`ecolora.methods`)."""

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
    train_metrics,
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
    "train_metrics",
    "weighted_average",
]


def build_strategy(config: RunConfig, initial_lora: Mapping[str, torch.Tensor]) -> Strategy:
    """The strategy of ``config.method``, the one object every engine's server and clients use."""
    parsed = config.parsed_method
    strategy = parsed.spec.factory(parsed.compressed)(config, initial_lora)
    if not isinstance(strategy, Strategy):
        raise TypeError(f"The factory of method {parsed.name!r} built a {type(strategy).__name__}, not a Strategy.")
    return strategy
