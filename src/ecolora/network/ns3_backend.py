"""Optional ns-3 backend: packet-level simulation of one synchronous round.

Needs the ``ns3`` extra (``pip install 'ecolora[ns3]'``, PyPI ``ns3==3.44.post0``, cppyy
bindings). Nothing here imports ns-3 until a simulation is requested; the first call loads ns-3
and JIT-compiles the round driver below (about 10-40 s, once per process).

Topology (one simulation per round): a server node and one node per sampled client, each client
on its own point-to-point link whose server-side device sends at the client's downlink rate and
whose client-side device sends at its uplink rate, with the profile's one-way delay (and, for
``loss > 0``, a per-packet ``RateErrorModel`` on both receiving devices). With a shared server
link, the server instead hangs off a router through one point-to-point link of
``server_uplink_mbps`` (server -> router) and ``server_downlink_mbps`` (router -> server),
no delay; an unset direction runs at 100 Gbps.

Traffic: at t = 0 the server starts a ``BulkSend`` (TCP Cubic, MSS 1448, initial window 10,
timestamps, delayed ACKs every 2 segments) to a ``PacketSink`` on every client. When client ``i``
has received its last byte it waits ``compute_s[i]`` of simulated time and starts its upload
``BulkSend`` to the server. Socket buffers are 4 bandwidth-delay products of the round's fastest
link (:func:`socket_buffer_bytes`), so the window can fill the pipe but not grow without bound.

Queues: drop-tail device queues of ``queue_packets`` packets, no queue disc. The default
(:data:`DEFAULT_QUEUE_PACKETS`, larger than any window) never drops, which is the analytic model's
assumption; ``queue_packets=100`` (ns-3's default) shows what slow-start overshoot losses cost
(``docs/network.md``: up to +47% at 10 MB on 25 Mbps).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ecolora.network.link import SCENARIOS, LinkProfile, parse_scenario
from ecolora.network.tcp import tcp_transfer_time_s

__all__ = [
    "CROSS_CHECK_SIZES",
    "DEFAULT_QUEUE_PACKETS",
    "NS3_EXTRA_HINT",
    "format_cross_check",
    "ns3_available",
    "ns3_cross_check",
    "ns3_round_times",
    "ns3_transfer_time_s",
    "socket_buffer_bytes",
]

logger = logging.getLogger("ecolora")

NS3_EXTRA_HINT = "install the ns-3 extra: pip install 'ecolora[ns3]' (PyPI ns3==3.44.post0)"
_UNLIMITED_MBPS = 100_000.0
DEFAULT_QUEUE_PACKETS = 1_000_000  # deep enough that no packet is ever dropped (see docstring)
_MIN_BUFFER_BYTES = 64 * 1024
_BUFFER_BDPS = 4


def socket_buffer_bytes(links: Sequence[LinkProfile]) -> int:
    """TCP send/receive buffer for a round: 4 bandwidth-delay products of its fastest link.

    Large enough that the window never limits throughput, small enough to bound what waits in
    the queues (and the simulation's cost); Linux receive-buffer autotuning behaves similarly.
    """
    bdp = max(max(p.uplink_mbps, p.downlink_mbps) * 1e6 / 8 * 2e-3 * p.latency_ms for p in links)
    return int(max(_MIN_BUFFER_BYTES, math.ceil(_BUFFER_BDPS * bdp)))

_CPP = r"""
#include "ns3/core-module.h"
#include "ns3/network-module.h"
#include "ns3/internet-module.h"
#include "ns3/point-to-point-module.h"
#include "ns3/applications-module.h"
#include "ns3/traffic-control-module.h"
#include <vector>

namespace ecolora_ns3 {
using namespace ns3;

struct Flow {
    Ptr<Node> src;
    Address dst;
    uint64_t bytes = 0;
    double delay_s = 0;   // wait after the trigger before starting
    int next = -1;        // flow started when this one completes
    double start_s = -1, end_s = -1;
    uint64_t received = 0;
};

static std::vector<Flow> g_flows;
static int g_pending = 0;

static void StartFlow(int i);

static void Complete(int i) {
    Flow& f = g_flows[i];
    f.end_s = Simulator::Now().GetSeconds();
    if (f.next >= 0) {
        Simulator::Schedule(Seconds(g_flows[f.next].delay_s), &StartFlow, f.next);
    }
    if (--g_pending == 0) {
        Simulator::Stop();
    }
}

static void OnRx(int i, Ptr<const Packet> packet, const Address& from) {
    Flow& f = g_flows[i];
    f.received += packet->GetSize();
    if (f.end_s < 0 && f.received >= f.bytes) {
        Complete(i);
    }
}

static void StartFlow(int i) {
    Flow& f = g_flows[i];
    f.start_s = Simulator::Now().GetSeconds();
    if (f.bytes == 0) {
        Complete(i);
        return;
    }
    BulkSendHelper bulk("ns3::TcpSocketFactory", f.dst);
    bulk.SetAttribute("MaxBytes", UintegerValue(f.bytes));
    bulk.SetAttribute("SendSize", UintegerValue(1448 * 8));
    ApplicationContainer app = bulk.Install(f.src);
    app.Start(Seconds(0));
}

static void SetLinkRates(NetDeviceContainer& devs, double a_to_b_mbps, double b_to_a_mbps) {
    devs.Get(0)->SetAttribute("DataRate", DataRateValue(DataRate(uint64_t(a_to_b_mbps * 1e6))));
    devs.Get(1)->SetAttribute("DataRate", DataRateValue(DataRate(uint64_t(b_to_a_mbps * 1e6))));
}

static void AddLoss(NetDeviceContainer& devs, double loss) {
    if (loss <= 0) return;
    for (uint32_t k = 0; k < 2; ++k) {
        Ptr<RateErrorModel> em = CreateObject<RateErrorModel>();
        em->SetAttribute("ErrorUnit", StringValue("ERROR_UNIT_PACKET"));
        em->SetAttribute("ErrorRate", DoubleValue(loss));
        devs.Get(k)->SetAttribute("ReceiveErrorModel", PointerValue(em));
    }
}

// Returns [down_start, down_end, up_start, up_end] per client.
std::vector<double> RunRound(const std::vector<double>& down_bytes,
                             const std::vector<double>& up_bytes,
                             const std::vector<double>& downlink_mbps,
                             const std::vector<double>& uplink_mbps,
                             const std::vector<double>& latency_ms,
                             const std::vector<double>& loss,
                             const std::vector<double>& compute_s,
                             double server_up_mbps, double server_down_mbps,
                             uint32_t buffer_bytes, uint32_t queue_packets, uint32_t seed) {
    const size_t n = down_bytes.size();
    RngSeedManager::SetSeed(seed);
    RngSeedManager::SetRun(1);
    Ipv4AddressGenerator::Reset();
    Config::SetDefault("ns3::TcpL4Protocol::SocketType", TypeIdValue(TcpCubic::GetTypeId()));
    Config::SetDefault("ns3::TcpSocket::SegmentSize", UintegerValue(1448));
    Config::SetDefault("ns3::TcpSocket::InitialCwnd", UintegerValue(10));
    Config::SetDefault("ns3::TcpSocket::DelAckCount", UintegerValue(2));
    Config::SetDefault("ns3::TcpSocket::SndBufSize", UintegerValue(buffer_bytes));
    Config::SetDefault("ns3::TcpSocket::RcvBufSize", UintegerValue(buffer_bytes));

    Ptr<Node> server = CreateObject<Node>();
    NodeContainer clients;
    clients.Create(n);
    NodeContainer all(server);
    all.Add(clients);
    bool shared = server_up_mbps > 0 || server_down_mbps > 0;
    Ptr<Node> hub = server;
    InternetStackHelper stack;
    stack.Install(all);
    Ipv4AddressHelper address;
    address.SetBase("10.0.0.0", "255.255.255.252");
    Ipv4Address server_addr;
    PointToPointHelper p2p;
    p2p.SetQueue("ns3::DropTailQueue<Packet>", "MaxSize",
                 QueueSizeValue(QueueSize(QueueSizeUnit::PACKETS, queue_packets)));
    if (shared) {
        hub = CreateObject<Node>();
        stack.Install(hub);
        p2p.SetChannelAttribute("Delay", TimeValue(Seconds(0)));
        NetDeviceContainer devs = p2p.Install(server, hub);
        SetLinkRates(devs, server_up_mbps > 0 ? server_up_mbps : 1e5,
                     server_down_mbps > 0 ? server_down_mbps : 1e5);
        server_addr = address.Assign(devs).GetAddress(0);
        address.NewNetwork();
    }
    std::vector<Ipv4Address> client_addr(n);
    for (size_t i = 0; i < n; ++i) {
        p2p.SetChannelAttribute("Delay", TimeValue(MilliSeconds(latency_ms[i])));
        NetDeviceContainer devs = p2p.Install(hub, clients.Get(i));
        SetLinkRates(devs, downlink_mbps[i], uplink_mbps[i]);
        AddLoss(devs, loss[i]);
        Ipv4InterfaceContainer ifs = address.Assign(devs);
        if (!shared && i == 0) server_addr = ifs.GetAddress(0);
        client_addr[i] = ifs.GetAddress(1);
        address.NewNetwork();
    }
    // Drop-tail device queues only: remove the default queue discs installed with addresses.
    TrafficControlHelper tch;
    for (uint32_t k = 0; k < NodeList::GetNNodes(); ++k) {
        Ptr<Node> node = NodeList::GetNode(k);
        for (uint32_t d = 0; d < node->GetNDevices(); ++d) {
            Ptr<NetDevice> dev = node->GetDevice(d);
            if (DynamicCast<PointToPointNetDevice>(dev)) tch.Uninstall(dev);
        }
    }
    Ipv4GlobalRoutingHelper::PopulateRoutingTables();

    g_flows.assign(2 * n, Flow());
    g_pending = int(2 * n);
    for (size_t i = 0; i < n; ++i) {
        uint16_t port = 10000 + i;
        for (int dir = 0; dir < 2; ++dir) {
            Ptr<Node> dst_node = dir == 0 ? clients.Get(i) : server;
            Ipv4Address dst_ip = dir == 0 ? client_addr[i] : server_addr;
            PacketSinkHelper sink("ns3::TcpSocketFactory",
                                  InetSocketAddress(Ipv4Address::GetAny(), port));
            ApplicationContainer app = sink.Install(dst_node);
            app.Start(Seconds(0));
            int idx = int(2 * i + dir);
            app.Get(0)->TraceConnectWithoutContext("Rx", MakeBoundCallback(&OnRx, idx));
            Flow& f = g_flows[idx];
            f.src = dir == 0 ? server : clients.Get(i);
            f.dst = InetSocketAddress(dst_ip, port);
            f.bytes = uint64_t(dir == 0 ? down_bytes[i] : up_bytes[i]);
            f.delay_s = dir == 0 ? 0.0 : compute_s[i];
            f.next = dir == 0 ? idx + 1 : -1;
        }
        Simulator::Schedule(Seconds(0), &StartFlow, int(2 * i));
    }
    Simulator::Run();
    std::vector<double> out;
    for (const Flow& f : g_flows) {
        out.push_back(f.start_s);
        out.push_back(f.end_s);
    }
    g_flows.clear();
    Simulator::Destroy();
    return out;
}
}  // namespace ecolora_ns3
"""

_driver: Any = None


def ns3_available() -> bool:
    """Whether the ns-3 Python bindings (module ``ns``) can be found, without importing them."""
    return importlib.util.find_spec("ns") is not None


def _load_driver() -> Any:
    """Import ns-3 and compile the round driver once per process."""
    global _driver
    if _driver is None:
        try:
            from ns import ns
        except ImportError as exc:
            raise ImportError(f"backend='ns3' needs ns-3: {NS3_EXTRA_HINT}") from exc
        logger.info("compiling the ns-3 round driver (once per process)")
        ns.cppyy.cppdef(_CPP)
        _driver = ns.cppyy.gbl.ecolora_ns3
    return _driver


def ns3_round_times(
    transfers: Sequence[tuple[int, int]],
    links: Sequence[LinkProfile],
    compute_s: Sequence[float] | np.ndarray,
    *,
    server_uplink_mbps: float | None = None,
    server_downlink_mbps: float | None = None,
    seed: int = 1,
    queue_packets: int = DEFAULT_QUEUE_PACKETS,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate one round in ns-3; returns ``(download_s, upload_s)`` per client.

    ``transfers[i] = (download_bytes, upload_bytes)`` for client ``i`` with link ``links[i]``.
    ``download_s`` runs from the round start to the last downloaded byte; ``upload_s`` from the
    upload's start (download end + compute) to the last uploaded byte at the server.
    """
    driver = _load_driver()
    from ns import ns

    vec = ns.cppyy.gbl.std.vector["double"]

    def as_vec(values: Sequence[float]) -> Any:
        return vec([float(v) for v in values])

    if len(transfers) != len(links) or len(links) != len(compute_s):
        raise ValueError("transfers, links and compute_s must have one entry per client")
    out = driver.RunRound(
        as_vec([t[0] for t in transfers]), as_vec([t[1] for t in transfers]),
        as_vec([p.downlink_mbps for p in links]), as_vec([p.uplink_mbps for p in links]),
        as_vec([p.latency_ms for p in links]), as_vec([p.loss for p in links]),
        as_vec(list(compute_s)),
        float(server_uplink_mbps or (_UNLIMITED_MBPS if server_downlink_mbps else 0.0)),
        float(server_downlink_mbps or (_UNLIMITED_MBPS if server_uplink_mbps else 0.0)),
        socket_buffer_bytes(links), int(queue_packets), seed,
    )
    times = np.array(list(out), dtype=float).reshape(len(links), 2, 2)  # (client, dir, start/end)
    if (times < 0).any():
        raise RuntimeError("ns-3 round ended before every transfer completed")
    download_s = times[:, 0, 1]
    upload_s = times[:, 1, 1] - times[:, 1, 0]
    return download_s, upload_s


def ns3_transfer_time_s(
    num_bytes: int, rate_mbps: float, latency_ms: float, *, reverse_rate_mbps: float | None = None,
    loss: float = 0.0,
    queue_packets: int = DEFAULT_QUEUE_PACKETS,
) -> float:
    """Time of one TCP bulk transfer in ns-3 (connect to last byte received).

    The data flows at ``rate_mbps``; ACKs return at ``reverse_rate_mbps`` (default: the same).
    The ns-3 counterpart of :func:`ecolora.network.tcp.tcp_transfer_time_s`.
    """
    if not (math.isfinite(rate_mbps) and rate_mbps > 0):
        raise ValueError(f"rate_mbps must be > 0, got {float(rate_mbps)}")
    link = LinkProfile(
        uplink_mbps=reverse_rate_mbps if reverse_rate_mbps is not None else rate_mbps,
        downlink_mbps=rate_mbps, latency_ms=latency_ms, loss=loss,
    )
    download_s, _ = ns3_round_times(
        [(int(num_bytes), 0)], [link], [0.0], queue_packets=queue_packets
    )
    return float(download_s[0])


CROSS_CHECK_SIZES = (10_000, 100_000, 1_000_000, 10_000_000, 100_000_000)


def ns3_cross_check(
    sizes: Sequence[int] = CROSS_CHECK_SIZES,
    scenarios: Sequence[str] | None = None,
    *,
    queue_packets: int = DEFAULT_QUEUE_PACKETS,
) -> list[dict[str, Any]]:
    """Time single transfers with ns-3 and the analytic model, for both directions of each scenario.

    Rows: ``scenario``, ``direction`` (``up``: client -> server at the uplink rate, ACKs on the
    downlink; ``down``: the reverse), ``rate_mbps``, ``num_bytes``, ``ns3_s``, ``analytic_s``,
    ``rel_err`` (analytic / ns-3 - 1) and ``wall_s`` (seconds the ns-3 run took).
    """
    rows = []
    for key in scenarios if scenarios is not None else list(SCENARIOS):
        p = parse_scenario(key)
        for direction, rate, reverse in (
            ("up", p.uplink_mbps, p.downlink_mbps), ("down", p.downlink_mbps, p.uplink_mbps)
        ):
            for num_bytes in sizes:
                start = time.perf_counter()
                sim = ns3_transfer_time_s(
                    num_bytes, rate, p.latency_ms, reverse_rate_mbps=reverse,
                    queue_packets=queue_packets,
                )
                wall = time.perf_counter() - start
                model = tcp_transfer_time_s(num_bytes, rate, p.latency_ms, reverse_rate_mbps=reverse)
                rows.append({
                    "scenario": key, "direction": direction, "rate_mbps": rate,
                    "num_bytes": int(num_bytes), "ns3_s": sim, "analytic_s": model,
                    "rel_err": model / sim - 1.0, "wall_s": wall,
                })
                logger.info("%s %s %d B: ns-3 %.4f s, analytic %.4f s (%.1f s wall)",
                            key, direction, num_bytes, sim, model, wall)
    return rows


def format_cross_check(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of :func:`ns3_cross_check` rows."""
    lines = [
        "| scenario | direction | rate (Mbps) | bytes | ns-3 (s) | analytic (s) | analytic/ns-3 - 1 "
        "| ns-3 wall (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['direction']} | {r['rate_mbps']:g} | {r['num_bytes']:,} "
            f"| {r['ns3_s']:.4f} | {r['analytic_s']:.4f} | {100 * r['rel_err']:+.2f}% "
            f"| {r['wall_s']:.1f} |"
        )
    return "\n".join(lines)
