"""The method registry (ecolora.methods): lookups, errors, and a method added from outside."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from strategies.fakes import lora_template
from typer.testing import CliRunner

from ecolora.cli import app
from ecolora.config import ConfigError, load_config
from ecolora.methods import (
    MethodSpec,
    get_method,
    method_help,
    method_names,
    parse_method,
    register_method,
    unregister_method,
)
from ecolora.sim import get_runner, run_experiment
from ecolora.sim.async_runner import run_async
from ecolora.sim.hier_runner import run_hierarchical
from ecolora.sim.sync_runner import run_sync
from ecolora.strategies import FedIT, build_strategy
from ecolora.strategies.fedbuff import FedBuffEcoLoRA

ROOT = Path(__file__).resolve().parents[2]


def test_builtin_names_and_parsing():
    assert method_names() == ["fedit", "ffa", "flora", "flasc", "hierfedlora", "fedbuff"]
    assert "flasc+ecolora" not in method_names(with_ecolora=True)
    parsed = parse_method("fedbuff+ecolora")
    assert (parsed.spec.name, parsed.compressed, parsed.name, parsed.spec.loop) == ("fedbuff", True, "fedbuff+ecolora", "async")
    assert "hierfedlora (also hierfedlora+ecolora): HierFedLoRA" in method_help()


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ("fedavg", r"Unknown method 'fedavg'; known: fedit, fedit\+ecolora, ffa"),
        ("fedit+zip", r"the wrapper must be \+ecolora, got 'fedit\+zip'."),
        ("flasc+ecolora", r"EcoLoRA does not apply to flasc, so 'flasc\+ecolora' is not a method; known: fedit"),
    ],
)
def test_parse_errors_list_the_known_names(method, message):
    with pytest.raises(ValueError, match=message):
        parse_method(method)


def test_registry_refuses_duplicates_and_bad_names():
    with pytest.raises(ValueError, match="Method 'fedit' is already registered; pick another name."):
        register_method(MethodSpec("fedit", FedIT))
    with pytest.raises(ValueError, match=r"A method name must be non-empty, without '\+' or spaces, got 'a\+b'."):
        MethodSpec("a+b", FedIT)
    with pytest.raises(ValueError, match="Unknown method 'nope'"):
        unregister_method("nope")


def test_strategies_and_loops_come_from_the_specs():
    assert type(build_strategy(load_config(None, ["method=fedbuff+ecolora"]), lora_template())) is FedBuffEcoLoRA
    assert get_runner(load_config(None, ["method=fedit"])) is run_sync
    assert get_runner(load_config(None, ["method=hierfedlora"])) is run_hierarchical
    assert get_runner(load_config(None, ["method=fedbuff"])) is run_async
    assert get_method("flora").section == "flora" and not get_method("flora").segments


# ---- a method added from outside: one strategy class, one registration -------------------------
class HalfStep(FedIT):
    """FedAvg with server learning rate 1/2: P <- P + (mean_i P_i - P) / 2."""

    name = "halfstep"

    def fold_end(self, server_round: int) -> dict[str, Any]:
        previous = self.global_state
        super().fold_end(server_round)
        self.global_state = {k: previous[k] + (v - previous[k]) / 2 for k, v in self.global_state.items()}
        return {"server_lr": 0.5}


@pytest.fixture
def halfstep() -> Iterator[MethodSpec]:
    spec = register_method(MethodSpec("halfstep", HalfStep, help="FedAvg with server lr 1/2 (a test)."))
    yield spec
    unregister_method("halfstep")


def test_a_registered_method_is_validated_and_runs_through_the_sync_loop(tmp_path, halfstep):
    with pytest.raises(ConfigError, match=r"`method`: EcoLoRA does not apply to halfstep"):
        load_config(None, ["method=halfstep+ecolora"])
    overrides = ["method=halfstep", "fed.rounds=1", "fed.num_clients=2", "fed.clients_per_round=2", "data.limit=40",
                 "data.eval_size=8", "data.max_seq_len=32", "train.local_steps=1", "lora.dropout=0",
                 "network.scenarios=[]", "fed.checkpoint_every=0"]  # fmt: skip
    config = load_config(ROOT / "configs" / "smoke.yaml", overrides)
    summary = run_experiment(config, tmp_path / "half")
    records = [json.loads(line) for line in (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()]
    assert summary["method"] == "halfstep" and records[0]["server_lr"] == 0.5
    fedavg = run_experiment(load_config(ROOT / "configs" / "smoke.yaml", [*overrides, "method=fedit"]), tmp_path / "avg")
    assert summary["upload_bytes"] == fedavg["upload_bytes"] > 0
    half = load_file(tmp_path / "half" / "adapter" / "adapter_model.safetensors")
    full = load_file(tmp_path / "avg" / "adapter" / "adapter_model.safetensors")
    b_keys = [k for k in half if "lora_B" in k]
    assert b_keys
    for k in b_keys:  # B starts at 0, so the half step is exactly half of FedAvg's
        assert torch.equal(half[k], full[k] / 2), k


def test_cli_help_lists_the_methods():
    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "fedbuff (also fedbuff+ecolora): FedBuff" in result.output and "flasc: FLASC" in result.output
