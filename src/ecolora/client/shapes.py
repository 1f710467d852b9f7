"""Models by shape, no download: random-weight Llamas for timing and memory, never for quality.

``llama2-7b-shape`` and ``llama2-13b-shape`` follow Touvron et al. (2023, arXiv 2307.09288,
table 1 and the released ``config.json``); ``smollm2-135m-shape`` follows SmolLM2-135M (Allal et
al., 2025). The weights are drawn from a fixed seed directly on the target device in the target
dtype (a 7B base never passes through host memory), so a GPU box without internet can time a
paper-scale round. The tokenizer is :func:`byte_tokenizer`, built in code (256 byte tokens plus
``<|endoftext|>``): no file, no download; its ids are a subset of every shape's vocabulary.

A run on a shape model learns nothing meaningful: its summary says "shape model: timing only".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

logger = logging.getLogger("ecolora")

__all__ = [
    "SHAPE_MODELS",
    "SHAPE_NOTE",
    "SHAPE_SEED",
    "build_shape_model",
    "byte_tokenizer",
    "is_shape_model",
    "model_note",
    "shape_config",
]

SHAPE_SEED = 4321
SHAPE_NOTE = "shape model: timing only"

# name -> LlamaConfig fields (the published architectures; vocabularies as released).
SHAPE_MODELS: dict[str, dict[str, int | float | bool]] = {
    "llama2-7b-shape": {
        "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": False,
    },
    "llama2-13b-shape": {
        "vocab_size": 32000, "hidden_size": 5120, "intermediate_size": 13824,
        "num_hidden_layers": 40, "num_attention_heads": 40, "num_key_value_heads": 40,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": False,
    },
    "smollm2-135m-shape": {
        "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
        "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
        "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
        "tie_word_embeddings": True,
    },
}  # fmt: skip

_EOS = "<|endoftext|>"


def is_shape_model(name: str) -> bool:
    return name in SHAPE_MODELS


def model_note(name: str) -> str:
    """What a run on ``name`` is good for: :data:`SHAPE_NOTE` for shape models, else ``""``."""
    return SHAPE_NOTE if is_shape_model(name) else ""


def shape_config(name: str, overrides: Mapping[str, int | float | bool] | None = None) -> LlamaConfig:
    """The ``LlamaConfig`` of a shape model; ``overrides`` change fields (tests: tiny sizes)."""
    if name not in SHAPE_MODELS:
        raise ValueError(f"Unknown shape model {name!r}; shape models: {', '.join(SHAPE_MODELS)}.")
    fields: dict[str, Any] = {**SHAPE_MODELS[name], **(overrides or {})}
    unknown = sorted(set(fields) - set(LlamaConfig().to_dict()) - {"rope_theta"})
    if unknown:
        raise ValueError(f"Unknown LlamaConfig field(s) {unknown} for shape model {name!r}.")
    rope = {"rope_type": "default", "rope_theta": float(fields.pop("rope_theta", 10000.0))}
    return LlamaConfig(
        **fields, rope_parameters=rope, bos_token_id=0, eos_token_id=0, pad_token_id=0, use_cache=False
    )


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer built in code: id 0 is ``<|endoftext|>`` (EOS and pad), ids 1..256 bytes.

    No special token is prepended; ``decode(encode(text)) == text`` for any UTF-8 text.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())  # GPT-2's 256 byte characters
    vocab = {_EOS: 0, **{char: i + 1 for i, char in enumerate(alphabet)}}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([_EOS])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=_EOS, pad_token=_EOS)
    tokenizer.model_max_length = 1 << 20
    return tokenizer


def build_shape_model(
    name: str,
    *,
    device: torch.device,
    dtype: torch.dtype,
    overrides: Mapping[str, int | float | bool] | None = None,
) -> LlamaForCausalLM:
    """Random-init a shape model directly on ``device`` in ``dtype`` (seeded, caller's RNG untouched)."""
    config = shape_config(name, overrides)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.device(device):
        torch.manual_seed(SHAPE_SEED)
        model: LlamaForCausalLM = LlamaForCausalLM._from_config(config, dtype=dtype)
    logger.warning(
        "%s: %.2fB random parameters on %s (%s); %s",
        name,
        sum(p.numel() for p in model.parameters()) / 1e9,
        device,
        str(dtype).removeprefix("torch."),
        SHAPE_NOTE,
    )
    return model
