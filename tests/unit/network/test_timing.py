"""Synchronous round time: download + compute + upload per client, slowest client wins."""

from __future__ import annotations

import pytest

from ecolora.network import SCENARIOS, LinkProfile, round_timing, tcp_transfer_time_s
from ecolora.network.tcp import tcp_transfer_phases_s

P15 = SCENARIOS["1/5"]


def _client_total(rec: dict, p: LinkProfile, scale: float = 1.0) -> tuple[float, float]:
    down = tcp_transfer_time_s(
        rec["download_bytes"], p.downlink_mbps, p.latency_ms, reverse_rate_mbps=p.uplink_mbps
    )
    up = tcp_transfer_time_s(
        rec["upload_bytes"], p.uplink_mbps, p.latency_ms, reverse_rate_mbps=p.downlink_mbps
    )
    return down + up, down + up + scale * rec["compute_s"]


RECORDS = [
    {"client": 3, "upload_bytes": 4_000_000, "download_bytes": 8_000_000, "compute_s": 10.0},
    {"client": 7, "upload_bytes": 500_000, "download_bytes": 8_000_000, "compute_s": 55.0},
    {"client": 9, "upload_bytes": 1_000_000, "download_bytes": 8_000_000, "compute_s": 20.0},
]


def test_round_is_the_slowest_client() -> None:
    timing = round_timing(RECORDS, P15)
    totals = {r["client"]: _client_total(r, P15)[1] for r in RECORDS}
    assert timing.round_s == pytest.approx(max(totals.values()), rel=1e-12)
    # client 7 computes longest and is slowest overall, though client 3 communicates most
    assert timing.critical_client == 7
    comm_7, total_7 = _client_total(RECORDS[1], P15)
    assert timing.comm_s == pytest.approx(comm_7, rel=1e-12)
    assert timing.comm_s == pytest.approx(timing.round_s - 55.0, rel=1e-12)
    assert timing.compute_s == 55.0
    assert timing.download_s + timing.compute_s + timing.upload_s == pytest.approx(total_7)
    assert [row["client"] for row in timing.per_client] == [3, 7, 9]
    for rec, row in zip(RECORDS, timing.per_client, strict=True):
        assert row["total_s"] == pytest.approx(_client_total(rec, P15)[1], rel=1e-12)
        assert row["total_s"] == pytest.approx(row["download_s"] + row["compute_s"] + row["upload_s"])


def test_compute_scale_changes_the_critical_client() -> None:
    timing = round_timing(RECORDS, P15, compute_scale=0.1)  # a 10x faster device
    totals = {r["client"]: _client_total(r, P15, 0.1)[1] for r in RECORDS}
    assert timing.critical_client == 3 == max(totals, key=totals.get)
    assert timing.round_s == pytest.approx(totals[3], rel=1e-12)
    assert timing.compute_s == pytest.approx(1.0)
    zero = round_timing(RECORDS, P15, compute_scale=0.0)
    assert zero.comm_s == zero.round_s


def test_heterogeneous_profiles() -> None:
    profiles = {3: SCENARIOS["5/25"], 7: SCENARIOS["5/25"], 9: SCENARIOS["0.2/1"]}
    timing = round_timing(RECORDS, profiles)
    assert timing.critical_client == 9
    assert timing.round_s == pytest.approx(_client_total(RECORDS[2], SCENARIOS["0.2/1"])[1])
    assert round_timing(RECORDS, "1/5").round_s == round_timing(RECORDS, P15).round_s


def test_uncongested_shared_link_changes_nothing() -> None:
    alone = round_timing(RECORDS, P15)
    shared = round_timing(RECORDS, P15, server_uplink_mbps=1e4, server_downlink_mbps=1e4)
    assert shared.round_s == pytest.approx(alone.round_s, rel=1e-9)
    for a, b in zip(alone.per_client, shared.per_client, strict=True):
        assert b["download_s"] == pytest.approx(a["download_s"], rel=1e-9)
        assert b["upload_s"] == pytest.approx(a["upload_s"], rel=1e-9)


def test_shared_server_uplink_splits_downloads_fairly() -> None:
    # Three 8 MB downloads through a 5 Mbps server uplink (each client could take 5 Mbps):
    # after its own set-up and slow start, each streams the rest at 5/3 Mbps.
    timing = round_timing(RECORDS, P15, server_uplink_mbps=5.0)
    setup, rest, prop = tcp_transfer_phases_s(8_000_000, 5.0, 50.0, reverse_rate_mbps=1.0)
    assert rest > 0.95 * (8_000_000 + 5525 * 54)  # 5525 segments, most of them after slow start
    downs = [row["download_s"] for row in timing.per_client]
    assert downs == pytest.approx([setup + 3 * 8 * rest / 5e6 + prop] * 3, rel=1e-9)
    # uploads do not overlap the (unset) server downlink, so they are as without sharing
    for rec, row in zip(RECORDS, timing.per_client, strict=True):
        up = tcp_transfer_time_s(rec["upload_bytes"], 1.0, 50.0, reverse_rate_mbps=5.0)
        assert row["upload_s"] == pytest.approx(up, rel=1e-9)


def test_empty_round_and_zero_bytes() -> None:
    empty = round_timing([], P15)
    assert (empty.round_s, empty.comm_s, empty.per_client) == (0.0, 0.0, [])
    idle = round_timing([{"client": 0, "upload_bytes": 0, "download_bytes": 0, "compute_s": 2.5}], P15)
    assert (idle.round_s, idle.comm_s) == (2.5, 0.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "omnet"}, "backend must be one of analytic, ns3, got 'omnet'"),
        ({"compute_scale": -1.0}, r"compute_scale must be >= 0, got -1\.0"),
        ({"server_uplink_mbps": 0.0}, r"server_uplink_mbps must be > 0 or None, got 0\.0"),
        ({"server_downlink_mbps": -2}, "server_downlink_mbps must be > 0 or None, got -2"),
    ],
)
def test_bad_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        round_timing(RECORDS, P15, **kwargs)


def test_bad_records() -> None:
    with pytest.raises(ValueError, match=r"no link profile for clients \[7, 9\]"):
        round_timing(RECORDS, {3: P15})
    with pytest.raises(ValueError, match=r"missing \['download_bytes'\]"):
        round_timing([{"client": 1, "upload_bytes": 5}], P15)
    with pytest.raises(ValueError, match="byte counts must be >= 0"):
        round_timing([{"client": 1, "upload_bytes": -5, "download_bytes": 0}], P15)
    with pytest.raises(ValueError, match="compute_s must be >= 0, got -1.0 for client 1"):
        round_timing([{"client": 1, "upload_bytes": 5, "download_bytes": 0, "compute_s": -1}], P15)
