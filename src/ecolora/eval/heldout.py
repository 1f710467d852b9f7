"""Held-out scores of a finished run: its own held-out split, re-drawn from its ``config.yaml``.

The runner draws the held-out rows once, before partitioning (``ecolora.sim.setup.build_task``:
same source, ``data.limit``, ``data.eval_size`` and seed). Re-running that function on the run's
saved config gives the identical split, which is scored as:

* SFT runs: the token-weighted held-out loss (``held_out_loss``) and its perplexity;
* DPO runs: reward accuracy, reward margin and DPO loss against the adapter-disabled base
  (``preference_metrics``) with the run's ``train.dpo_beta``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ecolora.config import load_config
from ecolora.eval.loss import held_out_loss, perplexity
from ecolora.eval.preference import preference_metrics
from ecolora.sim.setup import build_task

__all__ = ["run_heldout"]


def run_heldout(
    model: torch.nn.Module, tokenizer: Any, run_dir: str | Path, *, batch_size: int = 8
) -> dict[str, Any]:
    """Score ``model`` on the held-out split of the run in ``run_dir`` (holding ``config.yaml``).

    Returns:
        ``{"suite": "heldout", "kind": "loss", "loss", "perplexity", "n"}`` for SFT runs, or
        ``{"suite": "heldout", "kind": "preference", ...}`` with ``preference_metrics``' fields for
        DPO runs (``model`` must then be a peft model).
    """
    config_path = Path(run_dir) / "config.yaml"
    if not config_path.is_file():
        raise ValueError(
            f"No config.yaml in {run_dir}: the 'heldout' suite re-draws a run's held-out split and "
            f"needs that run's directory; for a local file use the 'loss' suite with a path."
        )
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    config = load_config(config_path)
    task = build_task(config, tokenizer)
    examples = task.eval_examples
    if not examples:
        raise ValueError(f"The run in {run_dir} has an empty held-out split.")
    batches = [
        task.collate(examples[i : i + batch_size]) for i in range(0, len(examples), batch_size)
    ]
    if config.train.objective == "dpo":
        result = preference_metrics(model, batches, beta=config.train.dpo_beta)
        return {"suite": "heldout", "kind": "preference", **result}
    loss = held_out_loss(model, batches)
    return {
        "suite": "heldout",
        "kind": "loss",
        "loss": loss,
        "perplexity": perplexity(loss),
        "n": len(examples),
    }
