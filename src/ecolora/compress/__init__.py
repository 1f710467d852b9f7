"""Sparsifiers and their cross-round state: top-k, the adaptive density schedule, error feedback."""

from ecolora.compress.schedule import AdaptiveK, AdaptiveKConfig, lora_matrix
from ecolora.compress.state import SCOPES, ErrorFeedback
from ecolora.compress.topk import num_kept, sparsify_topk, topk_mask, topk_mask_joint

__all__ = [
    "SCOPES",
    "AdaptiveK",
    "AdaptiveKConfig",
    "ErrorFeedback",
    "lora_matrix",
    "num_kept",
    "sparsify_topk",
    "topk_mask",
    "topk_mask_joint",
]
