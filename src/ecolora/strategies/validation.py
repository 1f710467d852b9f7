"""Engine-independent checks on a client's update before it may enter aggregation.

A reply that crossed a network may be broken or hostile: a wrong round or segment, a tensor the
server never asked for, a shape that would broadcast silently, an integer or NaN payload, or a
sample count of 10^12 that would outweigh every honest client in the weighted mean. Every
strategy's :meth:`~ecolora.strategies.base.Strategy.aggregate_add` calls :func:`validate_update`
first, in the in-process runner and on Flower alike; a rejected reply is dropped with its reason
in the round's metrics (``rejected: [{client, reason}]``) and the others are aggregated.

Reasons are ``"<code>: <details>"``; the codes are stable (tests and dashboards match on them):

=================  =====================================================================
``round``          the reply answers another round than the one being aggregated
``<config key>``   an echoed config value (``segment``) differs from what was asked
``not_asked``      the client was not sampled this round
``duplicate``      a second reply from the same client in one round
``num_examples``   the declared sample count is not an integer in [1, max_num_examples]
``metric``         a required metric (``train_loss``, ``initial_loss``) is missing or not finite
``unknown_tensor`` a tensor name the server did not ask for
``missing_tensor`` an expected tensor is absent
``dtype``          a tensor is not float16, bfloat16 or float32 (a mask ``<name>@zeros``: bool, optional)
``shape``          a tensor's shape differs from the expected one 
``non_finite``     a tensor holds NaN or +-inf
``config``         the reply's config does not say what it answers (e.g. no segment)
``payload``        the bytes could not be decoded (:class:`~ecolora.codec.CodecError`);
                   recorded by the engine with ``aggregate_reject``
=================  =====================================================================

A client checks its own trained LoRA before it compresses it (:func:`nonfinite_reason`): top-k
cannot rank NaN, and a NaN outside the uploaded segment would otherwise go unnoticed. It then
sends no tensors and declares the reason under ``config["rejected"]`` (:data:`CLIENT_REJECTION_KEY`);
the server rejects that reply with the client's reason (code ``non_finite``), on either engine.

The module is pure: it sees only the reply, the config the client was sent and the expected
shapes, so it does not import the strategies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from ecolora.compress.masked import MASK_SUFFIX
from ecolora.strategies.message import Message

__all__ = [
    "CLIENT_REJECTION_KEY",
    "ECHOED_KEYS",
    "REASON_CODES",
    "REQUIRED_METRICS",
    "WIRE_FLOAT_DTYPES",
    "nonfinite_reason",
    "reason_code",
    "validate_update",
]

CLIENT_REJECTION_KEY = "rejected"  # a reply's own reason not to be aggregated (config key)
ECHOED_KEYS = ("round", "segment")  # config values a reply must repeat from its request
REQUIRED_METRICS = ("train_loss", "initial_loss")  # read by the loss schedule (EcoLoRA eq. 4)
WIRE_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
REASON_CODES = (
    "round", "segment", "not_asked", "duplicate", "num_examples", "metric", "unknown_tensor",
    "missing_tensor", "dtype", "shape", "non_finite", "config", "payload",
)  # fmt: skip


def reason_code(reason: str) -> str:
    """The stable code of a rejection reason (the text before the first colon)."""
    return reason.split(":", 1)[0]


def nonfinite_reason(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """``non_finite: ...`` if a tensor holds NaN or +-inf (a client's check before compressing)."""
    for name, tensor in tensors.items():
        if not bool(torch.isfinite(tensor).all()):
            return f"non_finite: {name!r} holds NaN or infinite values after local training"
    return None


def validate_update(
    reply: Message,
    *,
    server_round: int,
    asked: Mapping[str, Any] | None = None,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    max_num_examples: int | None = None,
) -> str | None:
    """Return why ``reply`` must not be aggregated, or None when it is acceptable.

    Args:
        reply: the decoded reply (config, tensors, num_examples, metrics).
        server_round: the round being aggregated.
        asked: the config the client was sent this round (None: unknown, so the ``ECHOED_KEYS``
            other than ``round`` are not checked).
        shapes: expected tensor names and shapes (None: the strategy does not say; names and
            shapes are then not checked, dtypes and finiteness still are).
        max_num_examples: upper bound on the declared sample count (None: no bound).
    """
    config = reply.config if isinstance(reply.config, Mapping) else {}
    if config.get("round") != server_round:
        return f"round: reply answers round {config.get('round')!r}, expected {server_round}"
    declared = config.get(CLIENT_REJECTION_KEY)
    if declared is not None:
        if isinstance(declared, str) and reason_code(declared) in REASON_CODES:
            return declared
        return f"config: reply declares {CLIENT_REJECTION_KEY} {declared!r}, expected '<code>: <details>'"
    for key in ECHOED_KEYS[1:]:
        if asked is not None and key in asked and config.get(key) != asked[key]:
            return f"{key}: reply carries {key} {config.get(key)!r}, the client was asked for {asked[key]!r}"
    reason = _check_counts(reply, max_num_examples)
    if reason is None:
        reason = _check_tensors(reply.tensors, shapes)
    return reason


def _check_counts(reply: Message, max_num_examples: int | None) -> str | None:
    n = reply.num_examples
    bound = max_num_examples if max_num_examples is not None else math.inf
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= bound:
        limit = f"[1, {max_num_examples}]" if max_num_examples is not None else ">= 1"
        return f"num_examples: reply declares {n!r} training examples, expected an integer in {limit}"
    for name in REQUIRED_METRICS:
        value = reply.metrics.get(name)
        if not isinstance(value, int | float) or not math.isfinite(value):
            return f"metric: {name!r} is {value!r}, expected a finite number"
    return None


def _check_tensors(
    tensors: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple[int, ...]] | None
) -> str | None:
    if shapes is not None:
        unknown = sorted(set(tensors) - set(shapes))
        if unknown:
            return f"unknown_tensor: {_head(unknown)} not asked for"
        missing = sorted(n for n in set(shapes) - set(tensors) if not n.endswith(MASK_SUFFIX))  # masks: optional
        if missing:
            return f"missing_tensor: {_head(missing)} absent"
    for name, tensor in tensors.items():
        is_mask = name.endswith(MASK_SUFFIX)
        allowed = (torch.bool,) if is_mask else WIRE_FLOAT_DTYPES
        if not isinstance(tensor, torch.Tensor) or tensor.dtype not in allowed:
            got = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            return f"dtype: {name!r} is {got}, expected {'bool' if is_mask else 'float16, bfloat16 or float32'}"
        if shapes is not None and tuple(tensor.shape) != tuple(shapes[name]):
            return f"shape: {name!r} has shape {tuple(tensor.shape)}, expected {tuple(shapes[name])}"
        if not is_mask and not bool(torch.isfinite(tensor).all()):
            return f"non_finite: {name!r} holds NaN or infinite values"
    return None


def _head(names: list[str], limit: int = 3) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(repr(n) for n in names[:limit]) + more
