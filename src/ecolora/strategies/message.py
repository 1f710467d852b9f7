"""The unit of communication: what one client is sent, or sends back, in one round."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Message"]


@dataclass
class Message:
    """What crosses the wire in one direction for one client: a small JSON config and tensors."""

    config: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    num_examples: int = 0  # replies only: the client's training sample count
    metrics: dict[str, float] = field(default_factory=dict)  # replies only
