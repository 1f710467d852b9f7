"""Client side: base-model loading and LoRA adapter handling (training lives in sibling modules)."""

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
from ecolora.client.model import BUILTIN_MODELS, builtin_model_dir, load_base_model

__all__ = [
    "BUILTIN_MODELS",
    "LoraSettings",
    "add_lora_adapter",
    "add_to_base_weights",
    "attach_lora",
    "base_weight_snapshot",
    "builtin_model_dir",
    "get_lora_state",
    "linear_module_names",
    "load_base_model",
    "lora_delta_weights",
    "lora_layer_index",
    "lora_module_name",
    "num_lora_parameters",
    "restore_base_weights",
    "save_adapter",
    "set_lora_state",
    "use_adapter",
]
