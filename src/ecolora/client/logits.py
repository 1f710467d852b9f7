"""Log-probabilities at chosen positions only: the decoder once, the output head where scored.

Training and evaluation of a causal LM are dominated by the decoder, except for one piece that
scales with the vocabulary: the output head (``lm_head``, ``V`` columns) and its softmax. Only
the positions that carry a label need it, so :func:`gathered_logps` applies the head to those
hidden states only: an ``(N, V)`` matrix instead of ``(B, T, V)``. For SmolLM2 (``V = 49,152``)
the head costs about a fifth of the body per position, and the full logits of a batch of
8 x 256 tokens take 400 MB in float32. :func:`ecolora.client.train.sft_loss` (response tokens
only), the held-out loss and the multiple-choice scorer use it.
"""

from __future__ import annotations

import torch

__all__ = ["body_and_head", "gathered_logps"]


def body_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """The decoder stack (hidden states) and the output head of a transformers causal LM, or None.

    A peft model's LoRA layers live inside the base model's modules, so its body applies them.
    """
    get_base = getattr(model, "get_base_model", None)
    base = get_base() if get_base is not None else model
    get_decoder = getattr(base, "get_decoder", None)
    get_head = getattr(base, "get_output_embeddings", None)
    if get_decoder is None or get_head is None:
        return None
    body, head = get_decoder(), get_head()
    if body is None or head is None or body is base:
        return None
    return body, head


def gathered_logps(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    targets: torch.Tensor,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """``log p(targets[n] | tokens[rows[n], :cols[n] + 1])`` for each n, float32 ``(N,)``.

    ``attention_mask`` is a 2D padding mask ``(B, T)`` or a 4D additive mask ``(B, 1, T, T)``.
    Inputs may live on the CPU; they are moved to the model's device. A model that is not a
    transformers causal LM (no decoder/head split) computes full logits, then gathers.
    """
    device = next(model.parameters()).device
    inputs = {
        "input_ids": input_ids.to(device),
        "attention_mask": attention_mask.to(device),
        "position_ids": None if position_ids is None else position_ids.to(device),
        "use_cache": False,
    }
    rows, cols = rows.to(device), cols.to(device)
    split = body_and_head(model)
    if split is None:
        logits = model(**inputs).logits[rows, cols].float()  # (N, V)
    else:
        hidden = split[0](**inputs).last_hidden_state  # (B, T, H)
        logits = split[1](hidden[rows, cols]).float()  # (N, V): the head at scored positions only
    logps: torch.Tensor = logits.log_softmax(-1).gather(1, targets.to(device).unsqueeze(1)).squeeze(1)
    return logps  # (N,)
