"""Analytic TCP model against hand-computed cases, and the shared-link fluid model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecolora.network.tcp import (
    max_min_rates,
    shared_link_finish_times,
    tcp_transfer_phases_s,
    tcp_transfer_time_s,
    wire_bytes,
)

SYN, ACK = 58, 54  # wire bytes of a SYN / SYN-ACK and of a pure ACK (timestamps on)


def test_wire_bytes_exact_counts() -> None:
    assert wire_bytes(0) == 0
    assert wire_bytes(1) == 1 + 54
    assert wire_bytes(1448) == 1502
    assert wire_bytes(1449) == 1449 + 2 * 54
    assert wire_bytes(10_000_000) == 10_000_000 + 6907 * 54


def test_zero_bytes_take_no_time() -> None:
    assert tcp_transfer_time_s(0, 1.0, 50.0) == 0.0


def test_one_byte_is_latency_dominated() -> None:
    # handshake RTT + SYN, ACK, SYN-ACK serialization + one 55-byte packet + one-way delay
    rate = 1e6
    expected = 0.1 + 8 * (SYN + ACK) / rate + 8 * SYN / rate + 8 * 55 / rate + 0.05
    assert tcp_transfer_time_s(1, 1.0, 50.0) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.15180, abs=1e-5)


def test_10kb_fits_the_initial_window() -> None:
    # 7 segments < IW 10: no slow-start stall; ACK path at 0.2 Mbps (the 0.2/1 download).
    data = 10_000 + 7 * 54
    expected = 0.1 + 8 * (SYN + ACK) / 1e6 + 8 * SYN / 0.2e6 + 8 * data / 1e6 + 0.05
    got = tcp_transfer_time_s(10_000, 1.0, 50.0, reverse_rate_mbps=0.2)
    assert got == pytest.approx(expected, rel=1e-12)
    assert got == pytest.approx(0.23624, abs=1e-5)


def test_10mb_at_1mbps_is_bandwidth_dominated() -> None:
    # IW already covers the BDP (10 * 12.016 ms > 112.4 ms), so no stall: the example.
    data = 10_000_000 + 6907 * 54
    expected = 0.1 + 8 * (SYN + ACK + SYN) / 1e6 + 8 * data / 1e6 + 0.05
    got = tcp_transfer_time_s(10_000_000, 1.0, 50.0)
    assert got == pytest.approx(expected, rel=1e-12)
    assert got == pytest.approx(83.135, abs=1e-3)
    assert 80.0 < got < 83.2  # > bytes*8/rate; ns-3 with a 100-packet queue: 83.21 s


def test_slow_start_stalls_by_hand() -> None:
    # 100 KB = 70 segments at 25 Mbps: flights 10, 18, 36 each stall one flight time
    # (t_seg + RTT + t_ack), then the last 6 segments stream.
    t_seg = 8 * 1502 / 25e6
    flight = t_seg + 0.1 + 8 * ACK / 25e6
    rest = (100_000 + 70 * 54) - 64 * 1502
    setup, rest_bytes, prop = tcp_transfer_phases_s(100_000, 25.0, 50.0)
    assert rest_bytes == rest
    assert setup == pytest.approx(0.1 + 8 * (2 * SYN + ACK) / 25e6 + 3 * flight, rel=1e-12)
    assert prop == 0.05
    expected = setup + 8 * rest / 25e6 + 0.05
    assert tcp_transfer_time_s(100_000, 25.0, 50.0) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.45400, abs=1e-5)


def test_large_transfer_approaches_wire_rate() -> None:
    got = tcp_transfer_time_s(100_000_000, 5.0, 50.0)
    wire_only = 8 * wire_bytes(100_000_000) / 5e6
    assert wire_only < got < wire_only * 1.005


def test_zero_latency_is_pure_serialization() -> None:
    got = tcp_transfer_time_s(1_000_000, 2.0, 0.0)
    assert got == pytest.approx(8 * (wire_bytes(1_000_000) + 2 * SYN + ACK) / 2e6, rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    num_bytes=st.integers(1, 200_000_000),
    extra=st.integers(1, 5_000_000),
    rate=st.floats(0.05, 1000.0),
    latency=st.floats(0.0, 500.0),
)
def test_monotone_in_size_rate_and_latency(
    num_bytes: int, extra: int, rate: float, latency: float
) -> None:
    base = tcp_transfer_time_s(num_bytes, rate, latency)
    assert tcp_transfer_time_s(num_bytes + extra, rate, latency) > base
    assert tcp_transfer_time_s(num_bytes, rate * 1.5, latency) < base
    assert tcp_transfer_time_s(num_bytes, rate, latency + 10.0) > base
    assert base >= 8 * num_bytes / (rate * 1e6) + 3e-3 * latency


def test_loss_caps_rate_by_mathis() -> None:
    # p = 1%, RTT 100 ms: sqrt(1.5) * 8 * 1448 / (0.1 * 0.1) = 1.4187 Mbps < 25 Mbps
    setup, rest, prop = tcp_transfer_phases_s(10_000_000, 25.0, 50.0)
    mathis_bps = math.sqrt(1.5) * 8 * 1448 / 0.01
    got = tcp_transfer_time_s(10_000_000, 25.0, 50.0, loss=0.01)
    assert got == pytest.approx(setup + 8 * rest / mathis_bps + prop, rel=1e-12)
    assert tcp_transfer_time_s(10_000_000, 0.2, 50.0, loss=0.01) == pytest.approx(
        tcp_transfer_time_s(10_000_000, 0.2, 50.0)
    )  # Mathis bound above the line rate: no effect


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((-1, 1.0, 50.0), {}, ValueError, "num_bytes must be >= 0, got -1"),
        ((1.5, 1.0, 50.0), {}, TypeError, "num_bytes must be an int, got float"),
        ((10, 0.0, 50.0), {}, ValueError, r"rate_mbps must be > 0, got 0\.0"),
        ((10, 1.0, -5.0), {}, ValueError, r"latency_ms must be >= 0, got -5\.0"),
        ((10, 1.0, 5.0), {"reverse_rate_mbps": -1.0}, ValueError, "reverse_rate_mbps must be > 0"),
        ((10, 1.0, 5.0), {"wire_bytes_per_segment": 100}, ValueError, r"must be >= mss \(1448\)"),
        ((10, 1.0, 5.0), {"initial_window": 0}, ValueError, "initial_window must be >= 1, got 0"),
        ((10, 1.0, 5.0), {"loss": 1.0}, ValueError, r"loss must be in \[0, 1\)"),
    ],
)
def test_bad_arguments(args: tuple, kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        tcp_transfer_time_s(*args, **kwargs)


def test_max_min_rates_by_hand() -> None:
    # C = 12 over caps 1, 5, 2, 10: the capped flows take 1 and 2, the others split 9.
    assert max_min_rates(np.array([1.0, 5.0, 2.0, 10.0]), 12.0) == pytest.approx([1, 4.5, 2, 4.5])
    assert max_min_rates(np.array([1.0, 2.0]), 100.0) == pytest.approx([1, 2])
    assert max_min_rates(np.array([4.0, 4.0, 4.0]), 6.0) == pytest.approx([2, 2, 2])
    assert max_min_rates(np.array([]), 6.0).size == 0


def test_shared_link_finish_times_by_hand() -> None:
    # Two 10-bit flows share 10 bit/s from t=0; a third arrives at t=1 when each has 5 left:
    # three-way split until the first two finish at 2.5; the third then has 5 bits, done at 3.
    got = shared_link_finish_times([0, 0, 1], [10, 10, 10], [100, 100, 100], 10.0)
    assert got == pytest.approx([2.5, 2.5, 3.0])
    # caps bind: one flow capped at 2 bit/s, the other takes the remaining 8
    assert shared_link_finish_times([0, 0], [8, 8], [2, 100], 10.0) == pytest.approx([4.0, 1.0])
    # idle gap before a late arrival, and an empty flow finishing at its start
    assert shared_link_finish_times([0, 5, 2], [10, 10, 0], [10, 10, 10], 10.0) == pytest.approx(
        [1.0, 6.0, 2.0]
    )
