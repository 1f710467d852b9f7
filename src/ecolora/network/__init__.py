"""Network time model: link profiles, analytic TCP, optional ns-3 backend, round time, plots.

Importing this package never imports ns-3; ``backend="ns3"`` loads it on first use.
"""

from ecolora.network.link import (
    SCENARIOS,
    LinkProfile,
    LogNormalProfiles,
    ProfileDistribution,
    assign_profiles,
    parse_scenario,
    scenario_key,
)
from ecolora.network.ns3_backend import NS3_EXTRA_HINT, ns3_available
from ecolora.network.plots import plot_time_breakdown
from ecolora.network.runs import (
    annotate_metrics,
    read_metrics,
    simulate_run,
    time_rounds,
    time_to_target,
)
from ecolora.network.tcp import tcp_transfer_time_s, wire_bytes
from ecolora.network.timing import BACKENDS, RoundTiming, round_timing

__all__ = [
    "BACKENDS",
    "NS3_EXTRA_HINT",
    "SCENARIOS",
    "LinkProfile",
    "LogNormalProfiles",
    "ProfileDistribution",
    "RoundTiming",
    "annotate_metrics",
    "assign_profiles",
    "ns3_available",
    "parse_scenario",
    "plot_time_breakdown",
    "read_metrics",
    "round_timing",
    "scenario_key",
    "simulate_run",
    "tcp_transfer_time_s",
    "time_rounds",
    "time_to_target",
    "wire_bytes",
]
