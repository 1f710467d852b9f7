"""Prompt templates for SFT (``data.template``) and their encoding with response-only loss.

* ``alpaca``: Stanford Alpaca's prompt (:func:`ecolora.data.prompts.format_prompt`), encoded by
  :func:`ecolora.data.prompts.encode_sft` exactly as before templates existed.
* ``chat``: the tokenizer's own chat template (``tokenizer.apply_chat_template`` with
  ``add_generation_prompt=True``) over the row's turns (``messages`` rows) or one user turn
  (instruction, a blank line, input); an instruct model is then trained in its own format.
* ``plain``: instruction, input and earlier turns separated by blank lines, then the response.
* ``auto``: ``chat`` when the tokenizer has a chat template, else ``alpaca``; the built-in
  ``bigbench-ni`` source always resolves to ``alpaca`` so that reference results stay comparable.

Text rows (``data.format: text``) have no prompt under any template: every token is a target.
Labels are -100 on every prompt token; the response is followed by EOS (for SmolLM2 that is
``<|im_end|>``, the chat template's end of turn).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from ecolora.data.prompts import IGNORE_INDEX, encode_sft, format_prompt
from ecolora.data.sources import BUILTIN_SOURCES

logger = logging.getLogger("ecolora")

__all__ = ["TEMPLATES", "PromptTemplate", "encode_example", "render_prompt", "resolve_template"]

PromptTemplate = Literal["auto", "chat", "alpaca", "plain"]
TEMPLATES: tuple[PromptTemplate, ...] = ("auto", "chat", "alpaca", "plain")
_KEEP_TAIL = 8  # prompt tokens kept at its end when it is cut (the chat template's reply header)


def resolve_template(template: str, tokenizer: Any, source: str) -> str:
    """The concrete template (chat, alpaca or plain) for ``template`` and this tokenizer/source."""
    if template not in TEMPLATES:
        raise ValueError(f"`data.template` must be one of {', '.join(TEMPLATES)}, got {template!r}.")
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if template == "chat" and not has_chat:
        raise ValueError("`data.template` is chat but the tokenizer has no chat template; use alpaca or plain")
    if template != "auto":
        return template
    resolved = "alpaca" if source in BUILTIN_SOURCES or not has_chat else "chat"
    logger.info("Prompt template: %s (data.template=auto%s)", resolved,
                ", built-in source keeps its reference prompt" if source in BUILTIN_SOURCES else "")
    return resolved


def render_prompt(template: str, tokenizer: Any, row: Mapping[str, Any]) -> str:
    """The prompt text of ``row`` under a concrete template (empty for text rows)."""
    if row.get("text"):
        return ""
    if template == "alpaca":
        return format_prompt(row)
    turns: list[dict[str, str]] = list(row.get("messages") or [{"role": "user", "content": _user_text(row)}])
    if template == "chat":
        return str(tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True))
    if row.get("messages"):
        return "".join(f"{t['role']}: {t['content'].strip()}\n\n" for t in turns)
    return turns[0]["content"] + "\n\n"


def encode_example(tokenizer: Any, row: Mapping[str, Any], max_seq_len: int, template: str) -> dict[str, list[int]]:
    """``{"input_ids", "labels"}`` of prompt + response + EOS with labels -100 on the prompt.

    ``alpaca`` is :func:`encode_sft`. Otherwise, when prompt + response + EOS exceed
    ``max_seq_len``, the prompt is cut first (down to ``max_seq_len // 2`` tokens, keeping its
    last 8, the reply header), then the response at its end (and then gets no EOS).
    """
    if template == "alpaca" and not row.get("text"):
        return encode_sft(tokenizer, row, max_seq_len)
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError("The tokenizer has no `eos_token`; set one before encoding.")
    prompt = _ids(tokenizer, render_prompt(template, tokenizer, row))
    response = _ids(tokenizer, str(row["output"]).strip())
    if len(prompt) + len(response) + 1 > max_seq_len:
        budget = max(min(len(prompt), max_seq_len // 2), max_seq_len - len(response) - 1)
        if len(prompt) > budget:
            tail = min(_KEEP_TAIL, budget // 2)
            prompt = prompt[: budget - tail] + prompt[len(prompt) - tail :]
    space = max_seq_len - len(prompt)
    target = response + [eos_id] if len(response) + 1 <= space else response[:space]
    return {"input_ids": prompt + target, "labels": [IGNORE_INDEX] * len(prompt) + target}


def _user_text(row: Mapping[str, Any]) -> str:
    instruction, context = str(row.get("instruction") or "").strip(), str(row.get("input") or "").strip()
    return f"{instruction}\n\n{context}" if context else instruction


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []
