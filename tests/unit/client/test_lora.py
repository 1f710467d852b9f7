"""Tests for ecolora.client.lora: settings, deterministic init, exact swaps, merges, saving."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from peft import PeftModel, get_peft_model_state_dict
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ecolora.client.lora import (
    LoraSettings,
    add_lora_adapter,
    add_to_base_weights,
    attach_lora,
    base_weight_snapshot,
    get_lora_state,
    linear_module_names,
    lora_delta_weights,
    lora_layer_index,
    lora_module_name,
    num_lora_parameters,
    restore_base_weights,
    save_adapter,
    set_lora_state,
    use_adapter,
)
from ecolora.client.model import load_base_model

QKVO = ("q_proj", "k_proj", "v_proj", "o_proj")
Q_KEY = "base_model.model.model.layers.0.self_attn.q_proj"


@pytest.fixture(scope="session")
def tiny() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The first call in a fresh cache converts the smollm2 GGUF once (its tokenizer is shared)."""
    return load_base_model("tiny-llama")


@pytest.fixture
def base(tiny: tuple[PreTrainedModel, PreTrainedTokenizerBase]) -> PreTrainedModel:
    """A private copy: attach_lora wraps modules in place."""
    return copy.deepcopy(tiny[0])


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    ids = torch.arange(100, 116).reshape(2, 8)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def _random_state(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) * 0.1 for k, v in state.items()}


# ---------------------------------------------------------------- settings


def test_settings_defaults_and_scaling() -> None:
    s = LoraSettings()
    assert (s.r, s.alpha, s.dropout, s.target_modules) == (8, 16, 0.05, ("q_proj", "v_proj"))
    assert s.scaling == 2.0
    cfg = s.to_peft_config()
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (8, 16, 0.05)
    assert set(cfg.target_modules) == {"q_proj", "v_proj"}


def test_settings_normalise_target_modules() -> None:
    assert LoraSettings(target_modules="q_proj, v_proj,q_proj").target_modules == ("q_proj", "v_proj")
    assert LoraSettings(target_modules=["k_proj"]).target_modules == ("k_proj",)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"r": 0}, r"`r` must be an integer >= 1, got 0\."),
        ({"r": 2.5}, r"`r` must be an integer >= 1, got 2\.5\."),
        ({"alpha": 0}, r"`alpha` must be a finite number > 0, got 0\."),
        ({"alpha": "16"}, r"`alpha` must be a number, got '16'\."),
        ({"dropout": 1.0}, r"`dropout` must be in \[0, 1\), got 1\.0\."),
        ({"dropout": -0.1}, r"`dropout` must be in \[0, 1\), got -0\.1\."),
        ({"target_modules": ()}, r"`target_modules` must be a non-empty list"),
        ({"target_modules": ("q_proj", "")}, r"`target_modules` must be a non-empty list"),
    ],
)
def test_settings_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoraSettings(**kwargs)


# ---------------------------------------------------------------- attach


def test_unknown_target_module_lists_linear_names(base: PreTrainedModel) -> None:
    with pytest.raises(
        ValueError,
        match=r"\['query'\] are not Linear modules.*down_proj, gate_proj, k_proj, lm_head, o_proj, "
        r"q_proj, up_proj, v_proj\.",
    ):
        attach_lora(base, LoraSettings(target_modules=("q_proj", "query")))


def test_linear_names_are_the_same_after_wrapping(base: PreTrainedModel) -> None:
    before = linear_module_names(base)
    peft_model = attach_lora(base, LoraSettings())
    assert linear_module_names(peft_model) == before


def test_keys_match_peft_and_are_in_layer_order(base: PreTrainedModel) -> None:
    peft_model = attach_lora(base, LoraSettings(target_modules=QKVO))
    state = get_lora_state(peft_model)
    assert list(state) == list(get_peft_model_state_dict(peft_model))
    assert list(state)[:2] == [f"{Q_KEY}.lora_A.weight", f"{Q_KEY}.lora_B.weight"]
    layers = [lora_layer_index(k) for k in state]
    assert layers == sorted(layers) and set(layers) == {0, 1}


def test_trainable_counts(base: PreTrainedModel) -> None:
    # per layer, r=8: q 8*(128+128) + v 8*(128+64) = 3584; k like v, o like q
    peft_model = attach_lora(base, LoraSettings(r=8))
    assert num_lora_parameters(peft_model) == 2 * 3584
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable == 2 * 3584
    add_lora_adapter(peft_model, "qkvo", LoraSettings(r=8, target_modules=QKVO), seed=0)
    assert num_lora_parameters(peft_model, "qkvo") == 2 * 7168


def test_init_is_seeded_kaiming_a_zero_b(base: PreTrainedModel, batch: dict) -> None:
    reference = _logits(base, batch)
    twin = copy.deepcopy(base)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    state = get_lora_state(attach_lora(base, LoraSettings(), seed=7))
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(456)  # a different global state must not change the init
    same = get_lora_state(attach_lora(twin, LoraSettings(), seed=7))
    assert all(torch.equal(state[k], same[k]) for k in state)
    for key, value in state.items():
        if key.endswith("lora_B.weight"):
            assert torch.count_nonzero(value) == 0
        else:
            bound = 1 / math.sqrt(value.shape[1])  # kaiming_uniform(a=sqrt(5))
            assert value.abs().max() <= bound and value.abs().max() > 0.9 * bound
    other = copy.deepcopy(load_base_model("tiny-llama")[0])
    different = get_lora_state(attach_lora(other, LoraSettings(), seed=8))
    assert not torch.equal(state[f"{Q_KEY}.lora_A.weight"], different[f"{Q_KEY}.lora_A.weight"])
    assert torch.equal(_logits(twin, batch), reference)  # B = 0: starts equal to the base


# ---------------------------------------------------------------- get / set


def test_get_returns_fp32_detached_clones(base: PreTrainedModel) -> None:
    peft_model = attach_lora(base.to(torch.bfloat16), LoraSettings())
    state = get_lora_state(peft_model)
    assert {v.dtype for v in state.values()} == {torch.float32}
    assert not any(v.requires_grad for v in state.values())
    state[f"{Q_KEY}.lora_A.weight"].add_(1.0)
    assert not torch.equal(
        get_lora_state(peft_model)[f"{Q_KEY}.lora_A.weight"], state[f"{Q_KEY}.lora_A.weight"]
    )


def test_set_is_in_place_and_swaps_are_exact(base: PreTrainedModel, batch: dict) -> None:
    peft_model = attach_lora(base, LoraSettings(dropout=0.0))
    params = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
    pointers = {n: p.data_ptr() for n, p in params.items()}
    client_a = _random_state(get_lora_state(peft_model), seed=1)
    client_b = _random_state(client_a, seed=2)
    set_lora_state(peft_model, client_a)
    logits_a = _logits(peft_model, batch)
    got = get_lora_state(peft_model)
    assert all(torch.equal(got[k], client_a[k]) for k in client_a)
    set_lora_state(peft_model, client_b)
    assert not torch.allclose(_logits(peft_model, batch), logits_a)
    set_lora_state(peft_model, client_a)
    assert torch.equal(_logits(peft_model, batch), logits_a)
    assert {n: p.data_ptr() for n, p in params.items()} == pointers


def test_set_rejects_missing_unknown_and_misshaped(base: PreTrainedModel) -> None:
    peft_model = attach_lora(base, LoraSettings())
    good = get_lora_state(peft_model)
    missing = dict(good)
    del missing[f"{Q_KEY}.lora_B.weight"]
    with pytest.raises(ValueError, match=r"missing keys \[.*q_proj\.lora_B\.weight\], unknown keys \[\]"):
        set_lora_state(peft_model, missing)
    extra = {**good, "bogus.lora_A.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"missing keys \[\], unknown keys \[bogus\.lora_A\.weight\]"):
        set_lora_state(peft_model, extra)
    bad = _random_state(good, seed=3)
    bad[f"{Q_KEY}.lora_A.weight"] = torch.zeros(4, 128)
    with pytest.raises(ValueError, match=r"wrong shapes.*q_proj\.lora_A\.weight: expected \(8, 128\), got \(4, 128\)"):
        set_lora_state(peft_model, bad)
    after = get_lora_state(peft_model)
    assert all(torch.equal(after[k], good[k]) for k in good)  # nothing was half-copied


def test_missing_adapter_is_reported(base: PreTrainedModel) -> None:
    with pytest.raises(ValueError, match=r"No LoRA adapter 'default'.*Call attach_lora"):
        get_lora_state(base)
    peft_model = attach_lora(base, LoraSettings())
    with pytest.raises(ValueError, match=r"No LoRA adapter 'client7' in this model; adapters: default\."):
        get_lora_state(peft_model, "client7")


# ---------------------------------------------------------------- several adapters


def test_heterogeneous_rank_adapters(base: PreTrainedModel, batch: dict) -> None:
    peft_model = attach_lora(base, LoraSettings(r=8, dropout=0.0))
    add_lora_adapter(peft_model, "r2", LoraSettings(r=2, dropout=0.0), seed=5)
    r2 = get_lora_state(peft_model, "r2")
    assert r2[f"{Q_KEY}.lora_A.weight"].shape == (2, 128)
    assert r2[f"{Q_KEY}.lora_B.weight"].shape == (128, 2)
    assert peft_model.active_adapter == "default"
    set_lora_state(peft_model, _random_state(r2, seed=9), "r2")
    default_logits = _logits(peft_model, batch)  # default adapter has B = 0
    use_adapter(peft_model, "r2")
    assert peft_model.active_adapter == "r2"
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all(".r2." in n for n in trainable)
    assert not torch.allclose(_logits(peft_model, batch), default_logits)
    with pytest.raises(ValueError, match=r"Adapter 'r2' already exists; adapters: default, r2\."):
        add_lora_adapter(peft_model, "r2", LoraSettings(r=2), seed=0)
    with pytest.raises(ValueError, match=r"Adapter 'r9' not found; adapters: default, r2\."):
        use_adapter(peft_model, "r9")


# ---------------------------------------------------------------- merging into the base


def test_merged_delta_reproduces_the_adapter(base: PreTrainedModel, batch: dict) -> None:
    settings = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=QKVO)
    peft_model = attach_lora(base, settings)
    zero = get_lora_state(peft_model)
    trained = _random_state(zero, seed=11)
    set_lora_state(peft_model, trained)
    with_adapter = _logits(peft_model, batch)
    deltas = lora_delta_weights(trained, settings.scaling)
    module = f"{Q_KEY}"
    expected = 2.0 * trained[f"{module}.lora_B.weight"] @ trained[f"{module}.lora_A.weight"]
    assert torch.equal(deltas[module], expected)
    snapshot = base_weight_snapshot(peft_model)
    assert set(snapshot) == set(deltas)
    set_lora_state(peft_model, zero)
    add_to_base_weights(peft_model, deltas)
    torch.testing.assert_close(_logits(peft_model, batch), with_adapter, atol=1e-4, rtol=1e-4)
    restore_base_weights(peft_model, snapshot)
    after = base_weight_snapshot(peft_model)
    assert all(torch.equal(after[k], snapshot[k]) for k in snapshot)


def test_add_to_base_weights_checks_before_changing(base: PreTrainedModel) -> None:
    peft_model = attach_lora(base, LoraSettings())
    snapshot = base_weight_snapshot(peft_model)
    good = torch.ones(128, 128)
    with pytest.raises(ValueError, match=r"Unknown module names \[model\.layers\.0\.q_proj\]"):
        add_to_base_weights(peft_model, {Q_KEY: good, "model.layers.0.q_proj": good})
    wrong = {Q_KEY: good, Q_KEY.replace("q_proj", "v_proj"): torch.ones(128, 128)}
    with pytest.raises(ValueError, match=r"v_proj: expected \(64, 128\), got \(128, 128\)"):
        add_to_base_weights(peft_model, wrong)
    after = base_weight_snapshot(peft_model)
    assert all(torch.equal(after[k], snapshot[k]) for k in snapshot)


# ---------------------------------------------------------------- keys and saving


@pytest.mark.parametrize(
    ("key", "layer"),
    [
        ("base_model.model.model.layers.12.self_attn.q_proj.lora_A.weight", 12),
        ("model.layers.0.mlp.down_proj.lora_B.weight", 0),
        ("transformer.h.3.attn.c_attn.lora_A.weight", 3),
    ],
)
def test_lora_layer_index(key: str, layer: int) -> None:
    assert lora_layer_index(key) == layer


def test_lora_layer_index_and_module_name_errors() -> None:
    with pytest.raises(ValueError, match=r"No layer number \(`layers\.<i>\.`\) in key 'lm_head\.lora_A\.weight'"):
        lora_layer_index("lm_head.lora_A.weight")
    assert lora_module_name(f"{Q_KEY}.lora_B.weight") == Q_KEY
    with pytest.raises(ValueError, match=r"Not a LoRA key"):
        lora_module_name(f"{Q_KEY}.weight")


def test_save_adapter_loads_with_peft(base: PreTrainedModel, batch: dict, tmp_path: Path) -> None:
    fresh = copy.deepcopy(base)
    peft_model = attach_lora(base, LoraSettings(r=4, dropout=0.0, target_modules=QKVO))
    live = get_lora_state(peft_model)
    state = _random_state(live, seed=21)
    save_adapter(peft_model, state, tmp_path / "adapter")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    after = get_lora_state(peft_model)
    assert all(torch.equal(after[k], live[k]) for k in live)  # live weights untouched
    loaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter")
    got = get_lora_state(loaded)
    assert list(got) == list(state) and all(torch.equal(got[k], state[k]) for k in state)
    set_lora_state(peft_model, state)
    assert torch.equal(_logits(loaded, batch), _logits(peft_model, batch))
    with pytest.raises(ValueError, match=r"missing keys"):
        save_adapter(peft_model, {}, tmp_path / "empty")
