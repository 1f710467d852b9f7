"""Checks on a client's reply before it may enter aggregation.

On one machine every reply comes from our own code; across machines a SuperNode can send anything.
A reply is accepted only if it answers the round and segment it was asked for, reports a positive
sample count and finite losses, and carries exactly the tensors (names and shapes) its algorithm
uploads, with finite values. Anything else raises :class:`ReplyError` and the ServerApp drops that
reply (logging the reason) while the round goes on with the others.
"""

from __future__ import annotations

import math

import torch

from ecolora.strategies.base import Message, Strategy
from ecolora.strategies.fedit import FedIT, is_lora_a

__all__ = ["ReplyError", "expected_reply_shapes", "validate_reply"]


class ReplyError(ValueError):
    """A client's reply is malformed or does not match what the server asked for."""


def expected_reply_shapes(strategy: Strategy, sent: Message) -> dict[str, tuple[int, ...]] | None:
    """Names and shapes the client must upload for ``sent``; None for an unknown algorithm.

    * FedIT / FFA-LoRA: the exchanged global tensors (A and B, or B only).
    * EcoLoRA over them: the 1-D pieces of the segment assigned in ``sent`` (eq. 2).
    * FLoRA: a full LoRA of the rank assigned in ``sent``: A (r, d_in), B (d_out, r).
    """
    from ecolora.strategies.ecolora import EcoLoRA
    from ecolora.strategies.flora import FLoRA

    if isinstance(strategy, EcoLoRA):
        segment = int(sent.config["segment"])
        return {name: (end - start,) for name, start, end in strategy.layout.pieces(segment)}
    if isinstance(strategy, FedIT):
        return {k: tuple(v.shape) for k, v in strategy.global_state.items()}
    if isinstance(strategy, FLoRA):
        rank = int(sent.config["rank"])
        return {
            k: (rank, v.shape[1]) if is_lora_a(k) else (v.shape[0], rank)
            for k, v in strategy.initial_lora.items()
        }
    return None


def validate_reply(strategy: Strategy, sent: Message, reply: Message) -> None:
    """Raise :class:`ReplyError` unless ``reply`` is a well-formed answer to ``sent``."""
    for key in ("round", "segment"):
        if key in sent.config and reply.config.get(key) != sent.config[key]:
            raise ReplyError(
                f"Reply has {key} {reply.config.get(key)!r}, expected {sent.config[key]!r}."
            )
    if reply.num_examples < 1:
        raise ReplyError(f"Reply reports num_examples={reply.num_examples}, expected >= 1.")
    for name in ("train_loss", "initial_loss"):
        value = reply.metrics.get(name)
        if value is None or not math.isfinite(value):
            raise ReplyError(f"Reply metric {name!r} is {value!r}, expected a finite number.")
    expected = expected_reply_shapes(strategy, sent)
    if expected is not None:
        if set(reply.tensors) != set(expected):
            missing, extra = (
                sorted(set(expected) - set(reply.tensors)),
                sorted(set(reply.tensors) - set(expected)),
            )
            raise ReplyError(
                f"Reply tensors do not match: missing {missing[:3]}, unexpected {extra[:3]}."
            )
        for name, shape in expected.items():
            if tuple(reply.tensors[name].shape) != shape:
                raise ReplyError(
                    f"Reply tensor {name!r} has shape {tuple(reply.tensors[name].shape)}, expected {shape}."
                )
    for name, tensor in reply.tensors.items():
        if not bool(torch.isfinite(tensor).all()):
            raise ReplyError(f"Reply tensor {name!r} holds NaN or infinite values.")
