"""Device, dtype, quantization and gradient checkpointing paths that run on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_run import TINY_SHAPE, build_peft, train_tiny

from ecolora.client import model as model_mod
from ecolora.client.device import (
    Placement,
    check_quantization,
    peak_memory_bytes,
    placement_from_config,
    resolve_device,
    resolve_dtype,
    to_device,
)
from ecolora.client.model import check_model_fits_device, estimate_num_parameters, load_base_model
from ecolora.client.shapes import SHAPE_MODELS, byte_tokenizer, shape_config
from ecolora.config import ConfigError, load_config
from ecolora.rundir import SetupError
from ecolora.sim.setup import build_setup

CPU = torch.device("cpu")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")


def test_resolve_device_cpu_and_auto() -> None:
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto") == (torch.device("cuda", 0) if torch.cuda.is_available() else CPU)


@no_cuda
@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_resolve_device_cuda_without_cuda(spec: str) -> None:
    with pytest.raises(ValueError, match="CUDA is not available on this machine.*train.device=cpu"):
        resolve_device(spec)


def test_resolve_device_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"):
        resolve_device("tpu")


def test_resolve_dtype() -> None:
    assert resolve_dtype("bfloat16") is torch.bfloat16
    assert resolve_dtype("float16") is torch.float16
    with pytest.raises(ValueError, match="must be one of float32, bfloat16, float16, got 'int8'"):
        resolve_dtype("int8")


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_quantization_needs_cuda(quantization: str) -> None:
    with pytest.raises(ValueError, match=f"model.quantization={quantization} needs a CUDA GPU"):
        check_quantization(quantization, CPU)


@no_cuda
def test_quantization_config_error_is_one_line() -> None:
    config = load_config(None, ["model.quantization=4bit", "train.device=auto"])
    with pytest.raises(ValueError, match="needs a CUDA GPU") as info:
        placement_from_config(config)
    assert "\n" not in str(info.value)


def test_config_validates_device_dtype_quantization() -> None:
    with pytest.raises(ConfigError, match="`train.device` must be auto, cpu, cuda, cuda:N or mps"):
        load_config(None, ["train.device=gpu0"])
    with pytest.raises(ConfigError, match="`model.dtype` must be float32, bfloat16 or float16"):
        load_config(None, ["model.dtype=float64"])
    with pytest.raises(ConfigError, match="`model.quantization` must be none, 8bit or 4bit"):
        load_config(None, ["model.quantization=2bit"])
    config = load_config(None, ["train.device=cpu", "model.dtype=bfloat16", "train.gradient_checkpointing=true"])
    placement = placement_from_config(config)
    assert (placement.device, placement.dtype, placement.gradient_checkpointing) == (CPU, torch.bfloat16, True)


def test_to_device_moves_tensors_only() -> None:
    moved = to_device({"a": torch.ones(2), "b": 3}, CPU)
    assert moved["b"] == 3 and moved["a"].device == CPU


def test_peak_memory_is_positive_on_cpu() -> None:
    assert peak_memory_bytes(CPU) > 10 * 2**20


# ---------------------------------------------------------------- shape models


def test_shape_configs_match_published_sizes() -> None:
    sizes = {name: shape_config(name) for name in SHAPE_MODELS}
    assert sizes["llama2-7b-shape"].hidden_size == 4096 and sizes["llama2-7b-shape"].num_hidden_layers == 32
    assert sizes["llama2-13b-shape"].hidden_size == 5120 and sizes["llama2-13b-shape"].num_hidden_layers == 40
    assert sizes["smollm2-135m-shape"].num_key_value_heads == 3
    with torch.device("meta"):
        from transformers import LlamaForCausalLM

        params = sum(p.numel() for p in LlamaForCausalLM(sizes["llama2-7b-shape"]).parameters())
    assert params == 6_738_415_616  # Llama-2-7B's published parameter count


def test_shape_config_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="Unknown shape model 'llama3-shape'"):
        shape_config("llama3-shape")
    with pytest.raises(ValueError, match=r"Unknown LlamaConfig field\(s\) \['hidden'\]"):
        shape_config("llama2-7b-shape", {"hidden": 3})


def test_byte_tokenizer_round_trips() -> None:
    tokenizer = byte_tokenizer()
    text = "Héllo ### Response:\n 42 €"
    ids = tokenizer(text)["input_ids"]
    assert len(ids) == len(text.encode("utf-8")) and 0 not in ids
    assert tokenizer.decode(ids) == text
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == 0


def test_shape_overrides_only_for_shape_models() -> None:
    with pytest.raises(ValueError, match="apply to shape models .* got model 'tiny-llama'"):
        load_base_model("tiny-llama", shape_overrides={"num_hidden_layers": 1})


def test_shape_model_builds_seeded_in_dtype() -> None:
    placement = Placement(dtype=torch.bfloat16)
    a, _ = load_base_model("llama2-7b-shape", placement=placement, shape_overrides=TINY_SHAPE)
    b, _ = load_base_model("llama2-7b-shape", placement=placement, shape_overrides=TINY_SHAPE)
    assert all(p.dtype == torch.bfloat16 for p in a.parameters())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


# ---------------------------------------------------------------- training paths


def test_train_step_fp32_cpu_learns() -> None:
    result, state, trainer = train_tiny(Placement(), steps=4)
    assert result.train_loss < result.initial_loss
    assert all(t.device == CPU and t.dtype == torch.float32 for t in state.values())
    assert trainer.tokens_seen > 4 * 4 * 10


def test_bf16_base_keeps_lora_and_grads_fp32() -> None:
    peft_model, _ = build_peft(Placement(dtype=torch.bfloat16))
    lora = [p for n, p in peft_model.named_parameters() if "lora_" in n]
    base = [p for n, p in peft_model.named_parameters() if "lora_" not in n]
    assert lora and all(p.dtype == torch.float32 for p in lora)
    assert all(p.dtype == torch.bfloat16 for p in base)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_base_trains_close_to_fp32(dtype: torch.dtype) -> None:
    fp32, _, _ = train_tiny(Placement(), steps=2)
    half, state, _ = train_tiny(Placement(dtype=dtype), steps=2)
    assert half.initial_loss == pytest.approx(fp32.initial_loss, rel=2e-2)
    assert half.train_loss < half.initial_loss
    assert all(t.dtype == torch.float32 for t in state.values())


def test_gradient_checkpointing_same_loss() -> None:
    plain, state_plain, _ = train_tiny(Placement(), steps=3)
    ckpt, state_ckpt, _ = train_tiny(Placement(gradient_checkpointing=True), steps=3)
    assert ckpt.train_loss == pytest.approx(plain.train_loss, rel=1e-5)
    for key, value in state_plain.items():
        torch.testing.assert_close(state_ckpt[key], value, rtol=1e-4, atol=1e-6)


def test_gradient_checkpointing_is_enabled_on_the_model() -> None:
    peft_model, _ = build_peft(Placement(gradient_checkpointing=True))
    base = peft_model.base_model.model
    assert getattr(base, "is_activation_checkpointing", None) or base.is_gradient_checkpointing


# ---------------------------------------------------------------- large models on the CPU


def test_large_model_on_cpu_is_refused_unless_forced() -> None:
    with pytest.raises(ValueError, match=r"'llama2-7b-shape' has 6.7B parameters \(> 1B\) .* pass --force"):
        check_model_fits_device("llama2-7b-shape", Placement())
    check_model_fits_device("llama2-7b-shape", Placement(), force=True)
    check_model_fits_device("llama2-7b-shape", Placement(device=torch.device("cuda", 0)))
    check_model_fits_device("llama2-7b-shape", Placement(), shape_overrides=TINY_SHAPE)
    check_model_fits_device("tiny-llama", Placement())


def test_paper_preset_is_refused_on_cpu_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("offline")

    monkeypatch.setattr(model_mod.AutoConfig, "from_pretrained", offline)
    config = load_config(Path(__file__).parents[3] / "configs/paper/fedit_ecolora_dolly.yaml", ["train.device=cpu"])
    assert estimate_num_parameters(config.model.name) == 7_000_000_000  # from the name's size tag
    with pytest.raises(SetupError, match="has 7.0B parameters"):
        build_setup(config)


def test_tiny_builds_keep_checkpointing_off_the_cpu() -> None:
    """The CUDA tests build on the CPU and move; checkpointing must survive that path."""
    peft_model, _ = build_peft(Placement(device=torch.device("meta"), gradient_checkpointing=True))
    base = peft_model.base_model.model
    assert getattr(base, "is_activation_checkpointing", None) or base.is_gradient_checkpointing
