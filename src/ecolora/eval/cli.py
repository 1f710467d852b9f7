"""Library side of ``ecolora eval``: load a base model (plus a run's adapter) and score one suite.

``adapter`` is a run's ``adapter/`` folder (PEFT format); its run directory's ``config.yaml`` gives
the default base model. Besides the registered suites (``ecolora.eval.suites``), ``heldout``
re-draws the run's own held-out split from that ``config.yaml`` (same source, limit and seed) and
reports the held-out loss (SFT runs) or reward accuracy and margin (DPO runs).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from ecolora.eval.suites import SUITES, get_suite, run_suite

logger = logging.getLogger("ecolora")

__all__ = ["DEFAULT_BASE_MODEL", "HELDOUT", "evaluate_adapter"]

DEFAULT_BASE_MODEL = "smollm2-135m"
HELDOUT = "heldout"


def _run_config(adapter: Path | None) -> dict[str, Any] | None:
    if adapter is None:
        return None
    path = adapter.parent / "config.yaml"
    if not path.is_file():
        return None
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else None


def _load(model_name: str, adapter: Path | None) -> tuple[Any, Any]:
    from ecolora.client.model import load_base_model

    model, tokenizer = load_base_model(model_name)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    return model, tokenizer


def _heldout(adapter: Path | None, model: Any, tokenizer: Any, batch_size: int) -> dict[str, Any]:
    """The run's held-out split, rebuilt by the runner's own ``build_task``."""
    if adapter is None or not (adapter.parent / "config.yaml").is_file():
        raise ValueError(
            "Suite 'heldout' needs --adapter inside a run directory (with its config.yaml), "
            "to re-draw that run's held-out split; for a local file use --suite loss --path FILE."
        )
    from ecolora.config import load_config
    from ecolora.sim.setup import build_task

    config = load_config(adapter.parent / "config.yaml")
    task = build_task(config, tokenizer)
    examples = task.eval_examples
    if not examples:
        raise ValueError(f"The run in {adapter.parent} has an empty held-out split.")
    batches = [
        task.collate(examples[i : i + batch_size]) for i in range(0, len(examples), batch_size)
    ]
    if config.train.objective == "dpo":
        from ecolora.eval.preference import preference_metrics

        result = preference_metrics(model, batches, beta=config.train.dpo_beta)
        return {"kind": "preference", **result}
    from ecolora.eval.loss import held_out_loss, perplexity

    loss = held_out_loss(model, batches)
    return {"kind": "loss", "loss": loss, "perplexity": perplexity(loss), "n": len(examples)}


def evaluate_adapter(
    *,
    adapter: Path | str | None,
    suite: str,
    model: str | None = None,
    limit: int | None = None,
    path: str | None = None,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Score base model (+ adapter) on ``suite``; returns ``run_suite``'s dict plus ``model`` and
    ``adapter``.

    Args:
        adapter: a PEFT adapter folder, or ``None`` for the base model alone.
        suite: a registered suite name or ``"heldout"``.
        model: the base model; default: the run's ``model.name``, else ``smollm2-135m``.
        limit: items per subset (see ``load_suite``).
        path: a local file or folder for the suite's data.
    """
    adapter_dir = Path(adapter).expanduser() if adapter is not None else None
    if adapter_dir is not None and not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"No PEFT adapter in {adapter_dir} (adapter_config.json missing).")
    if suite == HELDOUT and _run_config(adapter_dir) is None:
        _heldout(adapter_dir, None, None, batch_size)  # raises with the fix
    if suite != HELDOUT:
        kind = get_suite(suite).kind  # unknown names fail before the model loads
        if kind == "preference" and adapter_dir is None:
            raise ValueError(
                f"Suite {suite!r} compares an adapter with its base model: pass --adapter."
            )
    run_config = _run_config(adapter_dir)
    model_name = model or ((run_config or {}).get("model") or {}).get("name") or DEFAULT_BASE_MODEL
    net, tokenizer = _load(model_name, adapter_dir)
    logger.info("Scoring %s%s on %s", model_name, f" + {adapter_dir}" if adapter_dir else "", suite)
    if suite == HELDOUT:
        result = {"suite": HELDOUT, **_heldout(adapter_dir, net, tokenizer, batch_size)}
    else:
        result = run_suite(suite, net, tokenizer, limit=limit, batch_size=batch_size, path=path)
    return {**result, "model": model_name, "adapter": str(adapter_dir) if adapter_dir else None}


def known_suites() -> list[str]:
    """Names ``evaluate_adapter`` accepts."""
    return sorted([*SUITES, HELDOUT])
