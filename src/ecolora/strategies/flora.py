"""FLoRA (Wang et al., "FLoRA: Federated Fine-Tuning Large Language Models with Heterogeneous
Low-Rank Adaptations", NeurIPS 2024): aggregation by stacking, so heterogeneous ranks mix exactly.

Round t:
1. Each sampled client i has rank r_i (``flora.ranks`` cycled over client ids) and scale
   s_i = alpha / r_i. It first merges every stacked module it has not merged yet into its base
   weights (W <- W + B_stack A_stack), re-initialises its LoRA (A Kaiming-uniform, B = 0) and
   trains it.
2. The server weights clients by p_i = n_i / sum_j n_j and stacks, per module,
       B_stack = [p_1 s_1 B_1 | ... | p_m s_m B_m]   (d_out, sum r_i)
       A_stack = [A_1; ...; A_m]                     (sum r_i, d_in)
   so that B_stack A_stack = sum_i p_i s_i B_i A_i: the exact weighted sum of the clients'
   delta-W, with no cross terms (unlike averaging A and B separately).
3. The stacked module of round t goes to the clients of later rounds. A client absent for several
   rounds receives every stack it missed: download grows with clients and rounds, and the ledger
   counts all of it.

``flora+ecolora``: clients re-initialise LoRA every round, so segments (which assume a persistent
shared LoRA) and staleness mixing do not apply; EcoLoRA's adaptive top-k sparsification (A and B
densities from the loss schedule) and its lossless coding are applied to uploads and to the
stacked downloads. The stacks the server keeps are the sparsified ones, so every client merges
exactly what the server's global model holds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from safetensors.torch import save_file

from ecolora.compress.ecolora import EcoLoRACompressor
from ecolora.config import RunConfig
from ecolora.strategies.base import (
    AdapterRuntime,
    AggregationError,
    ClientRuntime,
    Message,
    Strategy,
    adapter_runtime,
    clip_factor,
    train_metrics,
)
from ecolora.strategies.fedit import is_lora_a
from ecolora.strategies.validation import CLIENT_REJECTION_KEY, nonfinite_reason

__all__ = ["FLoRA", "flora_ecolora", "module_of", "stack_modules"]


def module_of(name: str) -> str:
    """``...q_proj.lora_A.weight`` -> ``...q_proj``."""
    for part in (".lora_A.weight", ".lora_B.weight"):
        if name.endswith(part):
            return name[: -len(part)]
    raise ValueError(f"Not a LoRA tensor name: {name!r}")


def stack_modules(
    clients: list[Mapping[str, torch.Tensor]], weights: list[float], scales: list[float]
) -> dict[str, torch.Tensor]:
    """Stack client LoRA modules so that B_stack @ A_stack = sum_i w_i s_i B_i A_i (w normalized)."""
    total = float(sum(weights))
    if not clients or total <= 0:
        raise AggregationError("FLoRA needs at least one client reply with examples to stack.")
    modules = sorted({module_of(k) for k in clients[0]})
    out: dict[str, torch.Tensor] = {}
    for m in modules:
        a_parts, b_parts = [], []
        for tensors, w, s in zip(clients, weights, scales, strict=True):
            a, b = tensors[f"{m}.lora_A.weight"].float(), tensors[f"{m}.lora_B.weight"].float()  # (r, d_in), (d_out, r)
            if a.shape[0] != b.shape[1]:
                raise AggregationError(f"{m}: A has rank {a.shape[0]} but B has rank {b.shape[1]}.")
            a_parts.append(a)
            b_parts.append(b * (w / total) * s)
        out[f"{m}.lora_A.weight"] = torch.cat(a_parts, dim=0)  # (sum r, d_in)
        out[f"{m}.lora_B.weight"] = torch.cat(b_parts, dim=1)  # (d_out, sum r)
    return out


class FLoRA(Strategy):
    name = "flora"

    def __init__(self, config: RunConfig, initial_lora: Mapping[str, torch.Tensor], compressed: bool = False) -> None:
        super().__init__(config, initial_lora)
        self.compressed = compressed
        if compressed:
            self.name = "flora+ecolora"
        self.ranks = list(config.flora.ranks or [config.lora.r])
        self.alpha = config.lora.alpha
        self.stacks: dict[int, dict[str, torch.Tensor]] = {}  # round -> stacked module
        self.client_sync_round: dict[int, int] = {}
        self.compressor = EcoLoRACompressor(config.ecolora)  # densities and losses (no segments here)

    def rank_of(self, client_id: int) -> int:
        return self.ranks[client_id % len(self.ranks)]

    def densities(self) -> tuple[float, float]:
        return self.compressor.densities() if self.compressed else (1.0, 1.0)

    # ---- server ------------------------------------------------------------------------------
    def configure_round(self, server_round: int, client_ids: list[int]) -> dict[int, Message]:
        density_a, density_b = self.densities()
        messages = {}
        for cid in client_ids:
            since = self.client_sync_round.get(cid, 0)
            missed = sorted(r for r in self.stacks if r > since)
            tensors = {f"r{r}:{k}": v.clone() for r in missed for k, v in self.stacks[r].items()}
            messages[cid] = Message(
                config={"round": server_round, "rank": self.rank_of(cid), "stacks": missed,
                        "density_a": density_a, "density_b": density_b},
                tensors=tensors,
            )
            self.client_sync_round[cid] = server_round - 1
        self.remember_asked(server_round, messages)
        return messages

    def expected_shapes(self, client_id: int, asked: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        """A full LoRA of the client's rank r_i: A (r_i, d_in), B (d_out, r_i)."""
        rank = self.rank_of(client_id)
        return {k: (rank, v.shape[1]) if is_lora_a(k) else (v.shape[0], rank) for k, v in self.initial_lora.items()}

    def clip_reply(self, reply: Message, max_norm: float) -> tuple[Message, float]:
        """Clip dW_i = s_i B_i A_i (B starts at 0 each round) by scaling B_i.

        ||B A||_F^2 = sum((B^T B) * (A A^T)) needs only (r, r) products, never the (d_out, d_in) dW.
        """
        tensors = reply.tensors
        rank = next(v.shape[0] for k, v in tensors.items() if is_lora_a(k))
        s = self.alpha / rank
        squared = 0.0
        for k, a in tensors.items():
            if is_lora_a(k):
                b = tensors[k.replace("lora_A", "lora_B")].float()  # (d_out, r)
                a = a.float()  # (r, d_in)
                squared += s * s * float(((b.T @ b) * (a @ a.T)).sum())
        factor, norm = clip_factor(squared, max_norm)
        if factor < 1.0:
            clipped = {k: v * factor if not is_lora_a(k) else v for k, v in tensors.items()}
            reply = Message(config=reply.config, tensors=clipped, num_examples=reply.num_examples, metrics=reply.metrics)
        return reply, norm

    def aggregate_replies(self, server_round: int, replies: Mapping[int, Message]) -> dict[str, Any]:
        """Stacking keeps every client's A_i and B_i: memory grows with the clients of a round."""
        cids = sorted(replies)
        ranks = [self.rank_of(c) for c in cids]
        stacked = stack_modules([replies[c].tensors for c in cids], [replies[c].num_examples for c in cids],
                                [self.alpha / r for r in ranks])
        if self.compressed:
            stacked = self.compressor.sparsify(stacked, *self.densities())
        self.stacks[server_round] = stacked
        weights = [replies[c].num_examples for c in cids]
        self.compressor.observe_losses(
            sum(w * replies[c].metrics["train_loss"] for w, c in zip(weights, cids, strict=True)) / sum(weights),
            sum(w * replies[c].metrics["initial_loss"] for w, c in zip(weights, cids, strict=True)) / sum(weights))
        return {"stacked_rank": int(sum(ranks))}

    def global_lora(self) -> dict[str, torch.Tensor]:
        """All stacks concatenated: one LoRA of rank sum_t sum_i r_i with scale 1 (exact)."""
        rounds = sorted(self.stacks)
        if not rounds:
            return {}
        return {k: torch.cat([self.stacks[r][k] for r in rounds], dim=0 if is_lora_a(k) else 1) for k in self.stacks[rounds[0]]}

    def prepare_eval(self, runtime: ClientRuntime) -> None:
        client = adapter_runtime(runtime)
        self._merge_missing(client, sorted(self.stacks), {f"r{r}:{k}": v for r in self.stacks for k, v in self.stacks[r].items()})
        client.use_rank(self.ranks[0])
        client.set_lora({k: torch.zeros_like(v) if not is_lora_a(k) else v for k, v in client.get_lora().items()})

    def adapter_ranks(self) -> list[int]:
        """Every client rank trains in an adapter of its own on the shared base."""
        return sorted(set(self.ranks))

    def save_adapter(self, model: PeftModel, out_dir: Path) -> None:
        """PEFT-format adapter equal to the merged global delta (rank = total stacked rank, alpha = rank)."""
        from peft import LoraConfig

        state = self.global_lora()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        total_rank = int(next((v.shape[0] for k, v in state.items() if is_lora_a(k)), 1))
        base_name = getattr(getattr(model, "peft_config", {}).get("default", None), "base_model_name_or_path", None)
        LoraConfig(r=total_rank, lora_alpha=total_rank, target_modules=list(self.config.lora.target_modules),
                   lora_dropout=0.0, base_model_name_or_path=base_name).save_pretrained(str(out_dir))
        save_file({k: v.contiguous() for k, v in state.items()} or {}, str(out_dir / "adapter_model.safetensors"))
        (out_dir / "flora.json").write_text(json.dumps({"rounds": sorted(self.stacks), "total_rank": total_rank}))

    # ---- client ------------------------------------------------------------------------------
    def client_round(self, runtime: ClientRuntime, message: Message) -> Message:
        cfg = message.config
        server_round = int(cfg["round"])
        client = adapter_runtime(runtime)
        self._merge_missing(client, [int(r) for r in cfg["stacks"]], message.tensors)
        client.use_rank(int(cfg["rank"]))
        runtime.set_lora(_fresh_lora(runtime.get_lora(), seed=(self.config.seed * 1_000_003 + server_round * 10_007 + runtime.client_id) % 2**31))
        result = runtime.train(server_round, cfg)
        local = runtime.get_lora()
        reason = nonfinite_reason(local)
        if reason is not None:  # validate before compressing (top-k cannot rank NaN)
            return Message(config={"round": server_round, CLIENT_REJECTION_KEY: reason},
                           num_examples=result.num_examples, metrics=train_metrics(result))
        if self.compressed:
            local = self.compressor.sparsify(local, float(cfg["density_a"]), float(cfg["density_b"]))
        return Message(config={"round": server_round}, tensors=local, num_examples=result.num_examples,
                       metrics=train_metrics(result))

    @staticmethod
    def _merge_missing(runtime: AdapterRuntime, rounds: list[int], tensors: Mapping[str, torch.Tensor]) -> None:
        for r in rounds:
            prefix = f"r{r}:"
            stack = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            factors = {m: (stack[f"{m}.lora_B.weight"], stack[f"{m}.lora_A.weight"]) for m in {module_of(k) for k in stack}}
            runtime.merge_into_base(f"flora/{r}", factors)

    # ---- wire --------------------------------------------------------------------------------
    def pack(self, message: Message, direction: str) -> bytes:
        if self.compressed:
            return self.compressor.pack(message.tensors)
        return super().pack(message, direction)

    def state_dict(self) -> dict[str, Any]:
        return {"stacks": self.stacks, "client_sync_round": self.client_sync_round,
                "compressor": self.compressor.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.stacks = {int(r): dict(v) for r, v in state["stacks"].items()}
        self.client_sync_round = {int(c): int(r) for c, r in state["client_sync_round"].items()}
        self.compressor.load_state_dict(state["compressor"])


def flora_ecolora(config: RunConfig, initial_lora: Mapping[str, torch.Tensor]) -> FLoRA:
    """``flora+ecolora`` (:mod:`ecolora.methods`): FLoRA with EcoLoRA's sparsification and coding."""
    return FLoRA(config, initial_lora, compressed=True)


def _fresh_lora(template: Mapping[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """A Kaiming-uniform (a = sqrt(5), as peft) and B = 0, deterministic in ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in template.items():
        if is_lora_a(k):
            bound = 1.0 / math.sqrt(v.shape[1])  # kaiming_uniform_(a=sqrt(5)) on (r, d_in)
            out[k] = (torch.rand(v.shape, generator=gen) * 2 - 1) * bound
        else:
            out[k] = torch.zeros_like(v)
    return out
