"""``ecolora eval``: score a base model, or a base model plus a saved PEFT adapter, on a suite."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from peft import PeftModel

from ecolora.client.lora import LoraSettings, attach_lora
from ecolora.client.model import load_base_model
from ecolora.eval.suites import get_suite, run_suite

logger = logging.getLogger("ecolora")

__all__ = ["evaluate_adapter", "load_model_with_adapter"]


def _base_name(adapter: Path | None, model: str | None) -> str:
    if model:
        return model
    if adapter is not None:
        config = Path(adapter).parent / "config.yaml"
        if config.is_file():
            return str(yaml.safe_load(config.read_text())["model"]["name"])
    return "smollm2-135m"


def load_model_with_adapter(adapter: Path | None, model: str | None = None) -> tuple[Any, Any, str]:
    """The base model (named, or from the run's config.yaml) with ``adapter`` loaded on top.

    Without an adapter the base model is wrapped in an empty LoRA so that suites that need a
    peft model (preference accuracy uses the adapter-disabled model as reference) work too.
    """
    name = _base_name(adapter, model)
    base, tokenizer = load_base_model(name)
    if adapter is None:
        return attach_lora(base, LoraSettings()), tokenizer, name
    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter} is not a PEFT adapter folder (no adapter_config.json).")
    peft_model = PeftModel.from_pretrained(base, str(adapter))
    peft_model.eval()
    return peft_model, tokenizer, name


def evaluate_adapter(
    *,
    adapter: Path | None,
    suite: str,
    model: str | None = None,
    limit: int | None = None,
    path: str | None = None,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Run one suite; returns the suite's scores plus what was evaluated."""
    get_suite(suite)  # unknown names fail before the model loads
    start = time.perf_counter()
    peft_model, tokenizer, name = load_model_with_adapter(adapter, model)
    with torch.no_grad():
        result = run_suite(
            suite, peft_model, tokenizer, limit=limit, batch_size=batch_size, path=path
        )
    result.update(
        model=name, adapter=str(adapter) if adapter else None, eval_s=time.perf_counter() - start
    )
    logger.info("%s", json.dumps({k: v for k, v in result.items() if k != "subsets"}))
    return result
