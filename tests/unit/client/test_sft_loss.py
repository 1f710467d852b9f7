"""sft_loss (output head at labelled positions only) equals transformers' loss from ``labels``."""

from __future__ import annotations

import torch
from tiny_lm import make_model, make_tokenizer, wrap_lora

from ecolora.client.train import sft_loss
from ecolora.data.prompts import collate_sft, encode_sft

ROWS = [
    {"instruction": "what is the capital of france ?", "input": "", "output": "paris"},
    {"instruction": "the sky is", "input": "a cat sits on the mat", "output": "blue and the grass is green"},
]


def test_sft_loss_and_gradients_equal_the_full_logits_loss() -> None:
    tokenizer = make_tokenizer()
    model = wrap_lora(make_model())
    model.train()
    batch = collate_sft([encode_sft(tokenizer, r, 32) for r in ROWS], int(tokenizer.pad_token_id))
    loss, _ = sft_loss(model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    reference = model(**batch).loss
    reference.backward()
    torch.testing.assert_close(loss, reference, rtol=1e-6, atol=1e-6)
    assert grads and all(
        torch.allclose(grads[n], p.grad, rtol=1e-5, atol=1e-7) for n, p in model.named_parameters() if n in grads
    )
