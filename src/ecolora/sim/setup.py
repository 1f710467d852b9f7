"""Everything a run needs before round 1: model, LoRA, data, partitions, trainer, strategy, clients.

Kept apart from the round loop so the Flower ClientApp/ServerApp can build the same pieces.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecolora.cache import AssetError
from ecolora.client.device import placement_from_config, shape_overrides
from ecolora.client.dpo import collate_preference, dpo_batch_loss, encode_preference
from ecolora.client.lora import (
    LoraSettings,
    add_lora_adapter,
    attach_lora,
    get_lora_state,
)
from ecolora.client.model import BUILTIN_MODELS, check_model_fits_device, load_base_model
from ecolora.client.train import LocalTrainer, LossFn, sft_loss
from ecolora.config import RunConfig
from ecolora.data import (
    collate_sft,
    load_instruction_rows,
    make_partitioner,
    partition_stats,
    resolve_partition,
    split_train_eval,
)
from ecolora.data.preference import load_preference_rows
from ecolora.data.templates import encode_example, resolve_template
from ecolora.eval.loss import held_out_loss
from ecolora.rundir import SetupError
from ecolora.sim.runtime import SharedModel, SimClient
from ecolora.strategies import build_strategy
from ecolora.strategies.base import Strategy

logger = logging.getLogger("ecolora")

__all__ = [
    "RunSetup",
    "TaskData",
    "build_setup",
    "build_task",
    "base_model_id",
    "seed_everything",
    "setup_step",
]

# Built-in models that are (de-quantized copies of) hub models: what an adapter names as its base.
HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}

MODEL_FIX = (
    f"set model.name to a built-in ({', '.join(BUILTIN_MODELS)}), a local folder with config.json, "
    "or a hub id 'org/name' (a hub id needs the network, or a cached copy and HF_HUB_OFFLINE=1)"
)
DATA_FIX = (
    "set data.source to bigbench-ni, a .json/.jsonl/.parquet file or folder in Dolly or Alpaca "
    "form, or a hub dataset id (docs/data.md)"
)


@contextmanager
def setup_step(what: str, fix: str) -> Iterator[None]:
    """Turn an expected failure of one setup step into a one-line :class:`SetupError`:
    ``"<what>: <cause>; <fix>"`` (the original exception stays chained for ``--debug``)."""
    try:
        yield
    except SetupError:
        raise
    except (OSError, ValueError, AssetError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        cause = " ".join(lines[:3]).rstrip(".") or type(exc).__name__
        raise SetupError(f"{what}: {cause}; {fix}.") from exc


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TaskData:
    """Tokenized train/eval examples and how to batch, train and score them."""

    train_examples: list[dict[str, Any]]
    eval_examples: list[dict[str, Any]]
    train_rows: list[dict[str, Any]]
    collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]
    loss_fn: LossFn


@dataclass
class RunSetup:
    strategy: Strategy
    clients: list[SimClient]
    eval_client: SimClient
    eval_fn: Callable[[], float]
    shared: SharedModel
    lora_numel: int
    num_train_examples: int
    num_eval_examples: int
    partition_stats: dict[str, Any]
    tokenizer: Any = None
    base_model: str | None = None  # config.model.name

    def save_adapter(self, out_dir: Path) -> None:
        """The global adapter in PEFT format, with the base's hub id or folder and the tokenizer,
        so ``AutoPeftModelForCausalLM.from_pretrained(out_dir)`` works on any machine."""
        self.strategy.save_adapter(self.shared.model, out_dir)
        if self.base_model is not None:
            config_path = Path(out_dir) / "adapter_config.json"
            adapter_config = json.loads(config_path.read_text(encoding="utf-8"))
            adapter_config["base_model_name_or_path"] = base_model_id(self.base_model)
            config_path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True), encoding="utf-8")
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(out_dir))


def base_model_id(name: str) -> str:
    """What an adapter records as ``base_model_name_or_path``: the hub id of a built-in that has
    one, the absolute path of a local folder, else the name (a hub id, or ``tiny-llama``, which
    only ecolora can build)."""
    if name in HUB_IDS:
        return HUB_IDS[name]
    folder = Path(name).expanduser()
    return str(folder.resolve()) if folder.is_dir() else name


def build_task(config: RunConfig, tokenizer: Any) -> TaskData:
    """Load rows, draw the held-out split, tokenize once (SFT or DPO)."""
    data = config.data
    eval_size: float = int(data.eval_size) if data.eval_size >= 1 else float(data.eval_size)
    encode: Callable[[Mapping[str, Any]], dict[str, list[int]]]
    loss_fn: LossFn
    if config.train.objective == "sft":
        rows = load_instruction_rows(data.source, limit=data.limit, seed=config.seed,
                                     data_format=data.format, columns=data.columns)
        train_rows, eval_rows = split_train_eval(rows, eval_size, seed=config.seed)
        template = resolve_template(data.template, tokenizer, data.source)
        encode = partial(encode_example, tokenizer, max_seq_len=data.max_seq_len, template=template)
        collate = partial(collate_sft, pad_token_id=int(tokenizer.pad_token_id))
        loss_fn = sft_loss
    else:
        rows = load_preference_rows(data.source, limit=data.limit, seed=config.seed)
        train_rows, eval_rows = split_train_eval(rows, eval_size, seed=config.seed)
        encode = partial(encode_preference, tokenizer, max_seq_len=data.max_seq_len)
        collate = partial(collate_preference, pad_token_id=int(tokenizer.pad_token_id))
        loss_fn = partial(dpo_batch_loss, beta=config.train.dpo_beta)
    return TaskData(
        train_examples=[encode(r) for r in train_rows],
        eval_examples=[encode(r) for r in eval_rows],
        train_rows=train_rows,
        collate=collate,
        loss_fn=loss_fn,
    )


def build_setup(config: RunConfig) -> RunSetup:
    seed_everything(config.seed)
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    with setup_step("cannot place the model", "set train.device, model.dtype and model.quantization for this machine"):
        placement = placement_from_config(config)
    logger.info("Device and precision: %s", placement.describe())
    try:
        check_model_fits_device(
            config.model.name, placement, force=config.train.force, shape_overrides=shape_overrides(config)
        )
    except ValueError as exc:  # already says what, why and the fix: one line, no traceback
        raise SetupError(str(exc)) from exc
    with setup_step(f"cannot load model {config.model.name!r}", MODEL_FIX):
        base, tokenizer = load_base_model(
            config.model.name, placement=placement, shape_overrides=shape_overrides(config)
        )
    settings = LoraSettings(
        r=config.lora.r,
        alpha=config.lora.alpha,
        dropout=config.lora.dropout,
        target_modules=tuple(config.lora.target_modules),
    )
    with setup_step("bad lora.target_modules", "set lora.target_modules to Linear modules of this model"):
        model = attach_lora(base, settings, seed=config.seed)
    initial_lora = get_lora_state(model)
    strategy = build_strategy(config, initial_lora)
    adapter_for_rank = _rank_adapters(strategy.adapter_ranks(), model, settings, config.seed)

    with setup_step(f"cannot read data {config.data.source!r}", DATA_FIX):
        task = build_task(config, tokenizer)
    with setup_step(f"cannot split the data into {config.fed.num_clients} clients",
                    "lower fed.num_clients or raise data.limit, or choose another data.partition"):
        partitioner = make_partitioner(
            resolve_partition(config.data.partition, task.train_rows),
            task.train_rows,
            config.fed.num_clients,
            seed=config.seed,
            alpha=config.data.alpha,
            num_clusters=config.data.num_clusters,
        )
    stats = partition_stats(task.train_rows, partitioner)
    trainer = LocalTrainer(
        model=model,
        examples=task.train_examples,
        collate=task.collate,
        loss_fn=task.loss_fn,
        lr=config.train.lr,
        batch_size=config.train.batch_size,
        local_steps=config.train.local_steps,
        grad_accum=config.train.grad_accum,
        weight_decay=config.train.weight_decay,
        max_grad_norm=config.train.max_grad_norm,
        seed=config.seed,
        placement=placement,
    )
    shared = SharedModel(model=model, trainer=trainer, adapter_for_rank=adapter_for_rank)
    clients = [
        SimClient(cid, list(partitioner.load_partition(cid)), shared)
        for cid in range(config.fed.num_clients)
    ]
    eval_client = SimClient(-1, [], shared)
    eval_fn = _make_eval_fn(config, model, task)
    logger.info(
        "Run set up: %s on %s, %d train / %d eval examples, %d clients, LoRA %d values",
        config.model.name,
        config.data.source,
        len(task.train_examples),
        len(task.eval_examples),
        config.fed.num_clients,
        sum(v.numel() for v in initial_lora.values()),
    )
    return RunSetup(
        strategy=strategy,
        clients=clients,
        eval_client=eval_client,
        eval_fn=eval_fn,
        shared=shared,
        lora_numel=sum(v.numel() for v in initial_lora.values()),
        num_train_examples=len(task.train_examples),
        num_eval_examples=len(task.eval_examples),
        partition_stats=stats,
        tokenizer=tokenizer,
        base_model=config.model.name,
    )


def _rank_adapters(
    ranks: list[int], model: Any, settings: LoraSettings, seed: int
) -> Callable[[int], str] | None:
    """One extra adapter per LoRA rank the strategy's clients train (``Strategy.adapter_ranks``),
    all on the same base; None when the clients train the default adapter."""
    for rank in ranks:
        add_lora_adapter(
            model,
            f"r{rank}",
            LoraSettings(
                r=rank,
                alpha=settings.alpha,
                dropout=settings.dropout,
                target_modules=settings.target_modules,
            ),
            seed=seed,
        )
    return (lambda rank: f"r{rank}") if ranks else None


def _make_eval_fn(config: RunConfig, model: Any, task: TaskData) -> Callable[[], float]:
    batch_size = max(config.eval.batch_size, 1)
    examples = task.eval_examples

    def batches() -> Iterator[dict[str, torch.Tensor]]:
        for i in range(0, len(examples), batch_size):
            yield task.collate(examples[i : i + batch_size])

    if config.train.objective == "dpo":

        def dpo_eval() -> float:
            losses: list[float] = []
            weights: list[int] = []
            for batch in batches():
                loss, _ = task.loss_fn(model, batch)
                losses.append(float(loss))
                weights.append(len(batch["chosen_input_ids"]) if "chosen_input_ids" in batch else 1)
            return float(np.average(losses, weights=weights))

        return dpo_eval
    return lambda: float(held_out_loss(model, batches()))
