"""Device and precision of a run, resolved once at setup and passed down (STYLE.md item 10).

A :class:`Placement` says where the one base model lives (``train.device``), in which dtype its
frozen weights are kept (``model.dtype``), whether they are quantized (``model.quantization``,
bitsandbytes) and whether activations are recomputed in the backward pass
(``train.gradient_checkpointing``). LoRA weights and AdamW state stay float32, as peft keeps them
(``autocast_adapter_dtype``); a half-precision base trains under :func:`torch.autocast`.

Tensors cross from the device to the CPU at one boundary: ``get_lora_state`` copies the LoRA
tensors to host float32 before the codec and the byte ledger see them (one copy per message).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import resource
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard, get_args

import torch

from ecolora.config import ModelDtype, Quantization, RunConfig

__all__ = [
    "DTYPES",
    "DTypeName",
    "Placement",
    "QUANTIZATIONS",
    "Quantization",
    "apply_node_device",
    "check_quantization",
    "peak_memory_bytes",
    "placement_from_config",
    "reset_peak_memory",
    "resolve_device",
    "resolve_dtype",
    "shape_overrides",
    "synchronized",
    "to_device",
]

DTypeName = ModelDtype  # the config's model.dtype values
DTYPES: tuple[str, ...] = get_args(DTypeName)
QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)
_TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(spec: str) -> torch.device:
    """``auto | cpu | cuda | cuda:N | mps`` -> a :class:`torch.device` that exists on this machine.

    ``auto`` is ``cuda`` (device 0) when CUDA is available, else ``cpu``.
    """
    text = str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(text)
    except RuntimeError as exc:
        raise ValueError(
            f"`train.device` must be auto, cpu, cuda, cuda:N or mps, got {spec!r}."
        ) from exc
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        return _check_cuda(device, spec)
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"`train.device` is {spec!r} but MPS is not available here; use cpu or auto.")
        return device
    raise ValueError(f"`train.device` must be auto, cpu, cuda, cuda:N or mps, got {spec!r}.")


def _check_cuda(device: torch.device, spec: str) -> torch.device:
    if not torch.cuda.is_available():
        raise ValueError(
            f"`train.device` is {spec!r} but CUDA is not available on this machine "
            f"(torch {torch.__version__}); set train.device=cpu or auto."
        )
    index = 0 if device.index is None else device.index
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"`train.device` is {spec!r} but this machine has {count} CUDA device(s) (0..{count - 1}).")
    return torch.device("cuda", index)


def resolve_dtype(name: str) -> torch.dtype:
    """``float32 | bfloat16 | float16`` -> the torch dtype of the frozen base weights."""
    if name not in _TORCH_DTYPES:
        raise ValueError(f"`model.dtype` must be one of {', '.join(DTYPES)}, got {name!r}.")
    return _TORCH_DTYPES[name]


def _is_quantization(value: str) -> TypeGuard[Quantization]:
    return value in QUANTIZATIONS


def check_quantization(quantization: str, device: torch.device) -> Quantization:
    """``quantization`` if it can run here; else a one-line ValueError (no CUDA, no bitsandbytes)."""
    if not _is_quantization(quantization):
        raise ValueError(f"`model.quantization` must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}.")
    if quantization == "none":
        return quantization
    if device.type != "cuda":
        raise ValueError(
            f"model.quantization={quantization} needs a CUDA GPU (bitsandbytes) but the run's device "
            f"is {device}; set model.quantization=none or run on a CUDA machine."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError(
            f"model.quantization={quantization} needs bitsandbytes: pip install 'ecolora[gpu]'."
        )
    return quantization


@dataclass(frozen=True)
class Placement:
    """Where and how the base model runs; built once by :meth:`from_names`, then passed down."""

    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    quantization: Quantization = "none"
    gradient_checkpointing: bool = False

    @classmethod
    def from_names(
        cls,
        device: str = "cpu",
        dtype: str = "float32",
        quantization: str = "none",
        gradient_checkpointing: bool = False,
    ) -> Placement:
        """Resolve config strings (``train.device``, ``model.dtype``, ``model.quantization``)."""
        resolved = resolve_device(device)
        checked = check_quantization(quantization, resolved)
        return cls(resolved, resolve_dtype(dtype), checked, gradient_checkpointing)

    @property
    def half(self) -> bool:
        """True when the base computes in bfloat16/float16 (or is quantized with a half compute dtype)."""
        return self.dtype != torch.float32

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """``torch.autocast`` to the base dtype for a half-precision base, else a no-op."""
        if not self.half:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def describe(self) -> str:
        quant = "" if self.quantization == "none" else f", {self.quantization}"
        ckpt = ", gradient checkpointing" if self.gradient_checkpointing else ""
        return f"{self.device} {str(self.dtype).removeprefix('torch.')}{quant}{ckpt}"


def placement_from_config(config: RunConfig) -> Placement:
    """The run's placement: ``train.device``, ``model.dtype``, ``model.quantization``, checkpointing."""
    return Placement.from_names(
        config.train.device,
        config.model.dtype,
        config.model.quantization,
        config.train.gradient_checkpointing,
    )


def apply_node_device(config: RunConfig, node_config: Mapping[str, Any]) -> RunConfig:
    """``config`` with ``train.device`` taken from a Flower SuperNode's ``device`` node-config key.

    ``flower-supernode --node-config 'partition-id=0 num-partitions=2 device="cuda:1"'`` runs
    that node's ClientApp on GPU 1 whatever the run config says; without the key, unchanged.
    """
    if "device" not in node_config:
        return config
    device = str(node_config["device"])
    train = dataclasses.replace(config.train, device=device)  # validates the spelling
    return dataclasses.replace(config, train=train)


def shape_overrides(config: RunConfig) -> dict[str, int] | None:
    """``LlamaConfig`` overrides of a shape model from the config (``model.num_layers``)."""
    if config.model.num_layers is None:
        return None
    return {"num_hidden_layers": config.model.num_layers}


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Move every tensor of a batch dict to ``device`` (others pass through)."""
    non_blocking = device.type == "cuda"
    return {
        k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window (CUDA only; the CPU's peak RSS cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory: ``max_memory_allocated`` on CUDA, the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    if device.type == "mps":
        return int(torch.mps.driver_allocated_memory())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


@contextlib.contextmanager
def synchronized(device: torch.device) -> Iterator[None]:
    """Wait for queued device work before and after the block (honest wall-clock timing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
