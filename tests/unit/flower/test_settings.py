"""Run-config mapping and client sampling parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecolora.config import ConfigError, load_config
from ecolora.flower.settings import find_config_file, resolve_settings, split_overrides
from ecolora.sim.runner import sample_clients

ROOT = Path(__file__).resolve().parents[3]


def test_run_config_keys_map_onto_the_ecolora_config(tmp_path):
    settings = resolve_settings(
        {
            "config": "configs/smoke.yaml",
            "overrides": "method=fedit+ecolora; fed.rounds=2 ;",
            "out-dir": str(tmp_path),
            "round-timeout": 30,
            "node-wait": 5.5,
            "test-corrupt-partition": 1,
            "test-corrupt-mode": "shape",
        },
        search=[ROOT],
    )
    expected = load_config(
        ROOT / "configs" / "smoke.yaml", ["method=fedit+ecolora", "fed.rounds=2"]
    )
    assert settings.config == expected
    assert (settings.out_dir, settings.round_timeout_s, settings.node_wait_s) == (
        tmp_path,
        30.0,
        5.5,
    )
    assert (settings.corrupt_partition, settings.corrupt_mode) == (1, "shape")
    assert resolve_settings({}).config == load_config(None)  # no preset: the defaults
    assert split_overrides(" a=1;;b.c=2 ") == ["a=1", "b.c=2"]


def test_run_config_errors_say_what_is_valid(tmp_path):
    with pytest.raises(
        ValueError, match="Unknown run-config key\\(s\\) rounds; valid keys: config, node-wait"
    ):
        resolve_settings({"rounds": 2})
    with pytest.raises(ValueError, match="`config` file 'nope.yaml' not found in"):
        resolve_settings({"config": "nope.yaml"}, search=[tmp_path])
    with pytest.raises(ValueError, match="`config` file /nonexistent/x.yaml does not exist"):
        find_config_file("/nonexistent/x.yaml")
    with pytest.raises(ConfigError, match="Unknown key\\(s\\) fed.roundz"):
        resolve_settings({"overrides": "fed.roundz=2"})
    with pytest.raises(ValueError, match="`round-timeout` must be > 0 seconds, got 0.0"):
        resolve_settings({"round-timeout": 0})
    with pytest.raises(
        ValueError, match="`test-corrupt-mode` must be one of bytes, shape, got 'x'"
    ):
        resolve_settings({"test-corrupt-mode": "x"})


def test_sampling_matches_the_in_process_draw():
    """The ServerApp and run_experiment share sample_clients and the seeded generator."""
    rng, ref = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(3):
        assert sample_clients(rng, 10, 4) == [int(c) for c in ref.choice(10, size=4, replace=False)]


def _app_defaults() -> dict:
    import tomllib
    from flwr.common.config import flatten_dict

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return flatten_dict(pyproject["tool"]["flwr"]["app"]["config"])


def test_flat_run_config_keys_as_flwr_run_passes_them(caplog):
    from flwr.common.config import fuse_dicts, parse_config_args

    from ecolora.flower.settings import config_keys

    defaults = _app_defaults()
    declared = {k for k in defaults if "." in k or k in ("method", "seed")}
    missing = sorted(set(config_keys()) - declared)
    assert not missing, (f"declare {missing} in [tool.flwr.app.config] of pyproject.toml: "
                         "paste the lines `python -m ecolora.flower.settings` prints")
    assert declared <= set(config_keys())
    overrides = parse_config_args(["method='fedit+ecolora' fed.rounds=2 lora.target_modules='q_proj,k_proj'"])
    run_config = fuse_dicts(defaults, overrides)  # what Flower hands the apps
    with caplog.at_level("WARNING", logger="ecolora"):
        settings = resolve_settings(run_config, search=[ROOT])
    want = load_config(ROOT / "configs" / "smoke.yaml",
                       ["method=fedit+ecolora", "fed.rounds=2", "lora.target_modules=[q_proj, k_proj]"])
    assert settings.config == want
    assert "deprecated" not in caplog.text
    assert resolve_settings(defaults, search=[ROOT]).config == load_config(ROOT / "configs" / "smoke.yaml")


def test_overrides_string_still_works_with_a_deprecation_notice(caplog):
    with caplog.at_level("WARNING", logger="ecolora"):
        settings = resolve_settings({"config": "configs/smoke.yaml", "overrides": "fed.rounds=2"}, search=[ROOT])
    assert settings.config.fed.rounds == 2
    assert "run-config `overrides` is deprecated; pass the keys flat" in caplog.text


@pytest.mark.parametrize(("value", "expected"), [(True, True), ("true", True), ("False", False)])
def test_resume_is_a_boolean_run_config_key(value, expected):
    assert resolve_settings({"resume": value}).resume is expected


def test_resume_refuses_a_value_that_is_not_a_boolean():
    with pytest.raises(ValueError, match=r"`resume` must be true or false, got 'yes'."):
        resolve_settings({"resume": "yes"})
