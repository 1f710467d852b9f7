"""The method registry: every ``method`` a run config can name, found by name.

Modelled on peft's ``register_peft_method``: one :class:`MethodSpec` per algorithm says which
strategy builds it, which config section holds its knobs, which loop runs its rounds, whether
``+ecolora`` applies and what it supports on Flower. Everything that dispatches on a method is
derived from this table: the validation of ``method`` (:mod:`ecolora.config`), the CLI help,
:func:`ecolora.strategies.build_strategy` and :func:`ecolora.sim.get_runner`. The ``method`` string
is parsed here and nowhere else (:func:`parse_method`).

This module is a leaf (it imports nothing of ecolora at run time), so the config can validate
against it. Built-in strategies are named by import path (``"module:attribute"``) and imported only
when a run builds one; a plug-in may register a factory object directly::

    register_method(MethodSpec("toy", strategy=ToyStrategy, help="my method"))

Adding a method: docs/algorithms.md ("Adding a method").
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = [
    "ECOLORA_SUFFIX",
    "Loop",
    "MethodSpec",
    "ParsedMethod",
    "StrategyFactory",
    "get_method",
    "method_help",
    "method_names",
    "parse_method",
    "register_method",
    "resolve_factory",
    "unregister_method",
]

Loop = Literal["sync", "hierarchical", "async"]


class StrategyFactory(Protocol):
    """``factory(config, initial_lora) -> Strategy`` (a RunConfig, named tensors; typed loosely so
    that this module imports nothing of ecolora: the config imports it)."""

    def __call__(self, config: Any, initial_lora: Mapping[str, Any], /) -> Any: ...


ECOLORA_SUFFIX = "+ecolora"


@dataclass(frozen=True)
class MethodSpec:
    """One algorithm as the rest of ecolora sees it.

    Attributes:
        name: what ``method:`` names (``fedit``); ``<name>+ecolora`` when ``ecolora`` is set.
        strategy: builds the plain method's strategy, ``factory(config, initial_lora)`` (a
            :class:`~ecolora.strategies.base.Strategy` subclass is one), or its ``"module:attr"`` path.
        ecolora: the same for ``<name>+ecolora``; None: EcoLoRA does not apply to this method.
        section: the :class:`~ecolora.config.RunConfig` section of its own knobs (None: none).
        loop: the round loop that runs it: ``sync`` (:mod:`ecolora.sim.sync_runner`), ``hierarchical``
            (:mod:`ecolora.sim.hier_runner`) or ``async`` (:mod:`ecolora.sim.async_runner`).
        segments: ``+ecolora`` splits each upload into ``ecolora.num_segments`` segments (so they
            must fit in a round's clients).
        flower_faults: simulated client faults (``faults.*``) work on Flower too.
        flower_resume: a Flower run can be resumed from the ServerApp's checkpoints.
        help: one line for the CLI's and the config's help.
    """

    name: str
    strategy: StrategyFactory | str
    ecolora: StrategyFactory | str | None = None
    section: str | None = None
    loop: Loop = "sync"
    segments: bool = True
    flower_faults: bool = True
    flower_resume: bool = True
    help: str = ""

    def __post_init__(self) -> None:
        if not self.name or "+" in self.name or self.name != self.name.strip():
            raise ValueError(f"A method name must be non-empty, without '+' or spaces, got {self.name!r}.")
        if self.loop not in ("sync", "hierarchical", "async"):
            raise ValueError(f"Method {self.name!r}: loop must be sync, hierarchical or async, got {self.loop!r}.")

    def factory(self, compressed: bool) -> StrategyFactory:
        """The strategy factory of ``name`` (``compressed``: of ``name+ecolora``)."""
        ref = self.ecolora if compressed else self.strategy
        if ref is None:
            raise ValueError(f"{self.name} has no {ECOLORA_SUFFIX} variant.")
        return resolve_factory(ref)


@dataclass(frozen=True)
class ParsedMethod:
    """A ``method`` value: the registered algorithm and whether EcoLoRA wraps it."""

    spec: MethodSpec
    compressed: bool

    @property
    def name(self) -> str:
        return self.spec.name + (ECOLORA_SUFFIX if self.compressed else "")


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Make ``spec.name`` a valid ``method``; a name already registered is refused."""
    if spec.name in _REGISTRY:
        raise ValueError(f"Method {spec.name!r} is already registered; pick another name.")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_method(name: str) -> None:
    """Forget a registered method (tests and plug-ins that register temporarily)."""
    get_method(name)
    del _REGISTRY[name]


def method_names(with_ecolora: bool = False) -> list[str]:
    """Registered names in registration order; ``with_ecolora`` adds every ``<name>+ecolora``."""
    names = []
    for spec in _REGISTRY.values():
        names.append(spec.name)
        if with_ecolora and spec.ecolora is not None:
            names.append(spec.name + ECOLORA_SUFFIX)
    return names


def get_method(name: str) -> MethodSpec:
    """The spec registered as ``name`` (without ``+ecolora``)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown method {name!r}; known: {', '.join(method_names(with_ecolora=True))}.") from None


def parse_method(method: str) -> ParsedMethod:
    """``"fedit+ecolora"`` -> (the fedit spec, compressed=True); the one parser of ``method``."""
    base, plus, wrapper = method.partition("+")
    if plus and plus + wrapper != ECOLORA_SUFFIX:
        raise ValueError(f"the wrapper must be {ECOLORA_SUFFIX}, got {method!r}.")
    spec = get_method(base)
    if plus and spec.ecolora is None:
        raise ValueError(
            f"EcoLoRA does not apply to {base}, so {method!r} is not a method; "
            f"known: {', '.join(method_names(with_ecolora=True))}."
        )
    return ParsedMethod(spec, compressed=bool(plus))


def method_help() -> str:
    """One line per method for the CLI and the config's help."""
    lines = []
    for spec in _REGISTRY.values():
        suffix = f" (also {spec.name}{ECOLORA_SUFFIX})" if spec.ecolora is not None else ""
        lines.append(f"{spec.name}{suffix}: {spec.help}")
    return "\n".join(lines)


def resolve_factory(ref: StrategyFactory | str) -> StrategyFactory:
    """A factory object as is; ``"module:attr"`` imported (built-ins load only when used)."""
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    factory: StrategyFactory = getattr(importlib.import_module(module), attr)
    return factory


# ---- built-in methods ----------------------------------------------------------------------------
_S = "ecolora.strategies."
for _spec in (
    MethodSpec("fedit", _S + "fedit:FedIT", ecolora=_S + "ecolora:ecolora_fedit",
               help="FedAvg over LoRA A and B (Zhang et al. 2024)."),
    MethodSpec("ffa", _S + "fedit:FFALoRA", ecolora=_S + "ecolora:ecolora_ffa",
               help="FFA-LoRA: A frozen, only B trained and sent (Sun et al. 2024)."),
    MethodSpec("flora", _S + "flora:FLoRA", ecolora=_S + "flora:flora_ecolora", section="flora", segments=False,
               flower_resume=False, help="FLoRA: stacking aggregation, heterogeneous ranks (Wang et al. 2024)."),
    MethodSpec("flasc", _S + "flasc:FLASC", section="flasc",
               help="FLASC: dense local training, top-k messages both ways (Kuo et al. 2024)."),
    MethodSpec("hierfedlora", _S + "hierfedlora:HierFedLoRA", ecolora=_S + "hierfedlora:hierfedlora_ecolora",
               section="hier", loop="hierarchical", flower_faults=False, flower_resume=False,
               help="HierFedLoRA: near-IID groups with intra-group rounds (Liu et al. 2025)."),
    MethodSpec("fedbuff", _S + "fedbuff:FedBuff", ecolora=_S + "fedbuff:FedBuffEcoLoRA", section="fedbuff",
               loop="async", flower_faults=False, flower_resume=False,
               help="FedBuff: asynchronous buffered aggregation (Nguyen et al. 2022)."),
):
    register_method(_spec)
