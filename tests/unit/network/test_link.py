"""Link profiles, scenario parsing and per-client assignment."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ecolora.network import (
    SCENARIOS,
    LinkProfile,
    LogNormalProfiles,
    assign_profiles,
    parse_scenario,
    scenario_key,
)


def test_presets_are_the_papers_four_scenarios() -> None:
    assert list(SCENARIOS) == ["0.2/1", "1/5", "2/10", "5/25"]
    for key, profile in SCENARIOS.items():
        up, down = (float(x) for x in key.split("/"))
        assert (profile.uplink_mbps, profile.downlink_mbps) == (up, down)
        assert profile.latency_ms == 50.0 and profile.loss == 0.0
        assert profile.downlink_mbps == 5 * profile.uplink_mbps


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"uplink_mbps": -1.0, "downlink_mbps": 5.0}, r"uplink_mbps must be > 0, got -1\.0"),
        ({"uplink_mbps": 1.0, "downlink_mbps": 0}, r"downlink_mbps must be > 0, got 0\.0"),
        ({"uplink_mbps": math.inf, "downlink_mbps": 1.0}, r"uplink_mbps must be > 0, got inf"),
        ({"uplink_mbps": 1, "downlink_mbps": 5, "latency_ms": -1}, r"latency_ms must be >= 0, got -1\.0"),
        ({"uplink_mbps": 1, "downlink_mbps": 5, "loss": 1.0}, r"loss must be in \[0, 1\), got 1\.0"),
        ({"uplink_mbps": 1, "downlink_mbps": 5, "loss": -0.1}, r"loss must be in \[0, 1\), got -0\.1"),
    ],
)
def test_bad_profiles_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LinkProfile(**kwargs)


def test_non_numeric_rate_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="uplink_mbps must be a number, got str"):
        LinkProfile("1", 5.0)  # type: ignore[arg-type]


def test_parse_scenario_presets_and_custom() -> None:
    assert parse_scenario("1/5") is SCENARIOS["1/5"]
    assert parse_scenario(" 0.2/1 ") is SCENARIOS["0.2/1"]
    assert parse_scenario("3/15") == LinkProfile(3.0, 15.0, 50.0)
    assert parse_scenario("1/5@20ms") == LinkProfile(1.0, 5.0, 20.0)
    assert parse_scenario("0.5 / 2.5 @ 0ms") == LinkProfile(0.5, 2.5, 0.0)
    profile = LinkProfile(2.0, 3.0)
    assert parse_scenario(profile) is profile


@pytest.mark.parametrize("text", ["fast", "1-5", "1/5/7", "", "1/5@20"])
def test_parse_scenario_error_lists_presets(text: str) -> None:
    with pytest.raises(ValueError, match=r"preset \(0\.2/1, 1/5, 2/10, 5/25\); got"):
        parse_scenario(text)


def test_parse_scenario_rejects_zero_rate_with_profile_message() -> None:
    with pytest.raises(ValueError, match=r"uplink_mbps must be > 0, got 0\.0"):
        parse_scenario("0/5")


def test_scenario_key_round_trips() -> None:
    for key, profile in SCENARIOS.items():
        assert scenario_key(profile) == key == profile.key
    custom = LinkProfile(1.0, 5.0, 20.0)
    assert scenario_key(custom) == "1/5@20ms"
    assert parse_scenario(scenario_key(custom)) == custom
    assert scenario_key(LinkProfile(1.0, 5.0, loss=0.01)) == "1/5@50ms~1%"


def test_assign_one_profile_to_everyone() -> None:
    out = assign_profiles([4, 1, 9], "2/10")
    assert out == {4: SCENARIOS["2/10"], 1: SCENARIOS["2/10"], 9: SCENARIOS["2/10"]}


def test_assign_list_is_cycled_by_client_id() -> None:
    spec = ["0.2/1", SCENARIOS["5/25"], "1/5"]
    out = assign_profiles(range(7), spec)
    assert [out[i].key for i in range(7)] == ["0.2/1", "5/25", "1/5"] * 2 + ["0.2/1"]
    # a client's profile does not depend on who else is in the round
    assert assign_profiles([5], spec)[5] == out[5]


def test_lognormal_is_stable_per_client_and_seed() -> None:
    dist = LogNormalProfiles(SCENARIOS["1/5"], sigma=0.5)
    everyone = assign_profiles(range(20), dist, seed=3)
    some = assign_profiles([17, 2], dist, seed=3)
    assert some == {17: everyone[17], 2: everyone[2]}
    assert assign_profiles([17], dist, seed=4)[17] != everyone[17]
    for p in everyone.values():  # one factor for both directions keeps the 1:5 ratio
        assert p.downlink_mbps == pytest.approx(5 * p.uplink_mbps)
        assert p.latency_ms == 50.0


def test_lognormal_spread_matches_sigma() -> None:
    dist = LogNormalProfiles(SCENARIOS["1/5"], sigma=0.5)
    logs = np.log([p.uplink_mbps for p in assign_profiles(range(4000), dist).values()])
    assert abs(logs.mean()) < 0.03
    assert logs.std() == pytest.approx(0.5, abs=0.03)
    flat = assign_profiles(range(5), LogNormalProfiles(SCENARIOS["1/5"], sigma=0.0))
    assert set(flat.values()) == {SCENARIOS["1/5"]}


def test_assign_profiles_errors() -> None:
    with pytest.raises(ValueError, match="client ids must be non-negative integers, got -1"):
        assign_profiles([0, -1], "1/5")
    with pytest.raises(ValueError, match="profile list must not be empty"):
        assign_profiles([0], [])
    with pytest.raises(TypeError, match="profile spec must be a LinkProfile.*got float"):
        assign_profiles([0], 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"sigma must be >= 0, got -1\.0"):
        LogNormalProfiles(SCENARIOS["1/5"], sigma=-1.0)
