"""Engine-independent federated strategies: the hooks every algorithm implements.

One round, whatever the engine (the in-process runner or Flower)::

    messages = strategy.configure_round(t, client_ids)          # server: one Message per client
    # ... each message is packed to bytes, crosses the transport, is unpacked ...
    reply = strategy.client_round(runtime, message)            # client: local work
    # ... the reply is packed, crosses back, is unpacked ...
    metrics = strategy.aggregate_round(t, replies)             # server: new global state

``aggregate_round`` is the batch form of the streaming path engines may call instead, one reply
at a time as it arrives, so the server never holds all of a round's replies::

    strategy.aggregate_begin(t)
    strategy.aggregate_add(client_id, reply)     # validate, clip, fold in; returns a reason or None
    strategy.aggregate_reject(client_id, why)    # a reply that could not even be decoded
    metrics = strategy.aggregate_end(t)          # new global state; "rejected", "no_update"

Every reply is validated (:mod:`ecolora.strategies.validation`) and optionally norm-clipped
(``faults.clip_norm``) before the algorithm sees it. Algorithms fold replies in through three
hooks (:meth:`Strategy.fold_begin`, :meth:`Strategy.fold`, :meth:`Strategy.fold_end`: running
sums, memory independent of the number of clients), or implement
:meth:`Strategy.aggregate_replies` to receive the round's accepted replies at once.

Algorithms subclass :class:`Strategy` and override these hooks; the loop itself lives in the
engines. Everything a message carries is in :class:`Message` (a JSON config plus named tensors),
so both engines serialize it the same way with :meth:`Strategy.pack` / :meth:`Strategy.unpack`.
"""

from __future__ import annotations

import json
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from peft import PeftModel

from ecolora import codec
from ecolora.client.lora import save_adapter as save_peft_adapter
from ecolora.config import RunConfig
from ecolora.strategies.message import Message
from ecolora.strategies.validation import validate_update

logger = logging.getLogger("ecolora")

__all__ = [
    "AdapterRuntime",
    "AggregationError",
    "ClientRuntime",
    "LowRank",
    "adapter_runtime",
    "Message",
    "clip_delta_reply",
    "Strategy",
    "TrainResult",
    "clip_factor",
    "overlay_lora",
    "train_metrics",
    "weighted_average",
]


class AggregationError(ValueError):
    """Client replies cannot be aggregated (wrong names, shapes, or nothing to aggregate)."""


@dataclass
class TrainResult:
    train_loss: float
    initial_loss: float  # loss of the first local batch (the server's L_0 for eq. 4)
    num_examples: int
    num_steps: int
    compute_s: float
    metrics: dict[str, float] = field(default_factory=dict)


def train_metrics(result: TrainResult) -> dict[str, float]:
    """The metrics a client reports with its reply (losses, compute time, steps, the trainer's own)."""
    return {
        "train_loss": float(result.train_loss),
        "initial_loss": float(result.initial_loss),
        "compute_s": float(result.compute_s),
        "num_steps": float(result.num_steps),
        **{k: float(v) for k, v in result.metrics.items()},
    }


class ClientRuntime(Protocol):
    """A client as a strategy sees it: its LoRA, its persistent state and its trainer.

    In one process many runtimes share one base model (LoRA weights are swapped in and out);
    on Flower each ClientApp process has one. ``state`` persists across rounds (``Context.state``
    on Flower) and holds only tensors and JSON-able values.
    """

    state: dict[str, Any]

    @property
    def client_id(self) -> int: ...

    @property
    def num_examples(self) -> int: ...

    def get_lora(self) -> dict[str, torch.Tensor]: ...

    def set_lora(self, tensors: Mapping[str, torch.Tensor]) -> None: ...

    def train(self, server_round: int, config: Mapping[str, Any]) -> TrainResult: ...

    def freeze(self, predicate: Callable[[str], bool]) -> None: ...


LowRank = tuple[torch.Tensor, torch.Tensor]  # (B (d_out, r), A (r, d_in)): the update B @ A of one module


@runtime_checkable
class AdapterRuntime(ClientRuntime, Protocol):
    """A client that can do more than train one persistent LoRA (FLoRA needs both):

    * ``use_rank(r)``: train the adapter of rank ``r`` (one per :meth:`Strategy.adapter_ranks`);
    * ``merge_into_base(tag, factors)``: add ``B @ A`` to the base weight of each module once per
      ``tag`` (a client merging a tag it merged before does nothing). On Flower the merges are
      kept in ``Context.state``, so a new ClientApp process replays them.
    """

    def use_rank(self, rank: int) -> None: ...

    def merge_into_base(self, tag: str, factors: Mapping[str, LowRank]) -> None: ...


def adapter_runtime(runtime: ClientRuntime) -> AdapterRuntime:
    """``runtime`` as an :class:`AdapterRuntime`; a clear error for an engine without it."""
    if not isinstance(runtime, AdapterRuntime):
        raise TypeError(f"This method needs an AdapterRuntime (use_rank, merge_into_base); {type(runtime).__name__} "
                        "is not one.")
    return runtime


class Strategy(ABC):
    """Base class of all algorithms. Subclasses set ``name`` and override the round hooks."""

    name: str = ""
    _pending: _PendingRound | None = None  # the round being aggregated (aggregate_begin .. _end)

    def __init__(self, config: RunConfig, initial_lora: Mapping[str, torch.Tensor]) -> None:
        self.config = config
        self.initial_lora = {k: v.detach().clone().float() for k, v in initial_lora.items()}
        self.wire_dtype = torch.float16 if config.fed.wire_dtype == "float16" else torch.float32

    # ---- server side -------------------------------------------------------------------------
    @abstractmethod
    def configure_round(self, server_round: int, client_ids: list[int]) -> dict[int, Message]:
        """Build one fresh message per sampled client (position in ``client_ids`` matters)."""

    @abstractmethod
    def global_lora(self) -> dict[str, torch.Tensor]:
        """The global LoRA tensors to evaluate and save (full names, fp32)."""

    def adapter_ranks(self) -> list[int]:
        """LoRA ranks the clients train in adapters of their own (FLoRA's heterogeneous ranks); the
        engine adds one adapter per rank at setup. Empty (default): the clients train ``lora.r``'s."""
        return []

    def save_adapter(self, model: PeftModel, out_dir: Path) -> None:
        """Write the global model as a PEFT adapter folder (default: :meth:`global_lora` in the
        model's own adapter config)."""
        save_peft_adapter(model, self.global_lora(), out_dir)

    def prepare_eval(self, runtime: ClientRuntime) -> None:
        """Put the global model into ``runtime``'s model for evaluation."""
        runtime.set_lora(self.global_lora())

    def remember_asked(self, server_round: int, messages: Mapping[int, Message]) -> None:
        """Keep what each client was sent (its config) to check its reply against this round."""
        self._asked_round = server_round
        self._asked = {cid: dict(m.config) for cid, m in messages.items()}

    def expected_shapes(self, client_id: int, asked: Mapping[str, Any]) -> dict[str, tuple[int, ...]] | None:
        """Names and shapes of the tensors ``client_id`` must upload for request ``asked``.

        None: names and shapes are not checked. May raise KeyError/TypeError/ValueError when
        ``asked`` (the reply's own config when the request is unknown) is malformed.
        """
        del client_id, asked
        return None

    # ---- server side: aggregation ------------------------------------------------------------
    def aggregate_round(self, server_round: int, replies: Mapping[int, Message]) -> dict[str, Any]:
        """Validate, clip and fold in the replies that arrived (in the given order); return metrics."""
        self.aggregate_begin(server_round)
        for client_id, reply in replies.items():
            self.aggregate_add(client_id, reply)
        return self.aggregate_end(server_round)

    def aggregate_begin(self, server_round: int) -> None:
        """Start folding in the replies of ``server_round`` (forgets an unfinished round)."""
        self._pending = _PendingRound(server_round)
        self.fold_begin(server_round)

    def aggregate_add(self, client_id: int, reply: Message) -> str | None:
        """Validate one reply and fold it in; return the rejection reason (None: accepted)."""
        pending = self._require_pending("aggregate_add")
        reason = self._rejection(pending, client_id, reply)
        pending.seen.add(client_id)
        if reason is not None:
            self.aggregate_reject(client_id, reason)
            return reason
        bound = self.config.faults.clip_norm
        if bound is not None:
            reply, norm = self.clip_reply(reply, bound)
            if norm > bound:
                pending.clipped.append({"client": client_id, "norm": norm})
        self.fold(client_id, reply)
        pending.num_accepted += 1
        return None

    def aggregate_reject(self, client_id: int, reason: str) -> None:
        """Record a reply dropped before aggregation (e.g. ``payload: <CodecError>``)."""
        pending = self._require_pending("aggregate_reject")
        pending.seen.add(client_id)
        pending.rejected.append({"client": client_id, "reason": reason})
        logger.warning("round %d: rejected the update of client %d: %s", pending.server_round, client_id, reason)

    def aggregate_end(self, server_round: int) -> dict[str, Any]:
        """Finish the round: new global state unless nothing usable arrived; return metrics."""
        pending = self._require_pending("aggregate_end")
        if pending.server_round != server_round:
            raise AggregationError(f"aggregate_end({server_round}) but round {pending.server_round} was begun.")
        self._pending = None
        if pending.num_accepted == 0:
            logger.warning("round %d: no usable update arrived; the global model is unchanged", server_round)
            metrics: dict[str, Any] = {}
        else:
            metrics = dict(self.fold_end(server_round))
        metrics.update(no_update=pending.num_accepted == 0, rejected=pending.rejected)
        if self.config.faults.clip_norm is not None:
            metrics["clipped"] = pending.clipped
        return metrics

    def _require_pending(self, what: str) -> _PendingRound:
        pending = self._pending
        if pending is None:
            raise AggregationError(f"{what} needs aggregate_begin(server_round) first.")
        return pending

    def _rejection(self, pending: _PendingRound, client_id: int, reply: Message) -> str | None:
        if client_id in pending.seen:
            return f"duplicate: client {client_id} already replied in round {pending.server_round}"
        asked_all = getattr(self, "_asked", None) if getattr(self, "_asked_round", None) == pending.server_round else None
        if asked_all is not None and client_id not in asked_all:
            return f"not_asked: client {client_id} was not sampled in round {pending.server_round}"
        asked = asked_all.get(client_id) if asked_all is not None else None
        try:  # an unknown request: the shapes of what the reply claims to answer
            shapes = self.expected_shapes(client_id, asked if asked is not None else reply.config)
        except (KeyError, TypeError, ValueError) as exc:
            return f"config: reply config {reply.config!r} does not say what it answers ({exc})"
        return validate_update(
            reply, server_round=pending.server_round, asked=asked, shapes=shapes,
            max_num_examples=self.config.faults.max_num_examples,
        )

    # ---- aggregation hooks (algorithms override these) ---------------------------------------
    def fold_begin(self, server_round: int) -> None:
        """Reset the running state of one round (default: a buffer for :meth:`aggregate_replies`)."""
        self._buffer: dict[int, Message] = {}

    def fold(self, client_id: int, reply: Message) -> None:
        """Fold one validated (and clipped) reply into the running state."""
        self._buffer[client_id] = reply

    def fold_end(self, server_round: int) -> dict[str, Any]:
        """Turn the running state into the new global state (>= 1 reply was folded); return metrics."""
        replies, self._buffer = self._buffer, {}
        return self.aggregate_replies(server_round, replies)

    def aggregate_replies(self, server_round: int, replies: Mapping[int, Message]) -> dict[str, Any]:
        """Batch aggregation of the accepted replies, for algorithms without running sums."""
        raise NotImplementedError(f"{type(self).__name__} must implement fold_* or aggregate_replies.")

    def clip_reply(self, reply: Message, max_norm: float) -> tuple[Message, float]:
        """Scale the client's update U to ``U * min(1, max_norm / ||U||_2)``; return (reply, ||U||).

        Norm bounding as in DP-FedAvg (McMahan et al., "Learning Differentially Private Recurrent
        Language Models", ICLR 2018). What U is depends on the algorithm (a delta against the
        global model, a sparse update, B_i A_i), so each algorithm overrides this; the default
        warns once and leaves the reply as it is.
        """
        if not getattr(self, "_warned_clip", False):
            logger.warning("faults.clip_norm is ignored: %s does not define its client update.", self.name)
            self._warned_clip = True
        return reply, 0.0

    # ---- client side -------------------------------------------------------------------------
    @abstractmethod
    def client_round(self, runtime: ClientRuntime, message: Message) -> Message:
        """Local work of one client for one round; returns the reply to upload."""

    # ---- wire format -------------------------------------------------------------------------
    def pack(self, message: Message, direction: str) -> bytes:
        """Serialize a message's tensors with the project's codec (dense fp16 by default)."""
        return codec.pack(message.tensors, value_dtype=self.wire_dtype, encoding="dense")

    def unpack(self, payload: bytes) -> dict[str, torch.Tensor]:
        """Decode a payload; one that declares more than :meth:`max_message_numel` values is a
        :class:`~ecolora.codec.CodecError` before anything is allocated."""
        return codec.unpack(payload, max_numel=self.max_message_numel())

    def max_message_numel(self) -> int:
        """Most values one message of this algorithm can hold (a few bytes of a hostile payload can
        otherwise declare a sparse tensor of 2**31 zeros). Default: the codec's limit."""
        return 2**31

    @staticmethod
    def pack_config(config: Mapping[str, Any], num_examples: int = 0, metrics: Mapping[str, float] | None = None) -> bytes:
        """The JSON header of a message. Metric values travel as fixed-width ``%.6e`` strings, so a
        message's size does not depend on measured values (a run's bytes are reproducible)."""
        fixed = {k: format(float(v), ".6e") for k, v in (metrics or {}).items()}
        body = {"config": dict(config), "num_examples": num_examples, "metrics": fixed}
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    # ---- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        del state


@dataclass
class _PendingRound:
    """Bookkeeping of the round being aggregated (not part of the strategy's state)."""

    server_round: int
    seen: set[int] = field(default_factory=set)
    num_accepted: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    clipped: list[dict[str, Any]] = field(default_factory=list)


def clip_factor(squared_norm: float, max_norm: float) -> tuple[float, float]:
    """(min(1, max_norm / ||U||), ||U||) from ``||U||^2``."""
    norm = math.sqrt(squared_norm)
    return (max_norm / norm if norm > max_norm else 1.0), norm


def overlay_lora(initial: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copies of every tensor of ``initial`` with those ``state`` holds in its place (what a
    strategy that exchanges only part of the LoRA, e.g. FFA-LoRA's B, evaluates and saves)."""
    full = {k: v.clone() for k, v in initial.items()}
    full.update({k: v.clone() for k, v in state.items()})
    return full


def clip_delta_reply(reply: Message, max_norm: float) -> tuple[Message, float]:
    """:meth:`Strategy.clip_reply` for replies whose tensors *are* the update U (a delta, or a
    sparse update whose zeros stay zeros): every tensor scaled by one factor."""
    factor, norm = clip_factor(sum(float(v.float().square().sum()) for v in reply.tensors.values()), max_norm)
    if factor < 1.0:
        reply = Message(config=reply.config, tensors={k: v.float() * factor for k, v in reply.tensors.items()},
                        num_examples=reply.num_examples, metrics=reply.metrics)
    return reply, norm


def weighted_average(
    tensors: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float], keys: list[str] | None = None
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
