"""Run configuration: dataclass sections, YAML loading, ``key=value`` overrides, validation.

A run is described by one :class:`RunConfig` with a section per concern (``model``, ``lora``,
``data``, ``train``, ``fed``, ``ecolora``, ``flora``, ``network``, ``eval``). YAML presets in
``configs/`` set a subset; everything else takes the defaults below. Unknown keys are errors that
list the valid keys, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import NoneType, UnionType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from ecolora.methods import ParsedMethod, parse_method
from ecolora.network.link import parse_scenario

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "ConfigError",
    "FaultConfig",
    "FedBuffConfig",
    "FlascConfig",
    "HierConfig",
    "DataConfig",
    "EcoLoRAConfig",
    "EvalConfig",
    "FedConfig",
    "FloraConfig",
    "LogConfig",
    "LoraConfig",
    "ModelConfig",
    "NetworkConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
]


# Enum-like settings: the allowed strings (each section's __post_init__ checks the value).
ModelDtype = Literal["float32", "bfloat16", "float16"]
Quantization = Literal["none", "8bit", "4bit"]
Partition = Literal["iid", "dirichlet", "task", "kmeans"]
DataFormat = Literal["auto", "dolly", "alpaca", "messages", "text"]
PromptTemplate = Literal["auto", "chat", "alpaca", "plain"]
Objective = Literal["sft", "dpo"]
WireDtype = Literal["float16", "float32"]
EcoAggregate = Literal["delta", "paper"]
Sparsification = Literal["adaptive", "fixed", "none"]
SparseEncoding = Literal["golomb", "coo", "coo32"]
ValueCoding = Literal["auto", "raw", "exponent"]
TopkScope = Literal["tensor", "global"]
Divergence = Literal["kl", "tv"]
Clock = Literal["simulated", "wall"]
NetworkBackend = Literal["analytic", "ns3"]

_Section = TypeVar("_Section", bound="DataclassInstance")


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message says what was expected."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _in_range(name: str, value: float, low: float, high: float) -> None:
    _check(low <= value <= high, f"`{name}` must be in [{low}, {high}], got {value}.")


@dataclass
class ModelConfig:
    name: str = field(
        default="smollm2-135m",
        metadata={"help": "Built-in name (smollm2-135m, tiny-llama, llama2-7b-shape, llama2-13b-shape, smollm2-135m-shape), local folder or hub id."},
    )
    dtype: ModelDtype = field(default="float32", metadata={"help": "Frozen base weights: float32, bfloat16 or float16 (half: autocast; LoRA and AdamW stay float32)."})
    quantization: Quantization = field(default="none", metadata={"help": "none, 8bit (LLM.int8) or 4bit (QLoRA nf4 + double quant); needs CUDA and `pip install 'ecolora[gpu]'`."})
    num_layers: int | None = field(default=None, metadata={"help": "Shape models only: build this many decoder layers (null: the full depth)."})

    def __post_init__(self) -> None:
        _check(self.dtype in ("float32", "bfloat16", "float16"), f"`model.dtype` must be float32, bfloat16 or float16, got {self.dtype!r}.")
        _check(self.quantization in ("none", "8bit", "4bit"), f"`model.quantization` must be none, 8bit or 4bit, got {self.quantization!r}.")
        _check(self.num_layers is None or self.num_layers >= 1, f"`model.num_layers` must be >= 1 or null, got {self.num_layers}.")


@dataclass
class LoraConfig:
    r: int = field(default=8, metadata={"help": "LoRA rank; higher: more capacity, more bytes."})
    alpha: float = field(default=16.0, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "v_proj"],
        metadata={"help": "Linear modules that get LoRA (the paper: self-attention q, v)."},
    )

    def __post_init__(self) -> None:
        _check(self.r >= 1, f"`lora.r` must be >= 1, got {self.r}.")
        _check(self.alpha > 0, f"`lora.alpha` must be > 0, got {self.alpha}.")
        _check(0 <= self.dropout < 1, f"`lora.dropout` must be in [0, 1), got {self.dropout}.")
        _check(len(self.target_modules) > 0, "`lora.target_modules` must name at least one module.")


@dataclass
class DataConfig:
    source: str = field(default="bigbench-ni", metadata={"help": "bigbench-ni, a local file/folder or a hub id."})
    limit: int | None = field(default=None, metadata={"help": "Use at most this many rows (seeded sample)."})
    eval_size: float = field(default=200, metadata={"help": "Held-out rows: a count (>= 1) or a fraction (< 1)."})
    max_seq_len: int = field(default=256, metadata={"help": "Tokens per example after truncation."})
    partition: Partition = field(default="dirichlet", metadata={"help": "iid, dirichlet, task or kmeans."})
    alpha: float = field(default=0.5, metadata={"help": "Dirichlet concentration; lower: more non-IID."})
    num_clusters: int = field(default=10, metadata={"help": "K-means clusters for partition=kmeans."})
    format: DataFormat = field(default="auto", metadata={"help": "Row format: auto (from the first row's fields), dolly, alpaca, messages (chat turns) or text."})
    columns: dict[str, str] = field(default_factory=dict, metadata={"help": "The file's column for each of ours, e.g. {instruction: question, output: answer}."})
    template: PromptTemplate = field(default="auto", metadata={"help": "Prompt: auto (the tokenizer's chat template if it has one; bigbench-ni keeps alpaca), chat, alpaca or plain."})

    def __post_init__(self) -> None:
        _check(self.format in ("auto", "dolly", "alpaca", "messages", "text"), f"`data.format` must be one of auto, dolly, alpaca, messages, text, got {self.format!r}.")
        _check(self.template in ("auto", "chat", "alpaca", "plain"), f"`data.template` must be one of auto, chat, alpaca, plain, got {self.template!r}.")
        _check(self.partition in ("iid", "dirichlet", "task", "kmeans"), f"`data.partition` must be one of iid, dirichlet, task, kmeans, got {self.partition!r}.")
        _check(self.alpha > 0, f"`data.alpha` must be > 0, got {self.alpha}.")
        _check(self.max_seq_len >= 16, f"`data.max_seq_len` must be >= 16, got {self.max_seq_len}.")
        _check(self.eval_size > 0, f"`data.eval_size` must be > 0, got {self.eval_size}.")
        _check(self.limit is None or self.limit >= 2, f"`data.limit` must be >= 2 or null, got {self.limit}.")


@dataclass
class TrainConfig:
    objective: Objective = field(default="sft", metadata={"help": "sft (instruction tuning) or dpo."})
    lr: float = field(default=3e-4, metadata={"help": "AdamW learning rate of local training."})
    batch_size: int = field(default=4, metadata={"help": "Examples per local step."})
    local_steps: int = field(default=10, metadata={"help": "Optimizer steps per client per round."})
    grad_accum: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping (0 disables)."})
    dpo_beta: float = field(default=0.1, metadata={"help": "DPO temperature beta."})
    num_threads: int | None = field(default=None, metadata={"help": "torch CPU threads (null: torch's default)."})
    device: str = field(default="auto", metadata={"help": "auto (cuda if available, else cpu), cpu, cuda, cuda:N or mps; one base model there for all simulated clients."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in the backward pass: less device memory, ~30% more compute."})
    force: bool = field(default=False, metadata={"help": "Train a model above 1B parameters on the CPU anyway (`ecolora run --force`); otherwise refused."})

    def __post_init__(self) -> None:
        _check(self.objective in ("sft", "dpo"), f"`train.objective` must be sft or dpo, got {self.objective!r}.")
        _check(self.lr > 0, f"`train.lr` must be > 0, got {self.lr}.")
        for name in ("batch_size", "local_steps", "grad_accum"):
            _check(getattr(self, name) >= 1, f"`train.{name}` must be >= 1, got {getattr(self, name)}.")
        _check(_DEVICE.match(str(self.device).lower()) is not None, f"`train.device` must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}.")


@dataclass
class FedConfig:
    num_clients: int = field(default=20, metadata={"help": "Total simulated clients K."})
    clients_per_round: int = field(default=5, metadata={"help": "Clients sampled per round N_t."})
    rounds: int = field(default=12, metadata={"help": "Communication rounds R."})
    eval_every: int = field(default=1, metadata={"help": "Evaluate the global adapter every N rounds (0: only at the end)."})
    wire_dtype: WireDtype = field(default="float16", metadata={"help": "Dense value dtype on the wire: float16 or float32."})
    checkpoint_every: int = field(default=1, metadata={"help": "Checkpoint every N rounds and after the last (0: never); `ecolora run --resume DIR` continues from it."})

    def __post_init__(self) -> None:
        _check(self.num_clients >= 1, f"`fed.num_clients` must be >= 1, got {self.num_clients}.")
        _check(
            1 <= self.clients_per_round <= self.num_clients,
            f"`fed.clients_per_round` must be in [1, num_clients={self.num_clients}], got {self.clients_per_round}.",
        )
        _check(self.rounds >= 1, f"`fed.rounds` must be >= 1, got {self.rounds}.")
        _check(self.eval_every >= 0, f"`fed.eval_every` must be >= 0, got {self.eval_every}.")
        _check(self.wire_dtype in ("float16", "float32"), f"`fed.wire_dtype` must be float16 or float32, got {self.wire_dtype!r}.")
        _check(self.checkpoint_every >= 0, f"`fed.checkpoint_every` must be >= 0, got {self.checkpoint_every}.")


@dataclass
class EcoLoRAConfig:
    """Knobs of the EcoLoRA wrapper (Liu et al. 2025); used by ``method: <base>+ecolora``."""

    num_segments: int = field(default=5, metadata={"help": "N_s round-robin segments (<= clients per round)."})
    beta: float = field(default=0.5, metadata={"help": "Staleness decay beta of eq. 3; larger: trust the global more."})
    k_max: float = field(default=0.95, metadata={"help": "Density at the start of training (eq. 4)."})
    k_min_a: float = field(default=0.6, metadata={"help": "Lowest density for LoRA A."})
    k_min_b: float = field(default=0.5, metadata={"help": "Lowest density for LoRA B."})
    gamma_a: float = field(default=1.0, metadata={"help": "Decay rate of A's density with loss progress."})
    gamma_b: float = field(default=2.0, metadata={"help": "Decay rate of B's density (paper: larger than A's)."})
    aggregate: EcoAggregate = field(default="delta", metadata={"help": "delta: clients send updates, the server adds their mean and keeps a download replica; paper: eqs. 2-6 literally on parameters (explicit masks, per-client download state). See docs/usage.md."})
    segments: bool = field(default=True, metadata={"help": "Ablation switch: round-robin segment sharing."})
    sparsification: Sparsification = field(default="adaptive", metadata={"help": "adaptive, fixed (same budget) or none."})
    fixed_density: float | None = field(default=None, metadata={"help": "Density for sparsification=fixed: the adaptive run's budget (mean upload_density of its metrics.jsonl; Table 3)."})
    encoding: SparseEncoding = field(default="golomb", metadata={"help": "Positions: golomb (lossless coding, the smallest format per tensor), coo (16-bit indices: the paper's 'w/o encoding') or coo32 (int32 indices)."})
    value_coding: ValueCoding = field(default="auto", metadata={"help": "Values: auto (fp16, exponent-coded where smaller), raw (fp16 words) or exponent (always exponent-coded)."})
    download_sparsification: bool = field(default=True, metadata={"help": "Also sparsify server->client messages."})
    error_feedback: bool = field(default=True, metadata={"help": "Keep residuals of what top-k dropped (eqs. 5-6)."})

    def __post_init__(self) -> None:
        _check(self.num_segments >= 1, f"`ecolora.num_segments` must be >= 1, got {self.num_segments}.")
        _check(self.beta >= 0, f"`ecolora.beta` must be >= 0, got {self.beta}.")
        for name in ("k_max", "k_min_a", "k_min_b"):
            _in_range(f"ecolora.{name}", getattr(self, name), 0.0, 1.0)
        if self.fixed_density is not None:
            _in_range("ecolora.fixed_density", self.fixed_density, 0.0, 1.0)
        _check(self.sparsification != "fixed" or self.fixed_density is not None,
               "`ecolora.fixed_density` must be set with sparsification=fixed: Table 3 fixes the adaptive run's budget, "
               "its mean `upload_density` (metrics.jsonl; ecolora.compress.budget_density), got null.")
        _check(self.k_min_a <= self.k_max and self.k_min_b <= self.k_max, f"`ecolora.k_min_a` and `k_min_b` must be <= k_max ({self.k_max}), got {self.k_min_a} and {self.k_min_b}.")
        _check(self.aggregate in ("delta", "paper"), f"`ecolora.aggregate` must be delta or paper, got {self.aggregate!r}.")
        _check(self.value_coding in ("auto", "raw", "exponent"), f"`ecolora.value_coding` must be auto, raw or exponent, got {self.value_coding!r}.")
        _check(self.sparsification in ("adaptive", "fixed", "none"), f"`ecolora.sparsification` must be adaptive, fixed or none, got {self.sparsification!r}.")
        _check(self.encoding in ("golomb", "coo", "coo32"), f"`ecolora.encoding` must be golomb, coo or coo32, got {self.encoding!r}.")


@dataclass
class FloraConfig:
    ranks: list[int] | None = field(default=None, metadata={"help": "Client ranks cycled over client ids (null: all lora.r)."})

    def __post_init__(self) -> None:
        _check(self.ranks is None or (len(self.ranks) > 0 and min(self.ranks) >= 1), f"`flora.ranks` must be a non-empty list of ranks >= 1, got {self.ranks}.")


@dataclass
class FlascConfig:
    """FLASC / CELLM sparse LoRA communication (Kuo et al. 2024): dense local training, top-k messages."""

    download_density: float = field(default=0.25, metadata={"help": "Fraction of LoRA values sent server->client (top-k of the global LoRA)."})
    upload_density: float = field(default=0.25, metadata={"help": "Fraction of LoRA values sent client->server (top-k of the update)."})
    error_feedback: bool = field(default=False, metadata={"help": "Clients keep residuals of what upload top-k dropped."})
    scope: TopkScope = field(default="tensor", metadata={"help": "tensor (each LoRA matrix keeps its share) or global (one threshold over all)."})

    def __post_init__(self) -> None:
        for name in ("download_density", "upload_density"):
            value = getattr(self, name)
            _check(0.0 < value <= 1.0, f"`flasc.{name}` must be in (0, 1], got {value}.")
        _check(self.scope in ("tensor", "global"), f"`flasc.scope` must be tensor or global, got {self.scope!r}.")


@dataclass
class HierConfig:
    """HierFedLoRA (Liu et al. 2025): near-IID client groups, per-group frequency and depth."""

    num_groups: int = field(default=2, metadata={"help": "Client groups formed to be near-IID (<= fed.num_clients)."})
    divergence: Divergence = field(default="kl", metadata={"help": "Group-vs-global category divergence the grouping minimises: kl or tv."})
    intra_rounds: int | None = field(default=None, metadata={"help": "tau_g for all groups (null: set by the controller)."})
    depth: int | None = field(default=None, metadata={"help": "Top layers d_g trained by every group (null: set by the controller)."})
    max_intra_rounds: int = field(default=3, metadata={"help": "Upper bound on tau_g for the controller; higher: more intra-group traffic."})
    budget: float | None = field(default=None, metadata={"help": "Layer-rounds per client per global round, tau_g * d_g <= budget (null: the number of LoRA layers)."})
    intra_link: str | None = field(default=None, metadata={"help": "Intra-group link as uplink/downlink Mbps, e.g. 20/100 (null: each client's own link)."})
    replan_every: int = field(default=0, metadata={"help": "Re-plan tau_g and d_g every N global rounds from the divergence of each group's participants that round (0: plan once before round 1)."})

    def __post_init__(self) -> None:
        _check(self.num_groups >= 1, f"`hier.num_groups` must be >= 1, got {self.num_groups}.")
        _check(self.divergence in ("kl", "tv"), f"`hier.divergence` must be kl or tv, got {self.divergence!r}.")
        _check(self.max_intra_rounds >= 1, f"`hier.max_intra_rounds` must be >= 1, got {self.max_intra_rounds}.")
        _check(self.replan_every >= 0, f"`hier.replan_every` must be >= 0 (0: plan once), got {self.replan_every}.")
        for name in ("intra_rounds", "depth"):
            value = getattr(self, name)
            _check(value is None or value >= 1, f"`hier.{name}` must be >= 1 or null, got {value}.")
        _check(self.budget is None or self.budget >= 1, f"`hier.budget` must be >= 1 (layer-rounds) or null, got {self.budget}.")
        if self.intra_link is not None:
            try:
                parse_scenario(self.intra_link)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"`hier.intra_link` must look like UPLINK/DOWNLINK in Mbps (e.g. 20/100), got {self.intra_link!r}.") from exc


@dataclass
class FedBuffConfig:
    """FedBuff (Nguyen et al., AISTATS 2022): asynchronous buffered aggregation (simulated time, or the wall clock)."""

    buffer_size: int = field(default=3, metadata={"help": "M: aggregate as soon as M updates arrived."})
    concurrency: int = field(default=5, metadata={"help": "Clients training at the same time (<= fed.num_clients)."})
    staleness_exponent: float = field(default=0.5, metadata={"help": "Stale updates weighted by (1 + s)^-a; 0.5 is the paper's 1/sqrt(1 + s)."})
    speed_sigma: float = field(default=0.5, metadata={"help": "Log-normal spread of client compute speeds (0: all alike)."})
    link: str | None = field(default=None, metadata={"help": "Median client link, uplink/downlink Mbps (null: the first of network.scenarios)."})
    link_sigma: float = field(default=0.5, metadata={"help": "Log-normal spread of client link rates (0: all alike)."})
    step_time_s: float | None = field(default=None, metadata={"help": "Seconds per local step of the median device (null: measured compute; set it for a reproducible event order)."})
    server_lr: float = field(default=1.0, metadata={"help": "Server step on the buffered mean update."})
    clock: Clock = field(default="simulated", metadata={"help": "simulated: arrivals in simulated time from the link and compute model (reproducible); wall: in the order replies really come in (Flower deployments)."})

    def __post_init__(self) -> None:
        _check(self.clock in ("simulated", "wall"), f"`fedbuff.clock` must be simulated or wall, got {self.clock!r}.")
        _check(not (self.clock == "wall" and self.step_time_s is not None), "`fedbuff.step_time_s` simulates compute time; with fedbuff.clock=wall compute is real: unset one of them.")
        _check(self.buffer_size >= 1, f"`fedbuff.buffer_size` must be >= 1, got {self.buffer_size}.")
        _check(self.concurrency >= 1, f"`fedbuff.concurrency` must be >= 1, got {self.concurrency}.")
        for name in ("staleness_exponent", "speed_sigma", "link_sigma"):
            _check(getattr(self, name) >= 0, f"`fedbuff.{name}` must be >= 0, got {getattr(self, name)}.")
        _check(self.server_lr > 0, f"`fedbuff.server_lr` must be > 0, got {self.server_lr}.")
        _check(self.step_time_s is None or self.step_time_s > 0, f"`fedbuff.step_time_s` must be > 0 or null, got {self.step_time_s}.")
        if self.link is not None:
            try:
                parse_scenario(self.link)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"`fedbuff.link` must look like UPLINK/DOWNLINK in Mbps (e.g. 1/5), got {self.link!r}.") from exc


@dataclass
class FaultConfig:
    """Simulated client faults (reliability tests and robustness studies)."""

    dropout: float = field(default=0.0, metadata={"help": "Probability a sampled client never replies."})
    straggler: float = field(default=0.0, metadata={"help": "Probability a client misses the round deadline."})
    upload_failure: float = field(default=0.0, metadata={"help": "Probability an upload breaks mid-transfer."})
    nonfinite: float = field(default=0.0, metadata={"help": "Probability a client's trained LoRA holds NaN/Inf (its reply is rejected as non_finite)."})
    clip_norm: float | None = field(default=None, metadata={"help": "Clip each client update to this L2 norm before averaging (null: no clipping)."})
    max_num_examples: int | None = field(default=None, metadata={"help": "Reject an update that declares more training examples (null: no bound)."})

    def __post_init__(self) -> None:
        for name in ("dropout", "straggler", "upload_failure", "nonfinite"):
            _in_range(f"faults.{name}", getattr(self, name), 0.0, 1.0)
        _check(self.clip_norm is None or self.clip_norm > 0, f"`faults.clip_norm` must be > 0 or null, got {self.clip_norm}.")
        _check(self.max_num_examples is None or self.max_num_examples >= 1, f"`faults.max_num_examples` must be >= 1 or null, got {self.max_num_examples}.")


@dataclass
class NetworkConfig:
    scenarios: list[str] = field(default_factory=lambda: ["0.2/1", "1/5", "2/10", "5/25"], metadata={"help": "Link scenarios (uplink/downlink Mbps) to time each round under."})
    backend: NetworkBackend = field(default="analytic", metadata={"help": "analytic (TCP model) or ns3."})
    compute_scale: float = field(default=1.0, metadata={"help": "Multiply measured compute time (device speed factor)."})

    def __post_init__(self) -> None:
        _check(self.backend in ("analytic", "ns3"), f"`network.backend` must be analytic or ns3, got {self.backend!r}.")
        _check(self.compute_scale > 0, f"`network.compute_scale` must be > 0, got {self.compute_scale}.")


@dataclass
class EvalConfig:
    suites: list[str] = field(default_factory=list, metadata={"help": "Extra suites to score (bigbench-mc, arc, mmlu, preference)."})
    every: int = field(default=0, metadata={"help": "Score the suites every N rounds (0: only at the end)."})
    limit: int | None = field(default=200, metadata={"help": "Items per suite."})
    batch_size: int = field(default=8, metadata={"help": "Eval batch size."})


@dataclass
class LogConfig:
    """Where training metrics go besides metrics.jsonl and the PNG plots."""

    tensorboard: bool = field(default=False, metadata={"help": "Also write TensorBoard scalars to RUN/tensorboard/ (needs ecolora[tensorboard])."})
    wandb: bool = field(default=False, metadata={"help": "Also log the same scalars to Weights & Biases, offline into RUN/wandb/ unless WANDB_MODE says otherwise (needs ecolora[wandb])."})
    wandb_project: str = field(default="ecolora", metadata={"help": "W&B project name for log.wandb."})


@dataclass
class RunConfig:
    method: str = field(default="fedit", metadata={"help": "A registered method (ecolora.methods), e.g. fedit, fedit+ecolora, flora, flasc, hierfedlora, fedbuff."})
    seed: int = field(default=0, metadata={"help": "Seed of every random choice in the run."})
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    fed: FedConfig = field(default_factory=FedConfig)
    ecolora: EcoLoRAConfig = field(default_factory=EcoLoRAConfig)
    flora: FloraConfig = field(default_factory=FloraConfig)
    flasc: FlascConfig = field(default_factory=FlascConfig)
    hier: HierConfig = field(default_factory=HierConfig)
    fedbuff: FedBuffConfig = field(default_factory=FedBuffConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        parsed = self.parsed_method
        if parsed.compressed and self.ecolora.segments and parsed.spec.segments:
            _check(
                self.ecolora.num_segments <= self.fed.clients_per_round,
                f"`ecolora.num_segments` must be <= clients per round ({self.fed.clients_per_round}), got {self.ecolora.num_segments}.",
            )
        _check_method_sections(self, parsed)

    @property
    def parsed_method(self) -> ParsedMethod:
        """``method`` as the registry knows it (:func:`ecolora.methods.parse_method`)."""
        try:
            return parse_method(self.method)
        except ValueError as exc:
            raise ConfigError(f"`method`: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        return _build(cls, data, prefix="")


def _check_method_sections(config: RunConfig, parsed: ParsedMethod) -> None:
    """Checks that tie a method's own section to the rest of the config (hier, fedbuff)."""
    section = parsed.spec.section
    if section == "hier":
        _check(config.hier.num_groups <= config.fed.num_clients, f"`hier.num_groups` must be <= fed.num_clients ({config.fed.num_clients}), got {config.hier.num_groups}.")
    if section == "fedbuff":
        _check(config.fedbuff.concurrency <= config.fed.num_clients, f"`fedbuff.concurrency` must be <= fed.num_clients ({config.fed.num_clients}), got {config.fedbuff.concurrency}.")
        _check(config.fedbuff.clock == "wall" or config.fedbuff.link is not None or len(config.network.scenarios) > 0, "`fedbuff` needs a client link: set fedbuff.link (e.g. 1/5) or network.scenarios.")
        _check(not parsed.compressed or config.ecolora.aggregate == "delta", f"`fedbuff+ecolora` needs ecolora.aggregate=delta (asynchronous updates are deltas), got {config.ecolora.aggregate!r}.")


def _build(cls: type[_Section], data: Mapping[str, Any], prefix: str) -> _Section:
    if not isinstance(data, Mapping):
        raise ConfigError(f"`{prefix.rstrip('.') or 'config'}` must be a mapping, got {type(data).__name__}.")
    known = {f.name: f for f in fields(cls)}
    hints = get_type_hints(cls)
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"Unknown key(s) {', '.join(prefix + k for k in unknown)}; valid keys: "
            f"{', '.join(prefix + k for k in known)}."
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        factory = known[name].default_factory
        default = factory() if callable(factory) else None
        if dataclasses.is_dataclass(default) and not isinstance(default, type):  # a section
            kwargs[name] = _build(type(default), value or {}, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(prefix + name, value, hints[name])
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - defensive
        raise ConfigError(str(exc)) from exc


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Light type checking of scalars so that ``lr: "abc"`` fails here with the key's name.

    ``annotation`` is the field's resolved type (``int``, ``float | None``, ``list[str]``,
    ``Literal[...]``); Literal values are checked by the section's ``__post_init__``.
    """
    args = get_args(annotation)
    if get_origin(annotation) in (Union, UnionType):  # X | None
        if value is None:
            _check(NoneType in args, f"`{key}` must not be null.")
            return None
        annotation = next(a for a in args if a is not NoneType)
    elif value is None:
        raise ConfigError(f"`{key}` must not be null.")
    kind = get_origin(annotation) or annotation
    if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"`{key}` must be a number, got {value!r}.")
    if kind is int and isinstance(value, float):
        _check(value.is_integer(), f"`{key}` must be an integer, got {value!r}.")
        return int(value)
    if kind is float and isinstance(value, int):
        return float(value)
    if kind is bool:
        _check(isinstance(value, bool), f"`{key}` must be true or false, got {value!r}.")
    if kind is dict:
        _check(isinstance(value, Mapping) and all(isinstance(v, str) for v in value.values()), f"`{key}` must be a mapping of names to names, got {value!r}.")
        return dict(value)
    if kind is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        _check(isinstance(value, list), f"`{key}` must be a list, got {value!r}.")
    if kind is str:
        _check(isinstance(value, str), f"`{key}` must be a string, got {value!r}.")
    return value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a nested dict in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"Override must look like key=value (e.g. fed.rounds=5), got {item!r}.")
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"Cannot set {key!r}: {part!r} is not a section.")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return data


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Load a YAML preset (or the defaults when ``path`` is None) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist.")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"Config file {path} must hold a mapping, got {type(loaded).__name__}.")
        data = loaded or {}
    return RunConfig.from_dict(apply_overrides(data, overrides))
