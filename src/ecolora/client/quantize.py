"""4-bit and 8-bit frozen bases with bitsandbytes (optional extra ``ecolora[gpu]``, CUDA only).

``4bit`` is QLoRA's recipe (Dettmers et al., 2023, arXiv 2305.14314): NF4 weights, double
quantization of the scales, compute in the base dtype; ``8bit`` is LLM.int8() (Dettmers et al.,
2022) with outlier threshold 6. LoRA weights stay float32 on top of the quantized Linear layers.

Pretrained checkpoints are quantized while loading (``BitsAndBytesConfig``); a shape model, built
in memory, has its Linear layers (all but ``lm_head``) replaced in place by :func:`quantize_linears`.
:func:`ecolora.client.device.check_quantization` has already refused machines without CUDA or
bitsandbytes with a one-line error before anything here runs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["bnb_config", "quantize_linears"]


def bnb_config(quantization: str, compute_dtype: torch.dtype) -> Any:
    """A ``transformers.BitsAndBytesConfig`` for ``4bit``/``8bit``; None for ``none``."""
    if quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=6.0)
    raise ValueError(f"`model.quantization` must be none, 8bit or 4bit, got {quantization!r}.")


@torch.no_grad()
def quantize_linears(
    model: nn.Module, quantization: str, compute_dtype: torch.dtype, device: torch.device
) -> None:
    """Replace every ``nn.Linear`` except ``lm_head`` by its bitsandbytes 4/8-bit twin, in place.

    Sets ``is_loaded_in_4bit``/``is_loaded_in_8bit`` on the model, which peft reads to wrap the
    quantized layers with its bitsandbytes LoRA layers.
    """
    import bitsandbytes as bnb

    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear) or child_name == "lm_head":
                continue
            setattr(parent, child_name, _quantized(bnb, child, quantization, compute_dtype, device))
    setattr(model, "is_loaded_in_4bit", quantization == "4bit")  # noqa: B010 (not an nn.Module field)
    setattr(model, "is_loaded_in_8bit", quantization == "8bit")  # noqa: B010


def _quantized(
    bnb: Any, linear: nn.Linear, quantization: str, compute_dtype: torch.dtype, device: torch.device
) -> nn.Module:
    bias = linear.bias is not None
    layer: nn.Module
    if quantization == "4bit":
        layer = bnb.nn.Linear4bit(
            linear.in_features, linear.out_features, bias=bias, compute_dtype=compute_dtype,
            compress_statistics=True, quant_type="nf4", device="meta",
        )  # fmt: skip
        layer.weight = bnb.nn.Params4bit(
            linear.weight.data, requires_grad=False, quant_type="nf4", compress_statistics=True
        ).to(device)
    else:
        layer = bnb.nn.Linear8bitLt(
            linear.in_features, linear.out_features, bias=bias, has_fp16_weights=False,
            threshold=6.0, device="meta",
        )  # fmt: skip
        layer.weight = bnb.nn.Int8Params(
            linear.weight.data.to("cpu"), requires_grad=False, has_fp16_weights=False
        ).to(device)
    if bias:
        layer.bias = nn.Parameter(linear.bias.data.to(device, compute_dtype), requires_grad=False)
    return layer
