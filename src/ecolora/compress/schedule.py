"""Time- and matrix-adaptive sparsification density (EcoLoRA, Liu et al. 2025, eq. 4).

The fraction of LoRA entries a client sends decays as the global loss falls::

    k_t = k_min + (k_max - k_min) * exp(-gamma * (L_0 - L_{t-1}))           (eq. 4)

with ``L_0`` the initial loss and ``L_{t-1}`` the last global loss. Early in training (loss near
``L_0``) clients send ``k_max``; as the loss improves the density approaches ``k_min``. LoRA's
``A`` and ``B`` matrices get their own ``k_min`` and ``gamma``: ``B`` is sparsified harder and
faster (the paper's defaults ``k_max = 0.95``, ``k_min^A = 0.6``, ``k_min^B = 0.5``).

Default decay rates: the paper gives no values for ``gamma`` (Section 3.4 and Appendix A only say
"use a larger gamma for B"), so ``gamma_A = 1`` and ``gamma_B = 2`` are this project's choice,
the same in :class:`AdaptiveKConfig` and in ``EcoLoRAConfig`` (``ecolora.gamma_a/gamma_b``).
Losses are in nats: ``gamma_A = 1`` moves ``A`` 63% of the way to ``k_min`` after a loss drop of
1.0, ``gamma_B = 2`` does so for ``B`` after a drop of 0.5. Raise them for faster savings, lower
them if accuracy suffers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["AdaptiveK", "AdaptiveKConfig", "lora_matrix"]


def lora_matrix(name: str) -> str | None:
    """``"A"`` for peft ``lora_A`` tensors, ``"B"`` for ``lora_B``, else None."""
    if "lora_A" in name:
        return "A"
    if "lora_B" in name:
        return "B"
    return None


@dataclass
class AdaptiveKConfig:
    """Knobs of the density schedule; densities are fractions of entries kept."""

    k_max: float = field(default=0.95, metadata={"help": "density while the loss is at L_0"})
    k_min_a: float = field(default=0.6, metadata={"help": "floor density of LoRA A"})
    k_min_b: float = field(default=0.5, metadata={"help": "floor density of LoRA B"})
    gamma_a: float = field(default=1.0, metadata={"help": "decay per nat of loss drop, A"})
    gamma_b: float = field(default=2.0, metadata={"help": "decay per nat of loss drop, B (> A)"})
    fixed_density: float | None = field(
        default=None, metadata={"help": "if set, every matrix uses this density (ablations)"}
    )

    def __post_init__(self) -> None:
        for name in ("k_max", "k_min_a", "k_min_b"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"`{name}` must be in (0, 1], got {value}.")
        for name in ("k_min_a", "k_min_b"):
            if getattr(self, name) > self.k_max:
                raise ValueError(
                    f"`{name}` must be <= k_max ({self.k_max}), got {getattr(self, name)}."
                )
        for name in ("gamma_a", "gamma_b"):
            value = getattr(self, name)
            if not (value >= 0.0 and math.isfinite(value)):
                raise ValueError(f"`{name}` must be a finite number >= 0, got {value}.")
        if self.fixed_density is not None and not 0.0 <= self.fixed_density <= 1.0:
            raise ValueError(
                f"`fixed_density` must be in [0, 1] or None, got {self.fixed_density}."
            )


class AdaptiveK:
    """Computes eq. 4 per matrix; holds no state across rounds (the losses are passed in)."""

    def __init__(self, config: AdaptiveKConfig | None = None) -> None:
        self.config = config or AdaptiveKConfig()

    def density(self, matrix: str, initial_loss: float | None, last_loss: float | None) -> float:
        """Density for LoRA ``matrix`` ``"A"`` or ``"B"`` given ``L_0`` and ``L_{t-1}``.

        Returns ``k_max`` while either loss is unknown (the first round), and clips the result to
        ``[k_min, k_max]`` (a loss above ``L_0`` would otherwise give more than ``k_max``).
        """
        cfg = self.config
        if matrix not in ("A", "B"):
            raise ValueError(f"matrix must be 'A' or 'B', got {matrix!r}")
        if cfg.fixed_density is not None:
            return cfg.fixed_density
        if initial_loss is None or last_loss is None:
            return cfg.k_max
        if not (math.isfinite(initial_loss) and math.isfinite(last_loss)):
            raise ValueError(f"losses must be finite, got L_0={initial_loss}, L_t-1={last_loss}")
        k_min, gamma = (cfg.k_min_a, cfg.gamma_a) if matrix == "A" else (cfg.k_min_b, cfg.gamma_b)
        exponent = -gamma * (initial_loss - last_loss)
        k = k_min + (cfg.k_max - k_min) * math.exp(min(exponent, 0.0))
        return min(max(k, k_min), cfg.k_max)

    def density_for(self, name: str, initial_loss: float | None, last_loss: float | None) -> float:
        """Density for a peft tensor name: ``lora_A``/``lora_B`` by :meth:`density`, else k_max
        (or ``fixed_density``)."""
        matrix = lora_matrix(name)
        if matrix is None:
            fixed = self.config.fixed_density
            return self.config.k_max if fixed is None else fixed
        return self.density(matrix, initial_loss, last_loss)
