"""Link profiles: per-client uplink/downlink rates, one-way latency and loss.

The EcoLoRA paper (Liu et al., arXiv 2506.02001, Sec. 5, "practical network") evaluates four
asymmetric access links written ``uplink/downlink`` in Mbps: ``0.2/1``, ``1/5``, ``2/10`` and
``5/25``, each with 50 ms of one-way latency. They are the presets in :data:`SCENARIOS`.

Heterogeneous clients get their profiles from :func:`assign_profiles`, which accepts one profile
(every client the same), a list (cycled by client id) or a distribution such as
:class:`LogNormalProfiles`. Assignments depend only on ``(seed, client id)``, so a client keeps its
link across rounds whichever other clients are sampled with it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "DEFAULT_LATENCY_MS",
    "SCENARIOS",
    "LinkProfile",
    "LogNormalProfiles",
    "ProfileDistribution",
    "ProfileSpec",
    "assign_profiles",
    "parse_scenario",
    "scenario_key",
]

DEFAULT_LATENCY_MS = 50.0


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be > 0, got {float(value)}")


@dataclass(frozen=True)
class LinkProfile:
    """One client's access link, as seen from the client.

    ``uplink_mbps`` carries client -> server traffic (LoRA uploads), ``downlink_mbps`` carries
    server -> client traffic (global model downloads). Rates are in 10^6 bit/s.
    """

    uplink_mbps: float = field(metadata={"help": "client -> server rate, Mbit/s (> 0)"})
    downlink_mbps: float = field(metadata={"help": "server -> client rate, Mbit/s (> 0)"})
    latency_ms: float = field(
        default=DEFAULT_LATENCY_MS, metadata={"help": "one-way propagation delay, ms (>= 0)"}
    )
    loss: float = field(
        default=0.0, metadata={"help": "random packet loss probability per packet, in [0, 1)"}
    )

    def __post_init__(self) -> None:
        _check_positive("uplink_mbps", self.uplink_mbps)
        _check_positive("downlink_mbps", self.downlink_mbps)
        for name, value in (("latency_ms", self.latency_ms), ("loss", self.loss)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}")
        if not math.isfinite(self.latency_ms) or self.latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0, got {float(self.latency_ms)}")
        if not (0.0 <= self.loss < 1.0):
            raise ValueError(f"loss must be in [0, 1), got {float(self.loss)}")

    @property
    def key(self) -> str:
        """Short label, e.g. ``"1/5"``; latency and loss are appended when not the default."""
        return scenario_key(self)

    def to_dict(self) -> dict[str, float]:
        return {
            "uplink_mbps": float(self.uplink_mbps),
            "downlink_mbps": float(self.downlink_mbps),
            "latency_ms": float(self.latency_ms),
            "loss": float(self.loss),
        }


SCENARIOS: dict[str, LinkProfile] = {
    "0.2/1": LinkProfile(0.2, 1.0),
    "1/5": LinkProfile(1.0, 5.0),
    "2/10": LinkProfile(2.0, 10.0),
    "5/25": LinkProfile(5.0, 25.0),
}

_NUM = r"(\d+(?:\.\d*)?|\.\d+)"
_SCENARIO_RE = re.compile(rf"^\s*{_NUM}\s*/\s*{_NUM}\s*(?:@\s*{_NUM}\s*ms)?\s*$")


def _fmt(value: float) -> str:
    return f"{float(value):g}"


def scenario_key(profile: LinkProfile) -> str:
    """Label a profile: ``"1/5"``, ``"1/5@20ms"``, ``"1/5@50ms~1%"`` (loss in percent)."""
    key = f"{_fmt(profile.uplink_mbps)}/{_fmt(profile.downlink_mbps)}"
    if profile.latency_ms != DEFAULT_LATENCY_MS or profile.loss > 0:
        key += f"@{_fmt(profile.latency_ms)}ms"
    if profile.loss > 0:
        key += f"~{_fmt(profile.loss * 100)}%"
    return key


def parse_scenario(text: str | LinkProfile) -> LinkProfile:
    """Parse ``"UPLINK/DOWNLINK"`` in Mbps with an optional ``"@LATENCYms"`` (default 50 ms).

    The presets ``0.2/1``, ``1/5``, ``2/10``, ``5/25`` parse to the entries of :data:`SCENARIOS`;
    any other pair of positive rates is accepted too (``"3/15"``, ``"1/5@20ms"``).
    """
    if isinstance(text, LinkProfile):
        return text
    if not isinstance(text, str):
        raise TypeError(f"scenario must be a string such as '1/5', got {type(text).__name__}")
    if text.strip() in SCENARIOS:
        return SCENARIOS[text.strip()]
    match = _SCENARIO_RE.match(text)
    if match is None:
        presets = ", ".join(SCENARIOS)
        raise ValueError(
            f"scenario must be 'UPLINK/DOWNLINK' in Mbps with an optional '@LATENCYms' "
            f"(e.g. '1/5' or '1/5@20ms'), or a preset ({presets}); got {text!r}"
        )
    up, down, latency = match.groups()
    return LinkProfile(
        float(up), float(down), float(latency) if latency is not None else DEFAULT_LATENCY_MS
    )


@runtime_checkable
class ProfileDistribution(Protocol):
    """Draws one client's profile from ``(seed, client_id)`` alone (stable across rounds)."""

    def draw(self, client_id: int, seed: int) -> LinkProfile: ...


@dataclass(frozen=True)
class LogNormalProfiles:
    """Rates scaled by a log-normal factor around a median profile.

    Client ``i`` gets ``rate * exp(sigma * z_i)`` on both directions (one factor, so a slow client
    is slow both ways) and ``latency * exp(latency_sigma * y_i)``, with ``z_i, y_i ~ N(0, 1)``
    drawn from ``np.random.default_rng([seed, i])``. ``sigma = 0.5`` puts 95% of clients within
    a factor ``e^(±0.98) ≈ 2.7`` of the median.
    """

    median: LinkProfile = field(metadata={"help": "profile of the median client"})
    sigma: float = field(default=0.5, metadata={"help": "log-std of the rate factor (>= 0)"})
    latency_sigma: float = field(default=0.0, metadata={"help": "log-std of latency (>= 0)"})

    def __post_init__(self) -> None:
        if not isinstance(self.median, LinkProfile):
            raise TypeError(f"median must be a LinkProfile, got {type(self.median).__name__}")
        for name in ("sigma", "latency_sigma"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be >= 0, got {float(value)}")

    def draw(self, client_id: int, seed: int) -> LinkProfile:
        z, y = np.random.default_rng([seed, client_id]).standard_normal(2)
        factor = math.exp(self.sigma * z)
        return LinkProfile(
            uplink_mbps=self.median.uplink_mbps * factor,
            downlink_mbps=self.median.downlink_mbps * factor,
            latency_ms=self.median.latency_ms * math.exp(self.latency_sigma * y),
            loss=self.median.loss,
        )


ProfileSpec = LinkProfile | str | Sequence[LinkProfile | str] | ProfileDistribution


def assign_profiles(
    client_ids: Iterable[int], spec: ProfileSpec, seed: int = 0
) -> dict[int, LinkProfile]:
    """Give every client a :class:`LinkProfile`.

    ``spec`` is one profile or scenario string (all clients alike), a non-empty list of them
    (client ``i`` gets ``spec[i % len(spec)]``), or a :class:`ProfileDistribution`.
    Client ids must be non-negative integers.
    """
    ids = list(client_ids)
    for cid in ids:
        if isinstance(cid, bool) or not isinstance(cid, int | np.integer) or cid < 0:
            raise ValueError(f"client ids must be non-negative integers, got {cid!r}")
    if isinstance(spec, LinkProfile | str):
        profile = parse_scenario(spec)
        return {int(cid): profile for cid in ids}
    if isinstance(spec, ProfileDistribution):
        return {int(cid): spec.draw(int(cid), seed) for cid in ids}
    if isinstance(spec, Sequence):
        if len(spec) == 0:
            raise ValueError("profile list must not be empty")
        profiles = [parse_scenario(item) for item in spec]
        return {int(cid): profiles[int(cid) % len(profiles)] for cid in ids}
    raise TypeError(
        "profile spec must be a LinkProfile, a scenario string, a list of them, or a "
        f"ProfileDistribution (e.g. LogNormalProfiles), got {type(spec).__name__}"
    )
