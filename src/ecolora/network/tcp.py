"""Analytic TCP bulk-transfer time, and a fluid model of flows sharing one bottleneck.

Single flow (:func:`tcp_transfer_time_s`), after the slow-start latency model of Cardwell, Savage
and Anderson, "Modeling TCP Latency" (INFOCOM 2000) and Kurose & Ross (Computer Networking,
Sec. 3.7), with an initial window of 10 segments (RFC 6928). ``B`` payload bytes go over a link of
rate ``R`` bit/s (ACKs return at ``R'``, the reverse direction's rate) with one-way delay ``d``,
``RTT = 2d``:

1. ``N = ceil(B / MSS)`` segments put ``W = B + N * (wire - MSS)`` bytes on the wire
   (``wire = 1502``: 1448 payload + 20 IP + 32 TCP with timestamps + 2 PPP), so one full segment
   serializes in ``t_seg = 8 * wire / R``; an ACK (54 bytes) in ``t_ack = 8 * 54 / R'``.
2. Connection set-up, one round trip plus its packets: SYN (58 bytes) at ``R``, SYN-ACK (58) at
   ``R'``, then the handshake's ACK (54) ahead of the data:
   ``T = RTT + 8 * (58 + 54) / R + 8 * 58 / R'``.
3. Slow start in flights: flight ``k`` sends ``w_k`` segments and its first ACK is back
   ``F = t_seg + RTT + t_ack`` after the flight began. The window grows by the bytes each ACK
   covers (appropriate byte counting, RFC 3465). With delayed ACKs (one per two segments) the
   receiver acknowledges the first data segment alone, which leaves the first flight's last
   segment unpaired: its ACK waits for the next flight. So ``w_0 = IW``, ``w_1 = 2 * IW - 2``,
   ``w_{k+1} = 2 * w_k``. While a flight does not fill the pipe (``w_k * t_seg < F``: the window
   is below the bandwidth-delay product) and data remains after it, it costs ``F``: ``T += F``.
4. Once the window covers the bandwidth-delay product (or holds all remaining data), the link
   stays busy until the last byte: ``T += 8 * W_rest / R``, then the last packet propagates:
   ``T += d``.

No packet is lost (queues never overflow), so there is no recovery time; against ns-3 3.44
(TCP Cubic, drop-free queues, ``docs/network.md``) this reproduces every transfer from 10 kB to
100 MB in the four paper scenarios to 0.01%.

With random loss ``p > 0`` the steady-state rate is capped by the Mathis et al. (1997) bound
``R_p = sqrt(3 / 2) * 8 * MSS / (RTT * sqrt(p))`` and step 4 uses ``min(R, R_p)``; this is a rough
guide only (no retransmission timeouts, not checked against ns-3).

Shared bottleneck (:func:`shared_link_finish_times`): flows that arrive over time share a link of
capacity ``C`` max-min fairly, each also capped by its own access rate (processor sharing with
caps, a fluid model: Massoulie & Roberts, "Bandwidth sharing: objectives and algorithms", 2002).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_INITIAL_WINDOW",
    "DEFAULT_MSS",
    "DEFAULT_WIRE_BYTES_PER_SEGMENT",
    "max_min_rates",
    "shared_link_finish_times",
    "tcp_transfer_time_s",
    "tcp_transfer_phases_s",
    "wire_bytes",
]

DEFAULT_MSS = 1448
DEFAULT_WIRE_BYTES_PER_SEGMENT = 1502
DEFAULT_INITIAL_WINDOW = 10
_SYN_BYTES = 58  # PPP 2 + IP 20 + TCP 20 + options (window scale, SACK-permitted, timestamps) 16
_ACK_BYTES = 54  # PPP 2 + IP 20 + TCP 20 + timestamps option 12


def _check_args(num_bytes: int, rate_mbps: float, latency_ms: float, mss: int, wire: int) -> None:
    if isinstance(num_bytes, bool) or not isinstance(num_bytes, int | np.integer):
        raise TypeError(f"num_bytes must be an int, got {type(num_bytes).__name__}")
    if num_bytes < 0:
        raise ValueError(f"num_bytes must be >= 0, got {num_bytes}")
    if not (math.isfinite(rate_mbps) and rate_mbps > 0):
        raise ValueError(f"rate_mbps must be > 0, got {float(rate_mbps)}")
    if not (math.isfinite(latency_ms) and latency_ms >= 0):
        raise ValueError(f"latency_ms must be >= 0, got {float(latency_ms)}")
    if mss <= 0:
        raise ValueError(f"mss must be > 0, got {mss}")
    if wire < mss:
        raise ValueError(f"wire_bytes_per_segment must be >= mss ({mss}), got {wire}")


def wire_bytes(num_bytes: int, *, mss: int = DEFAULT_MSS,
               wire_bytes_per_segment: int = DEFAULT_WIRE_BYTES_PER_SEGMENT) -> int:
    """Bytes on the wire for ``num_bytes`` of payload: payload plus per-segment headers."""
    num_segments = -(-int(num_bytes) // mss)
    return int(num_bytes) + num_segments * (wire_bytes_per_segment - mss)


def tcp_transfer_phases_s(
    num_bytes: int,
    rate_mbps: float,
    latency_ms: float,
    *,
    reverse_rate_mbps: float | None = None,
    mss: int = DEFAULT_MSS,
    wire_bytes_per_segment: int = DEFAULT_WIRE_BYTES_PER_SEGMENT,
    initial_window: int = DEFAULT_INITIAL_WINDOW,
) -> tuple[float, int, float]:
    """Split a transfer into ``(setup_s, rest_wire_bytes, propagation_s)``.

    ``setup_s`` covers the handshake and slow-start stalls (steps 2-3 of the module docstring),
    after which ``rest_wire_bytes`` stream back to back at line rate and the last packet takes
    ``propagation_s`` to arrive. The total time is ``setup_s + 8 * rest / R + propagation_s``.
    """
    _check_args(num_bytes, rate_mbps, latency_ms, mss, wire_bytes_per_segment)
    if initial_window < 1:
        raise ValueError(f"initial_window must be >= 1, got {initial_window}")
    if reverse_rate_mbps is None:
        reverse_rate_mbps = rate_mbps
    elif not (math.isfinite(reverse_rate_mbps) and reverse_rate_mbps > 0):
        raise ValueError(f"reverse_rate_mbps must be > 0, got {float(reverse_rate_mbps)}")
    if num_bytes == 0:
        return 0.0, 0, 0.0
    fwd_bps, rev_bps = rate_mbps * 1e6, reverse_rate_mbps * 1e6
    rtt_s = 2e-3 * latency_ms
    num_segments = -(-int(num_bytes) // mss)
    seg_s = 8.0 * wire_bytes_per_segment / fwd_bps
    ack_s = 8.0 * _ACK_BYTES / rev_bps
    # step 2: SYN (forward), SYN-ACK (reverse), then the handshake's ACK leads the data.
    setup_s = rtt_s + 8.0 * (_SYN_BYTES + _ACK_BYTES) / fwd_bps + 8.0 * _SYN_BYTES / rev_bps
    # step 3: a flight's first ACK returns one segment time + RTT + ACK time after it began.
    flight_s = seg_s + rtt_s + ack_s
    sent, flight = 0, initial_window
    while sent + flight < num_segments and flight * seg_s < flight_s:
        setup_s += flight_s
        sent += flight
        # Delayed ACKs: the ACK of a flight's last segment is held until the next flight, so the
        # second flight is 2*IW - 2 (first ACK covers one segment); later flights double.
        flight = 2 * flight - 2 if sent == initial_window else 2 * flight
    rest = wire_bytes(num_bytes, mss=mss, wire_bytes_per_segment=wire_bytes_per_segment)
    rest -= sent * wire_bytes_per_segment
    return setup_s, rest, rtt_s / 2


def tcp_transfer_time_s(
    num_bytes: int,
    rate_mbps: float,
    latency_ms: float,
    *,
    reverse_rate_mbps: float | None = None,
    mss: int = DEFAULT_MSS,
    wire_bytes_per_segment: int = DEFAULT_WIRE_BYTES_PER_SEGMENT,
    initial_window: int = DEFAULT_INITIAL_WINDOW,
    loss: float = 0.0,
) -> float:
    """Seconds from ``connect()`` until the receiver holds the last of ``num_bytes``.

    ``rate_mbps`` carries the data, ``reverse_rate_mbps`` (default: the same) the ACKs. See the
    module docstring for the model. ``0`` bytes take ``0.0`` s (nothing is sent).
    Example: 10 MB at 1 Mbps with 50 ms one-way delay takes 83.14 s (``8 * B / R`` alone: 80 s).
    """
    setup_s, rest, prop_s = tcp_transfer_phases_s(
        num_bytes, rate_mbps, latency_ms, reverse_rate_mbps=reverse_rate_mbps, mss=mss,
        wire_bytes_per_segment=wire_bytes_per_segment, initial_window=initial_window,
    )
    if not (0.0 <= loss < 1.0):
        raise ValueError(f"loss must be in [0, 1), got {float(loss)}")
    rate_bps = rate_mbps * 1e6
    if loss > 0 and latency_ms > 0:
        mathis_bps = math.sqrt(1.5) * 8.0 * mss / (2e-3 * latency_ms * math.sqrt(loss))
        rate_bps = min(rate_bps, mathis_bps)
    return setup_s + 8.0 * rest / rate_bps + prop_s


def max_min_rates(caps_bps: np.ndarray, capacity_bps: float) -> np.ndarray:
    """Max-min fair shares of ``capacity_bps`` for flows capped at ``caps_bps`` (water-filling)."""
    caps = np.asarray(caps_bps, dtype=float)
    if caps.size == 0:
        return caps.copy()
    order = np.argsort(caps)
    sorted_caps = caps[order]
    # Flow j (in cap order) is capped iff its cap fits the equal split of what the smaller
    # flows left over: cap_j * (n - j) + sum(caps[:j]) <= C.
    n = caps.size
    before = np.concatenate(([0.0], np.cumsum(sorted_caps)[:-1]))
    capped = sorted_caps * (n - np.arange(n)) + before <= capacity_bps
    num_capped = int(np.argmin(capped)) if not capped.all() else n
    rates = sorted_caps.copy()
    if num_capped < n:
        rates[num_capped:] = (capacity_bps - before[num_capped]) / (n - num_capped)
    out = np.empty(n)
    out[order] = rates
    return out


def shared_link_finish_times(
    start_s: npt.ArrayLike, size_bits: npt.ArrayLike, caps_bps: npt.ArrayLike,
    capacity_bps: float,
) -> np.ndarray:
    """Finish times of fluid flows sharing ``capacity_bps`` max-min fairly under per-flow caps.

    Flow ``i`` becomes active at ``start_s[i]`` with ``size_bits[i]`` to send at no more than
    ``caps_bps[i]``. Event-driven: rates change only when a flow arrives or finishes.
    """
    starts = np.asarray(start_s, dtype=float)
    remaining = np.asarray(size_bits, dtype=float).copy()
    caps = np.asarray(caps_bps, dtype=float)
    finish = np.where(remaining <= 0, starts, np.inf)
    if not (capacity_bps > 0):
        raise ValueError(f"shared link capacity must be > 0 bit/s, got {capacity_bps}")
    now = float(starts.min()) if starts.size else 0.0
    while np.isinf(finish).any():
        active = (starts <= now) & np.isinf(finish)
        pending = starts[(starts > now) & np.isinf(finish)]
        next_arrival = float(pending.min()) if pending.size else math.inf
        if not active.any():
            now = next_arrival
            continue
        rates = max_min_rates(caps[active], capacity_bps)
        to_finish = remaining[active] / rates
        step = min(float(to_finish.min()), next_arrival - now)
        remaining[active] -= rates * step
        now += step
        idx = np.flatnonzero(active)
        done = idx[(to_finish <= step * (1 + 1e-12)) | (remaining[idx] <= 1e-9)]
        remaining[done] = 0.0
        finish[done] = now
    return finish
