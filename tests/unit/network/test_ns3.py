"""ns-3 backend: optional import, clear error without the extra, and the analytic cross-check.

The cross-check tests are marked ``ns3`` and skipped when the ``ns3`` package is missing
(``pip install 'ecolora[ns3]'``). Loading ns-3 and compiling the round driver takes 10-40 s.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from ecolora.network import SCENARIOS, LinkProfile, ns3_backend, round_timing, tcp_transfer_time_s

RECORDS = [
    {"client": 0, "upload_bytes": 3_000_000, "download_bytes": 6_000_000, "compute_s": 12.0},
    {"client": 1, "upload_bytes": 500_000, "download_bytes": 6_000_000, "compute_s": 30.0},
    {"client": 2, "upload_bytes": 1_500_000, "download_bytes": 6_000_000, "compute_s": 2.0},
]


def test_importing_network_does_not_import_ns3() -> None:
    code = "import sys, ecolora.network; print('ns' in sys.modules, 'cppyy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_ns3_backend_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ns3_backend, "_driver", None)
    monkeypatch.setitem(sys.modules, "ns", None)  # makes `from ns import ns` raise ImportError
    with pytest.raises(ImportError, match=r"backend='ns3' needs ns-3: .*pip install 'ecolora\[ns3\]'"):
        round_timing(RECORDS, "1/5", backend="ns3")


def test_socket_buffer_covers_four_bdps() -> None:
    assert ns3_backend.socket_buffer_bytes([SCENARIOS["0.2/1"]]) == 64 * 1024
    # 25 Mbps * 100 ms = 312.5 kB per BDP
    assert ns3_backend.socket_buffer_bytes([SCENARIOS["1/5"], SCENARIOS["5/25"]]) == 1_250_000


# ---- cross-check against ns-3 (needs the extra) -----------------------------------------------

SIZES = [10_000, 100_000, 1_000_000, 10_000_000]


@pytest.mark.ns3
@pytest.mark.parametrize("key", list(SCENARIOS))
def test_analytic_matches_ns3_within_2_percent(key: str) -> None:
    pytest.importorskip("ns")
    p = SCENARIOS[key]
    for rate, reverse in ((p.uplink_mbps, p.downlink_mbps), (p.downlink_mbps, p.uplink_mbps)):
        for size in SIZES:
            sim = ns3_backend.ns3_transfer_time_s(size, rate, p.latency_ms, reverse_rate_mbps=reverse)
            model = tcp_transfer_time_s(size, rate, p.latency_ms, reverse_rate_mbps=reverse)
            assert model == pytest.approx(sim, rel=0.02), (key, rate, size)


@pytest.mark.ns3
def test_ns3_round_matches_analytic_round() -> None:
    pytest.importorskip("ns")
    profiles = {0: SCENARIOS["1/5"], 1: SCENARIOS["2/10"], 2: LinkProfile(0.5, 2.0, 20.0)}
    sim = round_timing(RECORDS, profiles, backend="ns3")
    model = round_timing(RECORDS, profiles)
    assert sim.critical_client == model.critical_client
    assert sim.round_s == pytest.approx(model.round_s, rel=0.02)
    assert sim.comm_s == pytest.approx(model.comm_s, rel=0.02)
    for a, b in zip(sim.per_client, model.per_client, strict=True):
        assert a["compute_s"] == b["compute_s"]
        assert a["download_s"] == pytest.approx(b["download_s"], rel=0.02)
        assert a["upload_s"] == pytest.approx(b["upload_s"], rel=0.02)


@pytest.mark.ns3
def test_ns3_100mb_transfer() -> None:
    pytest.importorskip("ns")
    sim = ns3_backend.ns3_transfer_time_s(100_000_000, 5.0, 50.0, reverse_rate_mbps=1.0)
    model = tcp_transfer_time_s(100_000_000, 5.0, 50.0, reverse_rate_mbps=1.0)
    assert model == pytest.approx(sim, rel=0.02)
    assert sim > 8 * 100_000_000 / 5e6 * 1.03  # headers: 1502 wire bytes per 1448


@pytest.mark.ns3
def test_ns3_shared_server_link_round() -> None:
    # TCP flows sharing a FIFO are not exactly max-min fair, so per-client times differ from
    # the fluid model by up to ~20%; the round time (what the runs report) agrees within ~1%.
    pytest.importorskip("ns")
    profiles = {0: SCENARIOS["1/5"], 1: SCENARIOS["2/10"], 2: LinkProfile(0.5, 2.0, 20.0)}
    for kwargs in ({"server_uplink_mbps": 6.0, "server_downlink_mbps": 2.0},
                   {"server_uplink_mbps": 3.0}):
        sim = round_timing(RECORDS, profiles, backend="ns3", **kwargs)
        model = round_timing(RECORDS, profiles, **kwargs)
        alone = round_timing(RECORDS, profiles)
        assert sim.round_s > alone.round_s * 1.15
        assert sim.round_s == pytest.approx(model.round_s, rel=0.03)
