"""Flower on GPUs: the simulation backend's client resources and a SuperNode's own device."""

from __future__ import annotations

import pytest
from flwr.common.config import parse_config_args
from flwr.supercore.utils import simulation_config_from_json

from ecolora.client.device import apply_node_device
from ecolora.config import ConfigError, load_config
from ecolora.flower.launch import run_config_args, simulation_config


def test_client_resources_reach_flowers_simulation_config() -> None:
    config = simulation_config(4, num_cpus=2, num_gpus=0.5)
    args = [run_config_args({k: v})[1] for k, v in config.items()]  # the --federation-config values
    parsed = simulation_config_from_json({k.replace("-", "_"): v for k, v in parse_config_args(args).items()})
    assert parsed.num_supernodes == 4
    assert parsed.client_resources_num_cpus == 2
    assert parsed.client_resources_num_gpus == pytest.approx(0.5)


def test_client_resources_are_optional_and_checked() -> None:
    assert simulation_config(3) == {"num-supernodes": 3}
    with pytest.raises(ValueError, match="num_gpus .* must be >= 0, got -1"):
        simulation_config(3, num_gpus=-1)


def test_supernode_device_from_node_config() -> None:
    config = load_config(None, ["train.device=auto"])
    assert apply_node_device(config, {"partition-id": 0}) is config
    moved = apply_node_device(config, {"partition-id": 0, "device": "cuda:1"})
    assert moved.train.device == "cuda:1" and config.train.device == "auto"
    with pytest.raises(ConfigError, match="`train.device` must be auto, cpu, cuda, cuda:N or mps"):
        apply_node_device(config, {"device": "gpu1"})
