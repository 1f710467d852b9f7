"""Wall-clock time of one synchronous federated round over modelled links.

A synchronous round (FedAvg-style, as in FedIT and EcoLoRA, Liu et al., arXiv 2506.02001) has
every sampled client ``i``:

1. download the global adapter: ``t_down_i`` (server -> client, client downlink rate),
2. train locally: ``t_comp_i = compute_scale * compute_s_i`` (measured wall time by default),
3. upload its update: ``t_up_i`` (client -> server, client uplink rate),

and the server waits for the slowest client: ``round_s = max_i (t_down_i + t_comp_i + t_up_i)``.
Server aggregation time is not modelled.

The round's communication time is the communication on its critical path,
``comm_s = round_s - t_comp_c = t_down_c + t_up_c`` for the slowest client ``c``, so that
computation + communication add up to the round time. This is the split of the paper's Figure 3
(training time broken into computation and communication); summed over rounds it gives the
"total communication time" and "total training time" of the paper's Table 3.

Transfers are timed by the analytic TCP model (:mod:`ecolora.network.tcp`) or by ns-3
(:mod:`ecolora.network.ns3_backend`). With a shared server link (``server_uplink_mbps`` carries
all downloads, ``server_downlink_mbps`` all uploads), the analytic backend lets concurrent
transfers share it max-min fairly (:func:`ecolora.network.tcp.shared_link_finish_times`): each
flow first spends its own set-up and slow-start time, then streams its remaining wire bytes
through the shared fluid link, then propagates.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecolora.network.link import LinkProfile, parse_scenario
from ecolora.network.ns3_backend import ns3_round_times
from ecolora.network.tcp import (
    shared_link_finish_times,
    tcp_transfer_phases_s,
    tcp_transfer_time_s,
)

__all__ = ["BACKENDS", "RoundTiming", "round_timing"]

logger = logging.getLogger("ecolora")

BACKENDS = ("analytic", "ns3")


@dataclass
class RoundTiming:
    """Timing of one round. ``per_client`` rows: client, download_s, compute_s, upload_s, total_s.

    ``download_s``/``compute_s``/``upload_s`` at top level are those of the critical (slowest)
    client, so ``round_s == download_s + compute_s + upload_s`` and ``comm_s == round_s -
    compute_s``.
    """

    comm_s: float
    round_s: float
    per_client: list[dict[str, Any]] = field(default_factory=list)
    download_s: float = 0.0
    compute_s: float = 0.0
    upload_s: float = 0.0
    critical_client: int | None = None

    def to_dict(self, *, per_client: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "comm_s": self.comm_s,
            "round_s": self.round_s,
            "download_s": self.download_s,
            "compute_s": self.compute_s,
            "upload_s": self.upload_s,
            "critical_client": self.critical_client,
        }
        if per_client:
            out["per_client"] = [dict(row) for row in self.per_client]
        return out


@dataclass(frozen=True)
class _Transfer:
    """One client's records, validated."""

    client: int
    download_bytes: int
    upload_bytes: int
    compute_s: float


def _parse_records(records: Sequence[Mapping[str, Any]]) -> list[_Transfer]:
    out = []
    for row in records:
        missing = [k for k in ("client", "upload_bytes", "download_bytes") if k not in row]
        if missing:
            raise ValueError(
                f"per-client record needs keys client, upload_bytes, download_bytes "
                f"(compute_s optional); missing {missing} in {dict(row)!r}"
            )
        rec = _Transfer(
            int(row["client"]), int(row["download_bytes"]), int(row["upload_bytes"]),
            float(row.get("compute_s", 0.0)),
        )
        if rec.download_bytes < 0 or rec.upload_bytes < 0:
            raise ValueError(f"byte counts must be >= 0, got {dict(row)!r}")
        if not (math.isfinite(rec.compute_s) and rec.compute_s >= 0):
            raise ValueError(f"compute_s must be >= 0, got {rec.compute_s} for client {rec.client}")
        out.append(rec)
    return out


def _resolve_profiles(
    transfers: list[_Transfer], profiles: Mapping[int, LinkProfile] | LinkProfile | str
) -> list[LinkProfile]:
    if isinstance(profiles, LinkProfile | str):
        one = parse_scenario(profiles)
        return [one] * len(transfers)
    missing = [t.client for t in transfers if t.client not in profiles]
    if missing:
        raise ValueError(
            f"no link profile for clients {missing}; pass one LinkProfile or a dict with "
            "every client (see assign_profiles)"
        )
    return [profiles[t.client] for t in transfers]


def _check_server_rate(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be > 0 or None, got {value}")


def _direction_end_times(
    starts: np.ndarray, sizes: list[int], links: list[LinkProfile], *, upload: bool,
    capacity_mbps: float | None,
) -> np.ndarray:
    """When each client's transfer in one direction ends, given when it starts.

    Without a shared link every transfer is an independent :func:`tcp_transfer_time_s`. With
    one, each flow spends its own set-up and slow-start time, then streams its remaining wire
    bytes through the fluid shared link (max-min fair, capped at its access rate), then
    propagates. With an uncongested shared link both give the same times.
    """
    rates = [p.uplink_mbps if upload else p.downlink_mbps for p in links]
    reverse = [p.downlink_mbps if upload else p.uplink_mbps for p in links]
    if capacity_mbps is None:
        durations = [
            tcp_transfer_time_s(b, r, p.latency_ms, reverse_rate_mbps=q, loss=p.loss)
            for b, r, q, p in zip(sizes, rates, reverse, links, strict=True)
        ]
        ends: np.ndarray = starts + np.asarray(durations, dtype=float)
        return ends
    if any(p.loss > 0 for p in links):
        logger.warning("link loss is ignored by the analytic model with a shared server link")
    phases = np.array([
        tcp_transfer_phases_s(b, r, p.latency_ms, reverse_rate_mbps=q)
        for b, r, q, p in zip(sizes, rates, reverse, links, strict=True)
    ])  # (clients, 3): setup_s, rest wire bytes, propagation_s
    bits = 8.0 * phases[:, 1]
    fluid_end = shared_link_finish_times(
        starts + phases[:, 0], bits, np.asarray(rates) * 1e6, capacity_mbps * 1e6
    )
    return np.where(bits > 0, fluid_end + phases[:, 2], starts)


def _analytic_times(
    transfers: list[_Transfer], links: list[LinkProfile], compute: np.ndarray,
    server_uplink_mbps: float | None, server_downlink_mbps: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    down_end = _direction_end_times(
        np.zeros(len(transfers)), [t.download_bytes for t in transfers], links, upload=False,
        capacity_mbps=server_uplink_mbps,
    )
    up_start = down_end + compute
    up_end = _direction_end_times(
        up_start, [t.upload_bytes for t in transfers], links, upload=True,
        capacity_mbps=server_downlink_mbps,
    )
    return down_end, up_end - up_start


def round_timing(
    per_client_records: Sequence[Mapping[str, Any]],
    profiles: Mapping[int, LinkProfile] | LinkProfile | str,
    *,
    backend: str = "analytic",
    compute_scale: float = 1.0,
    server_uplink_mbps: float | None = None,
    server_downlink_mbps: float | None = None,
) -> RoundTiming:
    """Time one synchronous round (see the module docstring for the definitions).

    ``per_client_records``: the ``per_client`` list of a ``metrics.jsonl`` row
    (``client``, ``upload_bytes``, ``download_bytes``, ``compute_s``). ``profiles``: one profile
    (or scenario string) for all clients, or ``{client: LinkProfile}``. ``compute_scale``
    multiplies the measured compute time (0.5: a device twice as fast as the one that ran).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if not (math.isfinite(compute_scale) and compute_scale >= 0):
        raise ValueError(f"compute_scale must be >= 0, got {compute_scale}")
    _check_server_rate("server_uplink_mbps", server_uplink_mbps)
    _check_server_rate("server_downlink_mbps", server_downlink_mbps)
    transfers = _parse_records(per_client_records)
    if not transfers:
        return RoundTiming(comm_s=0.0, round_s=0.0)
    links = _resolve_profiles(transfers, profiles)
    compute = np.array([t.compute_s for t in transfers]) * compute_scale
    if backend == "ns3":
        download_s, upload_s = ns3_round_times(
            [(t.download_bytes, t.upload_bytes) for t in transfers], links, compute,
            server_uplink_mbps=server_uplink_mbps, server_downlink_mbps=server_downlink_mbps,
        )
    else:
        download_s, upload_s = _analytic_times(
            transfers, links, compute, server_uplink_mbps, server_downlink_mbps
        )
    total = download_s + compute + upload_s
    rows = [
        {"client": t.client, "download_s": float(d), "compute_s": float(c),
         "upload_s": float(u), "total_s": float(s)}
        for t, d, c, u, s in zip(transfers, download_s, compute, upload_s, total, strict=True)
    ]
    worst = int(np.argmax(total))
    return RoundTiming(
        comm_s=float(download_s[worst] + upload_s[worst]),
        round_s=float(total[worst]),
        per_client=rows,
        download_s=float(download_s[worst]),
        compute_s=float(compute[worst]),
        upload_s=float(upload_s[worst]),
        critical_client=transfers[worst].client,
    )
