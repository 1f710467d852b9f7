"""Resume entry points without a model: which checkpoint is used, config checks, CLI errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ecolora.cli import app
from ecolora.config import load_config
from ecolora.sim import checkpoint
from ecolora.sim.checkpoint import ResumeError, save_checkpoint


def test_no_checkpoint_means_start_over(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="ecolora"):
        assert checkpoint.resume_state(load_config(None), tmp_path) is None
    assert f"No complete checkpoint in {tmp_path / 'checkpoints'}; starting the run over." in caplog.text


def test_checkpoint_of_another_config_is_refused(tmp_path):
    saved = load_config(None, ["fed.rounds=4"])
    save_checkpoint(tmp_path / "checkpoints", 1, {"round": 1, "config_json": checkpoint.config_json(saved)})
    assert checkpoint.resume_state(saved, tmp_path)["round"] == 1
    with pytest.raises(ResumeError, match=r"config.yaml differs from the config its checkpoint of round 1 was "
                                          r"written with \(sections \['fed'\]\); resume with the original config.yaml"):
        checkpoint.resume_state(load_config(None, ["fed.rounds=5"]), tmp_path)


def test_metrics_are_rewritten_to_the_checkpointed_rounds(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"round": r}) + "\n" for r in (1, 2, 3)))
    checkpoint.rewrite_metrics(path, [{"round": 1}, {"round": 2}])
    assert [json.loads(line)["round"] for line in path.read_text().splitlines()] == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_cli_resume_errors(tmp_path):
    cli = CliRunner()
    result = cli.invoke(app, ["run", "--resume", str(tmp_path), "--set", "fed.rounds=2"])
    assert result.exit_code == 2
    assert "--resume takes the config and the run directory from DIR; drop --config, --set and --out." in result.output
    result = cli.invoke(app, ["run", "--resume", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "has no config.yaml; is it a run directory?" in result.output
