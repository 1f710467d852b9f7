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

from ecolora.client.device import Placement, resolve_device
from ecolora.client.lora import LoraSettings, attach_lora
from ecolora.client.model import load_base_model
from ecolora.eval.harness import evaluate_with_lm_eval
from ecolora.eval.heldout import run_heldout
from ecolora.eval.suites import Journal, SuiteProgress, get_suite, run_suite
from ecolora.sim.setup import HUB_IDS

logger = logging.getLogger("ecolora")

__all__ = ["LM_EVAL_PREFIX", "base_model_name", "evaluate_adapter", "load_model_with_adapter"]

LM_EVAL_PREFIX = "lm-eval:"  # --suite lm-eval:arc_easy,mmlu runs lm-evaluation-harness tasks


def base_model_name(adapter: Path | None, model: str | None) -> str:
    """``model``, else the run's ``model.name`` (config.yaml above the adapter), else the adapter's
    own ``base_model_name_or_path`` (a built-in's hub id maps back to the built-in), else smollm2."""
    if model:
        return model
    if adapter is not None:
        config = Path(adapter).parent / "config.yaml"
        if config.is_file():
            return str(yaml.safe_load(config.read_text())["model"]["name"])
        adapter_config = Path(adapter) / "adapter_config.json"
        base = json.loads(adapter_config.read_text()).get("base_model_name_or_path") if adapter_config.is_file() else None
        if base:
            return next((name for name, hub_id in HUB_IDS.items() if hub_id == base), str(base))
    return "smollm2-135m"


def load_model_with_adapter(
    adapter: Path | None, model: str | None = None, device: str = "cpu"
) -> tuple[Any, Any, str]:
    """The base model (named, or from the run's config.yaml) on ``device`` with ``adapter`` on top.

    Without an adapter the base model is wrapped in an empty LoRA so that suites that need a
    peft model (preference accuracy uses the adapter-disabled model as reference) work too.
    """
    name = base_model_name(adapter, model)
    base, tokenizer = load_base_model(name, placement=Placement(device=resolve_device(device)))
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
    device: str = "cpu",
    save: Path | None = None,
    progress: SuiteProgress | None = None,
) -> dict[str, Any]:
    """Run one suite on ``device`` (auto, cpu, cuda, cuda:N, mps); returns the scores and what was
    evaluated. ``batch_size``: items (multiple choice) or examples (loss) per forward pass.

    ``save`` (multiple-choice suites): a JSONL file that receives each subset's result as soon as
    it is scored; a rerun with the same file, suite, model, adapter, limit and path scores only the
    subsets it lacks, so a long suite (all of bigbench-mc: hours on a CPU) survives interruption.
    ``progress``: see :func:`ecolora.eval.suites.run_suite`.

    ``heldout`` scores the held-out split of the run in ``path`` (default: the folder above
    ``adapter``); ``lm-eval:TASK[,TASK...]`` runs lm-evaluation-harness tasks (optional package).
    """
    start = time.perf_counter()
    if suite.startswith(LM_EVAL_PREFIX):
        tasks = [t for t in suite[len(LM_EVAL_PREFIX):].split(",") if t]
        scores = evaluate_with_lm_eval(
            base_model_name(adapter, model), adapter, tasks, limit, batch_size=batch_size,
            device=str(resolve_device(device)),
        )
        result: dict[str, Any] = {"suite": suite, "kind": "lm-eval", "tasks": scores}
    elif suite == "heldout":
        run_dir = Path(path) if path else Path(adapter).parent if adapter else None
        if run_dir is None:
            raise ValueError("The heldout suite scores a run's own held-out split: pass --adapter RUN/adapter or --path RUN.")
        model = model or base_model_name(run_dir / "adapter", None)  # the run's base model
        peft_model, tokenizer, name = load_model_with_adapter(adapter, model, device)
        with torch.no_grad():
            result = run_heldout(peft_model, tokenizer, run_dir, batch_size=batch_size)
    else:
        if get_suite(suite).kind != "multiple_choice" and save is not None:  # before the model loads
            raise ValueError(f"--save keeps per-task results of multiple-choice suites; {suite} is not one.")
        journal = None if save is None else Journal(save, {
            "suite": suite, "model": base_model_name(adapter, model),
            "adapter": str(Path(adapter).resolve()) if adapter else None, "limit": limit,
            "path": str(Path(path).resolve()) if path else None,
        })
        peft_model, tokenizer, name = load_model_with_adapter(adapter, model, device)
        with torch.no_grad():
            result = run_suite(
                suite, peft_model, tokenizer, limit=limit, batch_size=batch_size, path=path,
                journal=journal, progress=progress,
            )
    result.update(
        model=base_model_name(adapter, model), adapter=str(adapter) if adapter else None,
        eval_s=time.perf_counter() - start,
    )
    logger.debug("%s", json.dumps({k: v for k, v in result.items() if k != "subsets"}))
    return result
