"""LoRA adapters on a shared base model: attach, swap, merge and save.

LoRA (Hu et al., 2021, arXiv 2106.09685) freezes a base weight ``W0 (d_out, d_in)`` and learns
``W = W0 + (alpha / r) * B @ A`` with ``A (r, d_in)`` (Kaiming-uniform init) and ``B (d_out, r)``
(zero init), so only ``r * (d_in + d_out)`` values per adapted module are trained and sent.

A federated simulation holds **one** base model in memory. Each simulated client's adapter is a
small ``{key: tensor}`` dict: :func:`get_lora_state` copies the live LoRA tensors out,
:func:`set_lora_state` copies a client's tensors in place into the same parameters (no
re-allocation, so optimizer references stay valid). Keys are exactly those of
``peft.get_peft_model_state_dict`` (no adapter name), e.g.
``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``.

FLoRA (Wang et al., 2024, arXiv 2409.05976) merges the stacked client update
``dW = sum_k p_k B_k A_k`` into the base each round; :func:`add_to_base_weights` does that merge
in place and :func:`base_weight_snapshot` / :func:`restore_base_weights` copy the affected base
weights out and back exactly, so experiments sharing one base model can undo a merge bit-exactly
(subtracting ``dW`` again would not be exact in floating point).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import save_file
from torch import nn

__all__ = [
    "LoraSettings",
    "add_lora_adapter",
    "add_to_base_weights",
    "attach_lora",
    "base_weight_snapshot",
    "get_lora_state",
    "linear_module_names",
    "lora_delta_weights",
    "lora_layer_index",
    "lora_module_name",
    "num_lora_parameters",
    "restore_base_weights",
    "save_adapter",
    "set_lora_state",
    "use_adapter",
]

_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)(?:\.|$)")
_A_SUFFIX, _B_SUFFIX = ".lora_A.weight", ".lora_B.weight"


@dataclass
class LoraSettings:
    """LoRA hyperparameters (scaling ``alpha / r``); validated on construction."""

    r: int = field(default=8, metadata={"help": "LoRA rank; higher: more capacity, more bytes."})
    alpha: float = field(default=16, metadata={"help": "Scale numerator: dW = alpha/r * B @ A."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input, in [0, 1)."})
    target_modules: tuple[str, ...] = field(
        default=("q_proj", "v_proj"),
        metadata={"help": "Names of the Linear modules to adapt (suffix match, as peft does)."},
    )

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"`r` must be an integer >= 1, got {self.r!r}.")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, int | float):
            raise ValueError(f"`alpha` must be a number, got {self.alpha!r}.")
        if not math.isfinite(self.alpha) or self.alpha <= 0:
            raise ValueError(f"`alpha` must be a finite number > 0, got {self.alpha!r}.")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float):
            raise ValueError(f"`dropout` must be a number in [0, 1), got {self.dropout!r}.")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"`dropout` must be in [0, 1), got {self.dropout!r}.")
        given: Sequence[str] | str = self.target_modules  # a str: "q_proj,v_proj" from a CLI override
        if isinstance(given, str):
            given = given.split(",")
        modules = tuple(str(m).strip() for m in given)
        if not modules or any(not m for m in modules):
            raise ValueError(
                "`target_modules` must be a non-empty list of module names such as "
                f"('q_proj', 'v_proj'), got {self.target_modules!r}."
            )
        self.target_modules = tuple(dict.fromkeys(modules))

    @property
    def scaling(self) -> float:
        """The LoRA output scale ``alpha / r``."""
        return self.alpha / self.r

    def to_peft_config(self) -> LoraConfig:
        """The equivalent ``peft.LoraConfig`` (causal LM, no bias training)."""
        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,  # type: ignore[arg-type]  # peft annotates int; a float scales the same
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )


# ---------------------------------------------------------------- attach / adapters


def attach_lora(
    model: nn.Module, settings: LoraSettings, *, seed: int = 0, adapter_name: str = "default"
) -> PeftModel:
    """Wrap ``model`` with a LoRA adapter (in place: the base modules are shared, not copied).

    ``A`` is drawn Kaiming-uniform (``a = sqrt(5)``, i.e. ``U(-1/sqrt(d_in), 1/sqrt(d_in))``, as
    peft does) from a generator seeded with ``seed``; ``B`` is zero, so the wrapped model starts
    equal to the base. The caller's global RNG state is left untouched.

    Raises:
        ValueError: a target module name matches no ``nn.Linear`` of the model.
    """
    _check_targets(model, settings)
    with _quiet_peft():
        peft_model = get_peft_model(model, settings.to_peft_config(), adapter_name=adapter_name)
    _init_adapter(peft_model, adapter_name, seed)
    return peft_model


def add_lora_adapter(
    peft_model: PeftModel, name: str, settings: LoraSettings, *, seed: int
) -> None:
    """Add another adapter (possibly another rank) on the same base; it is not made active."""
    if name in peft_model.peft_config:
        raise ValueError(f"Adapter {name!r} already exists; adapters: {_adapters(peft_model)}.")
    _check_targets(peft_model, settings)
    with _quiet_peft():
        peft_model.add_adapter(name, settings.to_peft_config())
    _init_adapter(peft_model, name, seed)


def use_adapter(peft_model: PeftModel, name: str) -> None:
    """Make ``name`` the active (and only trainable) adapter."""
    if name not in peft_model.peft_config:
        raise ValueError(f"Adapter {name!r} not found; adapters: {_adapters(peft_model)}.")
    peft_model.set_adapter(name)


def linear_module_names(model: nn.Module) -> list[str]:
    """Sorted short names (last dotted part) of the model's ``nn.Linear`` modules."""
    names = set()
    for name, module in model.named_modules():
        short = name.rsplit(".", 1)[-1]
        inside_lora = ".lora_" in name or short == "base_layer"
        if isinstance(module, LoraLayer) or (isinstance(module, nn.Linear) and not inside_lora):
            names.add(short)
    return sorted(names)


@contextmanager
def _quiet_peft() -> Iterator[None]:
    """Keep peft's module construction off the global RNG; hide a transformers deprecation."""
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        yield


def _check_targets(model: nn.Module, settings: LoraSettings) -> None:
    known = linear_module_names(model)
    unknown = [m for m in settings.target_modules if m not in known]
    if unknown:
        raise ValueError(
            f"LoRA target_modules {unknown} are not Linear modules of this model; "
            f"its Linear module names are: {', '.join(known)}."
        )


def _adapters(peft_model: nn.Module) -> str:
    configs = getattr(peft_model, "peft_config", {})
    return ", ".join(sorted(configs)) or "(none)"


@torch.no_grad()
def _init_adapter(peft_model: nn.Module, adapter_name: str, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for key, param in _lora_params(peft_model, adapter_name).items():
        if key.endswith(_A_SUFFIX):
            values = torch.empty(param.shape, dtype=torch.float32)  # (r, d_in)
            nn.init.kaiming_uniform_(values, a=math.sqrt(5), generator=generator)
            param.copy_(values)
        else:
            param.zero_()  # (d_out, r)


# ---------------------------------------------------------------- state get / set


def _lora_params(model: nn.Module, adapter_name: str) -> dict[str, nn.Parameter]:
    """``{peft state-dict key: live parameter}`` for one adapter, in module (layer) order."""
    params: dict[str, nn.Parameter] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and adapter_name in module.lora_A:
            params[name + _A_SUFFIX] = _weight(module.lora_A[adapter_name])
            params[name + _B_SUFFIX] = _weight(module.lora_B[adapter_name])
    if not params:
        raise ValueError(
            f"No LoRA adapter {adapter_name!r} in this model; adapters: {_adapters(model)}. "
            "Call attach_lora(model, settings) first."
        )
    return params


def _weight(layer: nn.Module) -> nn.Parameter:
    weight = layer.weight
    if not isinstance(weight, nn.Parameter):
        raise TypeError(f"A LoRA factor must hold a weight parameter, got a {type(layer).__name__}.")
    return weight


def get_lora_state(model: nn.Module, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """Detached fp32 host copies of the adapter's ``lora_A``/``lora_B`` weights, in layer order.

    Keys equal ``peft.get_peft_model_state_dict(model, adapter_name=...)``'s keys. This is the one
    device->host boundary: whatever the model's device, the tensors come back on the CPU, where
    the codec, the strategies and the byte ledger work (``set_lora_state`` copies them back).
    """
    return {
        key: param.detach().to("cpu", torch.float32, copy=True)
        for key, param in _lora_params(model, adapter_name).items()
    }


@torch.no_grad()
def set_lora_state(
    model: nn.Module, state: Mapping[str, torch.Tensor], adapter_name: str = "default"
) -> None:
    """Copy ``state`` into the adapter's parameters in place (cast to their dtype/device).

    Strict: every key of the adapter must be given, no other key, with the same shapes.
    """
    params = _lora_params(model, adapter_name)
    _check_state(params, state, adapter_name)
    for key, param in params.items():
        param.copy_(state[key])


def _check_state(
    params: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], adapter_name: str
) -> None:
    missing = [k for k in params if k not in state]
    unknown = [k for k in state if k not in params]
    if missing or unknown:
        raise ValueError(
            f"LoRA state does not match adapter {adapter_name!r}: "
            f"missing keys {_head(missing)}, unknown keys {_head(unknown)}. "
            "Use keys from get_lora_state() of a model with the same target modules."
        )
    wrong = [
        f"{k}: expected {tuple(p.shape)}, got {tuple(state[k].shape)}"
        for k, p in params.items()
        if tuple(state[k].shape) != tuple(p.shape)
    ]
    if wrong:
        raise ValueError(
            f"LoRA state has wrong shapes for adapter {adapter_name!r} (rank mismatch?): "
            f"{_head(wrong)}."
        )


def _head(items: list[str], limit: int = 3) -> str:
    if not items:
        return "[]"
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return "[" + ", ".join(items[:limit]) + "]" + more


def num_lora_parameters(model: nn.Module, adapter_name: str = "default") -> int:
    """Number of trainable LoRA values of one adapter (what one client uploads uncompressed)."""
    return sum(p.numel() for p in _lora_params(model, adapter_name).values())


# ---------------------------------------------------------------- keys


def lora_layer_index(key: str) -> int:
    """Transformer block number in a key such as ``...layers.12.self_attn.q_proj.lora_A.weight``."""
    match = _LAYER.search(key)
    if match is None:
        raise ValueError(f"No layer number (`layers.<i>.`) in key {key!r}.")
    return int(match.group(1))


def lora_module_name(key: str) -> str:
    """The module name of a LoRA key: ``...q_proj.lora_A.weight`` -> ``...q_proj``."""
    for suffix in (_A_SUFFIX, _B_SUFFIX):
        if key.endswith(suffix):
            return key[: -len(suffix)]
    raise ValueError(f"Not a LoRA key (expected a '.lora_A.weight' or '.lora_B.weight' end): {key!r}.")


# ---------------------------------------------------------------- merging into the base


def lora_delta_weights(
    state: Mapping[str, torch.Tensor], scaling: float
) -> dict[str, torch.Tensor]:
    """``{module name: scaling * B @ A}`` (shape ``(d_out, d_in)``) for a LoRA state dict."""
    deltas: dict[str, torch.Tensor] = {}
    for key in state:
        if key.endswith(_A_SUFFIX):
            module = lora_module_name(key)
            lora_b = state.get(module + _B_SUFFIX)
            if lora_b is None:
                raise ValueError(f"LoRA state has {key!r} but no {module + _B_SUFFIX!r}.")
            deltas[module] = scaling * (lora_b @ state[key])  # (d_out, r) @ (r, d_in)
    return deltas


def _base_linears(model: nn.Module, names: Iterable[str] | None) -> dict[str, nn.Linear]:
    """Base ``nn.Linear`` under each named module (the wrapped layer for a LoRA module)."""
    modules = dict(model.named_modules())
    if names is None:
        names = [n for n, m in modules.items() if isinstance(m, LoraLayer)]
    names = list(names)
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise ValueError(
            f"Unknown module names {_head(unknown)}; use names like those of get_lora_state() "
            "keys without '.lora_A.weight' (see lora_module_name())."
        )
    linears: dict[str, nn.Linear] = {}
    for name in names:
        module = modules[name]
        base = module.get_base_layer() if isinstance(module, LoraLayer) else module
        if not isinstance(base, nn.Linear):
            raise ValueError(f"Module {name!r} is a {type(base).__name__}, not a Linear layer.")
        linears[name] = base
    return linears


@torch.no_grad()
def add_to_base_weights(model: nn.Module, deltas: Mapping[str, torch.Tensor]) -> None:
    """In place ``W0[name] += deltas[name]`` (each ``(d_out, d_in)``) on the base Linear weights.

    Used for FLoRA's merge of the stacked update into the shared base. Shapes are checked first,
    so a bad delta changes nothing.
    """
    linears = _base_linears(model, deltas.keys())
    wrong = [
        f"{n}: expected {tuple(lin.weight.shape)}, got {tuple(deltas[n].shape)}"
        for n, lin in linears.items()
        if tuple(deltas[n].shape) != tuple(lin.weight.shape)
    ]
    if wrong:
        raise ValueError(f"Delta shapes do not match the base weights: {_head(wrong)}.")
    for name, linear in linears.items():
        linear.weight.add_(deltas[name].to(linear.weight.device, linear.weight.dtype))


def base_weight_snapshot(
    model: nn.Module, module_names: Iterable[str] | None = None
) -> dict[str, torch.Tensor]:
    """Clones of the base Linear weights of ``module_names`` (default: every LoRA module)."""
    return {n: lin.weight.detach().clone() for n, lin in _base_linears(model, module_names).items()}


@torch.no_grad()
def restore_base_weights(model: nn.Module, snapshot: Mapping[str, torch.Tensor]) -> None:
    """Copy a :func:`base_weight_snapshot` back in place (bit-exact undo of merges)."""
    linears = _base_linears(model, snapshot.keys())
    for name, linear in linears.items():
        linear.weight.copy_(snapshot[name])


# ---------------------------------------------------------------- saving


def save_adapter(
    peft_model: PeftModel,
    state: Mapping[str, torch.Tensor],
    out_dir: str | Path,
    adapter_name: str = "default",
) -> None:
    """Write ``state`` as a PEFT adapter folder without touching the live weights.

    ``out_dir`` gets ``adapter_config.json`` and ``adapter_model.safetensors``, so
    ``PeftModel.from_pretrained(base_model, out_dir)`` loads it (as adapter ``"default"``).
    """
    params = _lora_params(peft_model, adapter_name)
    _check_state(params, state, adapter_name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {key: state[key].detach().to("cpu").contiguous() for key in params}
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    peft_model.peft_config[adapter_name].save_pretrained(str(out))
