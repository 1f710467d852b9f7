"""Optional bridge to EleutherAI's lm-evaluation-harness (``lm-eval``) for users with hub access.

The harness downloads its task data (``arc_easy``, ``arc_challenge``, ``mmlu``, ...) from the
Hugging Face hub; ecolora's own suites (``ecolora.eval.suites``) cover the offline case. The base
model is either a built-in name (``tiny-llama``, ``smollm2-135m``, loaded by
``ecolora.client.model.load_base_model``) or anything ``transformers`` can load (hub id or folder);
the PEFT adapter in ``adapter_dir`` is applied on top (merged into the weights for built-ins).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from peft import PeftModel

from ecolora.client.model import load_base_model

logger = logging.getLogger("ecolora")

__all__ = ["BUILTIN_BASE_MODELS", "evaluate_with_lm_eval"]

BUILTIN_BASE_MODELS = ("tiny-llama", "smollm2-135m")
_INSTALL_HINT = (
    "The lm-evaluation-harness bridge needs the optional `lm-eval` package: "
    '`pip install lm-eval` (lm-eval >= 0.4.10: `pip install "lm-eval[hf]"`). '
    "Offline, use the built-in suites instead (`ecolora eval --suite bigbench-mc`)."
)


def _import_lm_eval() -> tuple[Any, Any]:
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err
    return lm_eval, HFLM


def _build_lm(
    hflm: Any, base_model: str, adapter_dir: str | Path | None, batch_size: int, device: str
) -> Any:
    if base_model in BUILTIN_BASE_MODELS:
        model, tokenizer = load_base_model(base_model)
        if adapter_dir is not None:
            model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
        return hflm(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
    peft = str(adapter_dir) if adapter_dir is not None else None
    return hflm(pretrained=base_model, peft=peft, batch_size=batch_size, device=device)


def evaluate_with_lm_eval(
    base_model: str,
    adapter_dir: str | Path | None,
    tasks: Sequence[str],
    limit: int | float | None = None,
    *,
    batch_size: int = 8,
    device: str = "cpu",
    num_fewshot: int | None = None,
) -> dict[str, dict[str, float]]:
    """Run lm-eval's ``simple_evaluate`` on base model + adapter.

    Args:
        base_model: a built-in name or a ``transformers`` model id/folder.
        adapter_dir: a saved PEFT adapter, or ``None`` for the base model alone.
        tasks: lm-eval task names, e.g. ``["arc_easy", "arc_challenge", "mmlu"]``.
        limit: examples per task (an int, or a fraction when < 1), as lm-eval's ``--limit``.

    Returns:
        ``{task: {metric: value}}`` with lm-eval's metric keys (``"acc,none"``,
        ``"acc_norm,none"``, ...), numeric values only.
    """
    tasks = list(tasks)
    if not tasks:
        raise ValueError("evaluate_with_lm_eval needs at least one task, got none.")
    if adapter_dir is not None and not Path(adapter_dir).is_dir():
        raise ValueError(f"Adapter folder {adapter_dir} does not exist.")
    lm_eval, hflm = _import_lm_eval()
    lm = _build_lm(hflm, base_model, adapter_dir, batch_size, device)
    logger.info("lm-eval: %s on %s (limit %s)", ",".join(tasks), base_model, limit)
    out = lm_eval.simple_evaluate(model=lm, tasks=tasks, limit=limit, num_fewshot=num_fewshot)
    return {
        task: {
            k: float(v)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        for task, metrics in out["results"].items()
    }
