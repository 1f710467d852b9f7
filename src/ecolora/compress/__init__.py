"""EcoLoRA's compression and its cross-round state: top-k, the adaptive density schedule, the
round-robin segments, the download replica and error-feedback residuals, held together by
:class:`EcoLoRACompressor` (one object every ``+ecolora`` method holds)."""

from ecolora.compress.ecolora import (
    DensityFn,
    EcoLoRACompressor,
    budget_density,
    density_fn,
    density_schedule,
    is_lora_a,
)
from ecolora.compress.masked import MASK_SUFFIX, MaskedTensor
from ecolora.compress.replica import DownloadReplica
from ecolora.compress.schedule import AdaptiveK, AdaptiveKConfig, lora_matrix
from ecolora.compress.segments import SegmentLayout, assign_segment
from ecolora.compress.state import SCOPES, ErrorFeedback, compress_owned
from ecolora.compress.topk import num_kept, sparsify_topk, topk_mask, topk_mask_joint

__all__ = [
    "MASK_SUFFIX",
    "SCOPES",
    "AdaptiveK",
    "AdaptiveKConfig",
    "DensityFn",
    "DownloadReplica",
    "EcoLoRACompressor",
    "ErrorFeedback",
    "MaskedTensor",
    "SegmentLayout",
    "assign_segment",
    "budget_density",
    "compress_owned",
    "density_fn",
    "density_schedule",
    "is_lora_a",
    "lora_matrix",
    "num_kept",
    "sparsify_topk",
    "topk_mask",
    "topk_mask_joint",
]
