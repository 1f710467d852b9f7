"""A tiny shape model trained for a few steps under a given Placement (device/dtype tests)."""

from __future__ import annotations

from typing import Any

import torch

from ecolora.client.device import Placement
from ecolora.client.lora import LoraSettings, attach_lora, get_lora_state
from ecolora.client.model import load_base_model
from ecolora.client.train import LocalTrainer, sft_loss
from ecolora.data.prompts import collate_sft, encode_sft
from ecolora.strategies.base import TrainResult

TINY_SHAPE = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
}  # fmt: skip
ROWS = [
    {"instruction": f"Add {i} and {i + 1}.", "input": "", "output": f"The sum is {2 * i + 1}."}
    for i in range(8)
]


def build_peft(placement: Placement, name: str = "smollm2-135m-shape") -> tuple[Any, Any]:
    """Shape weights are drawn on the target device, and CUDA's generator gives other numbers than
    the CPU's: accelerator runs build on the CPU in float32 and move, so every placement starts from
    the same weights and the comparisons measure the device and dtype, not the draw."""
    if placement.device.type == "cpu":
        model, tokenizer = load_base_model(name, placement=placement, shape_overrides=TINY_SHAPE)
    else:
        on_cpu = Placement(gradient_checkpointing=placement.gradient_checkpointing)
        model, tokenizer = load_base_model(name, placement=on_cpu, shape_overrides=TINY_SHAPE)
        model.to(device=placement.device, dtype=placement.dtype)
    return attach_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0), seed=0), tokenizer


def train_tiny(placement: Placement, steps: int = 2, lr: float = 1e-2) -> tuple[TrainResult, dict[str, torch.Tensor], LocalTrainer]:
    """Build, attach LoRA, train ``steps`` steps of batch 4 on 8 rows; the result and LoRA state."""
    peft_model, tokenizer = build_peft(placement)
    examples = [encode_sft(tokenizer, row, 64) for row in ROWS]
    trainer = LocalTrainer(
        model=peft_model,
        examples=examples,
        collate=lambda batch: collate_sft(batch, int(tokenizer.pad_token_id)),
        loss_fn=sft_loss,
        lr=lr,
        batch_size=4,
        local_steps=steps,
        seed=0,
        placement=placement,
    )
    result = trainer.train(list(range(len(examples))), client_id=0, server_round=1)
    return result, get_lora_state(peft_model), trainer
