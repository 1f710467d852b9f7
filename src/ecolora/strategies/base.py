"""Engine-independent federated strategies: the hooks every algorithm implements.

One round, whatever the engine (the in-process runner or Flower)::

    messages = strategy.configure_round(t, client_ids)          # server: one Message per client
    # ... each message is packed to bytes, crosses the transport, is unpacked ...
    reply = strategy.client_round(runtime, message)            # client: local work
    # ... the reply is packed, crosses back, is unpacked ...
    metrics = strategy.aggregate_round(t, replies)             # server: new global state

Algorithms subclass :class:`Strategy` and override these hooks; the loop itself lives in the
engines. Everything a message carries is in :class:`Message` (a JSON config plus named tensors),
so both engines serialize it the same way with :meth:`Strategy.pack` / :meth:`Strategy.unpack`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from ecolora import codec
from ecolora.config import RunConfig

__all__ = [
    "AggregationError",
    "ClientRuntime",
    "Message",
    "Strategy",
    "TrainResult",
    "get_strategy_class",
    "register_strategy",
    "strategy_names",
    "weighted_average",
]


class AggregationError(ValueError):
    """Client replies cannot be aggregated (wrong names, shapes, or nothing to aggregate)."""


@dataclass
class Message:
    """What crosses the wire in one direction for one client: a small JSON config and tensors."""

    config: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    num_examples: int = 0  # replies only: the client's training sample count
    metrics: dict[str, float] = field(default_factory=dict)  # replies only


@dataclass
class TrainResult:
    train_loss: float
    initial_loss: float  # loss of the first local batch (the server's L_0 for eq. 4)
    num_examples: int
    num_steps: int
    compute_s: float
    metrics: dict[str, float] = field(default_factory=dict)


class ClientRuntime(Protocol):
    """A client as a strategy sees it: its LoRA, its persistent state and its trainer.

    In one process many runtimes share one base model (LoRA weights are swapped in and out);
    on Flower each ClientApp process has one. ``state`` persists across rounds (``Context.state``
    on Flower) and holds only tensors and JSON-able values.
    """

    client_id: int
    num_examples: int
    state: dict[str, Any]

    def get_lora(self) -> dict[str, torch.Tensor]: ...

    def set_lora(self, tensors: Mapping[str, torch.Tensor]) -> None: ...

    def train(self, server_round: int, config: Mapping[str, Any]) -> TrainResult: ...

    def freeze(self, predicate: Callable[[str], bool]) -> None: ...

    def use_rank(self, rank: int) -> None: ...

    def merge_into_base(self, tag: str, deltas: Mapping[str, torch.Tensor]) -> None: ...


class Strategy(ABC):
    """Base class of all algorithms. Subclasses set ``name`` and override the round hooks."""

    name: str = ""

    def __init__(self, config: RunConfig, initial_lora: Mapping[str, torch.Tensor]) -> None:
        self.config = config
        self.initial_lora = {k: v.detach().clone().float() for k, v in initial_lora.items()}
        self.wire_dtype = torch.float16 if config.fed.wire_dtype == "float16" else torch.float32

    # ---- server side -------------------------------------------------------------------------
    @abstractmethod
    def configure_round(self, server_round: int, client_ids: list[int]) -> dict[int, Message]:
        """Build one fresh message per sampled client (position in ``client_ids`` matters)."""

    @abstractmethod
    def aggregate_round(self, server_round: int, replies: Mapping[int, Message]) -> dict[str, Any]:
        """Fold the replies that arrived into the global state; return round metrics."""

    @abstractmethod
    def global_lora(self) -> dict[str, torch.Tensor]:
        """The global LoRA tensors to evaluate and save (full names, fp32)."""

    def prepare_eval(self, runtime: ClientRuntime) -> None:
        """Put the global model into ``runtime``'s model for evaluation."""
        runtime.set_lora(self.global_lora())

    # ---- client side -------------------------------------------------------------------------
    @abstractmethod
    def client_round(self, runtime: ClientRuntime, message: Message) -> Message:
        """Local work of one client for one round; returns the reply to upload."""

    # ---- wire format -------------------------------------------------------------------------
    def pack(self, message: Message, direction: str) -> bytes:
        """Serialize a message's tensors with the project's codec (dense fp16 by default)."""
        return codec.pack(message.tensors, value_dtype=self.wire_dtype, encoding="dense")

    def unpack(self, payload: bytes) -> dict[str, torch.Tensor]:
        return codec.unpack(payload)

    @staticmethod
    def pack_config(config: Mapping[str, Any], num_examples: int = 0, metrics: Mapping[str, float] | None = None) -> bytes:
        body = {"config": dict(config), "num_examples": num_examples, "metrics": dict(metrics or {})}
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    # ---- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        del state


def weighted_average(
    tensors: list[Mapping[str, torch.Tensor]], weights: list[float], keys: list[str] | None = None
) -> dict[str, torch.Tensor]:
    """Sum_i w_i * T_i / sum_i w_i for each key; names and shapes must agree across replies."""
    if not tensors:
        raise AggregationError("Nothing to aggregate: no client reply arrived.")
    total = float(sum(weights))
    if total <= 0:
        raise AggregationError(f"Aggregation weights must sum to > 0, got {weights}.")
    keys = sorted(tensors[0]) if keys is None else keys
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        acc: torch.Tensor | None = None
        for t, w in zip(tensors, weights, strict=True):
            if key not in t:
                raise AggregationError(f"A client reply lacks tensor {key!r}.")
            value = t[key].float() * (w / total)
            if acc is not None and acc.shape != value.shape:
                raise AggregationError(f"Tensor {key!r} has shape {tuple(value.shape)}, expected {tuple(acc.shape)}.")
            acc = value if acc is None else acc.add_(value)
        assert acc is not None
        out[key] = acc
    return out


# ---- registry (peft's register_peft_method in spirit) --------------------------------------------
_REGISTRY: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a strategy available by its ``name``; duplicates are refused."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} must set a non-empty `name` to be registered.")
    if cls.name in _REGISTRY:
        raise ValueError(f"Strategy name {cls.name!r} is already registered by {_REGISTRY[cls.name].__name__}.")
    _REGISTRY[cls.name] = cls
    return cls


def strategy_names() -> list[str]:
    return sorted(_REGISTRY)


def get_strategy_class(name: str) -> type[Strategy]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown method {name!r}; known: {', '.join(strategy_names())}.") from None
