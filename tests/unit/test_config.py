from pathlib import Path

import pytest
import yaml

from ecolora.config import ConfigError, RunConfig, apply_overrides, load_config

CONFIG_ROOT = Path(__file__).resolve().parents[2] / "configs"
CONFIGS = sorted(CONFIG_ROOT.rglob("*.yaml"))


def test_defaults_are_valid():
    cfg = RunConfig()
    assert cfg.method == "fedit" and cfg.fed.clients_per_round <= cfg.fed.num_clients


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_preset_loads_and_validates(path):
    cfg = load_config(path)
    # The header comment must show the exact command to run the preset.
    assert f"ecolora run --config configs/{path.relative_to(CONFIG_ROOT).as_posix()}" in path.read_text()
    assert cfg.to_dict()["method"] == yaml.safe_load(path.read_text())["method"]


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"Unknown key\(s\) fed.roundz; valid keys: fed.num_clients, fed.clients_per_round, fed.rounds"):
        load_config(None, ["fed.roundz=3"])


def test_unknown_section_is_rejected():
    with pytest.raises(ConfigError, match=r"Unknown key\(s\) bogus"):
        RunConfig.from_dict({"bogus": {}})


def test_segments_must_not_exceed_clients_per_round():
    with pytest.raises(ConfigError, match=r"`ecolora.num_segments` must be <= clients per round \(5\), got 8."):
        load_config(None, ["method=fedit+ecolora", "ecolora.num_segments=8"])


def test_segment_check_ignored_without_ecolora_or_segments():
    load_config(None, ["ecolora.num_segments=8"])  # plain fedit: not used
    load_config(None, ["method=fedit+ecolora", "ecolora.num_segments=8", "ecolora.segments=false"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("method=fedavg", r"`method`: Unknown method 'fedavg'; known: fedit, fedit\+ecolora, ffa, ffa\+ecolora, flora, "
                           r"flora\+ecolora, flasc, hierfedlora, hierfedlora\+ecolora, fedbuff, fedbuff\+ecolora."),
        ("method=fedit+foo", r"`method`: the wrapper must be \+ecolora, got 'fedit\+foo'."),
        ("fed.clients_per_round=50", r"`fed.clients_per_round` must be in \[1, num_clients=20\], got 50."),
        ("lora.r=0", r"`lora.r` must be >= 1, got 0."),
        ("train.lr=abc", r"`train.lr` must be a number, got 'abc'."),
        ("fed.rounds=2.5", r"`fed.rounds` must be an integer, got 2.5."),
        ("ecolora.k_min_b=1.5", r"`ecolora.k_min_b` must be in \[0.0, 1.0\], got 1.5."),
        ("data.partition=zipf", r"`data.partition` must be one of iid, dirichlet, task, kmeans"),
        ("fed.wire_dtype=int8", r"`fed.wire_dtype` must be float16 or float32"),
        ("ecolora.segments=yes please", r"`ecolora.segments` must be true or false"),
        ("fedbuff.clock=gps", r"`fedbuff.clock` must be simulated or wall, got 'gps'."),
        ("fedbuff.link=5", r"`fedbuff.link` must be a string, got 5."),  # str | None is checked too
        ("model.name=null", r"`model.name` must not be null."),
        ("flora.ranks=4", r"`flora.ranks` must be a list, got 4."),
        ("faults.clip_norm=big", r"`faults.clip_norm` must be a number, got 'big'."),
    ],
)
def test_bad_values_have_pinned_messages(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_fedbuff_wall_clock_needs_no_link_and_refuses_simulated_compute():
    cfg = load_config(None, ["method=fedbuff", "fedbuff.clock=wall", "network.scenarios=[]"])
    assert cfg.fedbuff.clock == "wall" and cfg.fedbuff.link is None
    with pytest.raises(ConfigError, match=r"`fedbuff` needs a client link"):
        load_config(None, ["method=fedbuff", "network.scenarios=[]"])
    with pytest.raises(ConfigError, match=r"`fedbuff.step_time_s` simulates compute time; with fedbuff.clock=wall"):
        load_config(None, ["method=fedbuff", "fedbuff.clock=wall", "fedbuff.step_time_s=1.0"])


def test_override_syntax_error():
    with pytest.raises(ConfigError, match=r"Override must look like key=value"):
        apply_overrides({}, ["fed.rounds"])


def test_overrides_parse_yaml_values_and_lists():
    cfg = load_config(None, ["lora.target_modules=q_proj,k_proj,v_proj", "data.limit=null", "flora.ranks=[8, 4]"])
    assert cfg.lora.target_modules == ["q_proj", "k_proj", "v_proj"]
    assert cfg.data.limit is None and cfg.flora.ranks == [8, 4]


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
