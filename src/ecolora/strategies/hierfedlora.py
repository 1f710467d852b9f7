"""HierFedLoRA (Liu, Liao, Xu, Xu, "Resource-Efficient Federated Fine-Tuning Large Language Models
for Heterogeneous Data", arXiv 2503.21213): near-IID groups, intra-group rounds, per-group depth.

Set-up: the clients are partitioned into G near-IID groups and each group g gets an intra-group
frequency tau_g and a fine-tuning depth d_g (:mod:`ecolora.strategies.grouping`). Group g trains
and exchanges only the LoRA tensors K_g of its top d_g layers (counted from the output); its
clients keep the lower layers at the shared initial LoRA (B = 0: the frozen base model), and those
tensors never appear in a payload.

Global round t, for every group with sampled members (the member with most examples leads):

1. Server -> leader (``global`` channel): the global LoRA restricted to K_g.
2. tau_g intra-group rounds r = 1..tau_g:
   a. leader -> each member (``group`` channel): the group model M_g;
   b. member i trains K_g from it (lower layers frozen) and sends U_i = P_i - start_i;
   c. the leader aggregates M_g <- M_g + sum_i n_i U_i / sum_i n_i.
   The leader's own messages stay on the device: they are not sent and not counted.
3. Leader -> server (``global`` channel): the group update U_g = M_g - M_g^start.
4. Server, per tensor k: P[k] <- P[k] + sum_{g: k in K_g} n_g U_g[k] / sum_{g: k in K_g} n_g,
   n_g = the group's sampled examples. A tensor no group trains keeps its value.

Every message is a delta against the receiver's copy: the sender knows what it last sent to that
client (``views``) and sends D = SC_k(target - view); receiver and sender both set view += D, so
the two copies stay bit-identical. Plain ``hierfedlora`` sends D densely (k = 100%, the run's wire
dtype), which equals sending the parameters.

``hierfedlora+ecolora`` adds EcoLoRA's adaptive top-k (densities from the loss schedule, eq. 4)
and lossless coding to every message that crosses a link, in both channels, with error feedback
on the uploads (eqs. 5-6: the residual stays on the device that produced the update). Round-robin
segments and staleness mixing are not applied: every member's full update is needed for the
tau_g intra-group aggregations, and members restart from the group model every intra round.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ecolora.client.lora import lora_layer_index
from ecolora.compress.ecolora import EcoLoRACompressor
from ecolora.config import RunConfig
from ecolora.strategies.base import (
    ClientRuntime,
    Message,
    clip_delta_reply,
    train_metrics,
    weighted_average,
)
from ecolora.strategies.fedit import FedIT
from ecolora.strategies.grouping import (
    GroupedStrategy,
    GroupPlan,
    control_group,
    distribution_divergence,
    group_divergences,
    near_iid_groups,
)
from ecolora.strategies.validation import CLIENT_REJECTION_KEY, nonfinite_reason

logger = logging.getLogger("ecolora")

__all__ = ["HierFedLoRA", "hierfedlora_ecolora"]

Tensors = dict[str, torch.Tensor]


class HierFedLoRA(FedIT, GroupedStrategy):
    """Hierarchical FedLoRA: near-IID groups, tau_g intra-group rounds, top-d_g layers (module docstring)."""

    name = "hierfedlora"

    def __init__(self, config: RunConfig, initial_lora: Mapping[str, torch.Tensor], compressed: bool = False) -> None:
        super().__init__(config, initial_lora)
        self.compressed = compressed
        if compressed:
            self.name = "hierfedlora+ecolora"
        self.layers = sorted({_layer_index(k) for k in self.global_state})
        self.plans: list[GroupPlan] = []
        self._counts = np.zeros((0, 0))  # (clients, categories), set by form_groups
        self._client_divergence = 0.0
        self.group_of: dict[int, int] = {}
        self.views: dict[int, Tensors] = {}  # the LoRA (group keys) each client holds, as its senders know it
        self.group_model: dict[int, Tensors] = {}
        self.group_start: dict[int, Tensors] = {}
        self.group_examples: dict[int, int] = {}
        self.group_losses: dict[int, tuple[float, float]] = {}
        self.compressor = EcoLoRACompressor(config.ecolora)  # densities, losses, residuals
        self.value_dtype = torch.float16 if compressed else self.wire_dtype

    # ---- groups and the controller -----------------------------------------------------------
    def form_groups(self, counts: np.ndarray) -> list[GroupPlan]:
        """Near-IID groups of the clients (rows of ``counts``: per-category example counts) and
        each group's (tau_g, d_g) from the controller."""
        hier = self.config.hier
        counts = np.asarray(counts, dtype=np.float64)
        groups = near_iid_groups(counts, hier.num_groups, kind=hier.divergence, seed=self.config.seed)
        divergences = group_divergences(counts, groups, hier.divergence)
        reference = counts.sum(axis=0)
        client_divergence = float(np.mean([distribution_divergence(c, reference, hier.divergence)
                                           for c in counts if c.sum() > 0]))
        self.plans = []
        for g, members in enumerate(groups):
            tau, depth = control_group(
                float(divergences[g]), client_divergence, num_layers=len(self.layers),
                max_intra_rounds=hier.max_intra_rounds, budget=hier.budget,
                intra_rounds=hier.intra_rounds, depth=hier.depth,
            )
            self.plans.append(GroupPlan(g, tuple(members), float(divergences[g]), tau, depth))
            logger.info("group %d: clients %s | %s %.4f (clients' mean %.4f) | tau %d | depth %d of %d",
                        g, members, hier.divergence, divergences[g], client_divergence, tau, depth, len(self.layers))
        self.group_of = {cid: p.group_id for p in self.plans for cid in p.members}
        self._counts, self._client_divergence = counts, client_divergence
        return self.plans

    def replan(self, server_round: int, participants: Mapping[int, Sequence[int]]) -> bool:
        """Every ``hier.replan_every`` global rounds (0: never), re-plan (tau_g, d_g) of each active
        group from what this round observes: the divergence of the group's *participants* (under
        partial participation a group's sampled members can be far more skewed than the group),
        by the same controller. Returns whether it re-planned."""
        hier = self.config.hier
        if hier.replan_every <= 0 or (server_round - 1) % hier.replan_every != 0:
            return False
        reference = self._counts.sum(axis=0)
        for g, members in participants.items():
            divergence = distribution_divergence(self._counts[list(members)].sum(axis=0), reference, hier.divergence)
            tau, depth = control_group(
                divergence, self._client_divergence, num_layers=len(self.layers),
                max_intra_rounds=hier.max_intra_rounds, budget=hier.budget,
                intra_rounds=hier.intra_rounds, depth=hier.depth,
            )
            self.plans[g] = GroupPlan(g, self.plans[g].members, float(divergence), tau, depth)
        return True

    def trained_keys(self, depth: int) -> list[str]:
        """Exchanged LoRA tensors of the top ``depth`` layers (the highest layer indices)."""
        top = set(self.layers[-depth:])
        return sorted(k for k in self.global_state if _layer_index(k) in top)

    def round_groups(self, sampled: list[int], num_examples: Mapping[int, int]) -> dict[int, list[int]]:
        """Group -> this round's participants, leader (most examples, then lowest id) first."""
        out: dict[int, list[int]] = {}
        for cid in sorted(sampled):
            out.setdefault(self.group_of[cid], []).append(cid)
        return {g: sorted(m, key=lambda c: (-num_examples[c], c)) for g, m in sorted(out.items())}

    def densities(self) -> tuple[float, float]:
        return self.compressor.densities() if self.compressed else (1.0, 1.0)

    # ---- server -> leaders -------------------------------------------------------------------
    def configure_round(self, server_round: int, client_ids: list[int]) -> dict[int, Message]:
        """One message per group leader (``client_ids``): the global LoRA of its group's layers."""
        if not self.plans:
            raise ValueError("HierFedLoRA has no groups yet: call form_groups(category counts) before round 1 "
                             "(ecolora.sim.hier_runner does, in-process and in the Flower ServerApp).")
        messages = {}
        for cid in client_ids:
            plan = self.plans[self.group_of[cid]]
            target = {k: self.global_state[k] for k in self.trained_keys(plan.depth)}
            messages[cid] = Message(config=self._config(server_round, plan), tensors=self._send_delta(cid, target))
        self.remember_asked(server_round, messages)
        return messages

    def _config(self, server_round: int, plan: GroupPlan, **extra: Any) -> dict[str, Any]:
        density_a, density_b = self.densities()
        return {"round": server_round, "group": plan.group_id, "depth": plan.depth,
                "density_a": density_a, "density_b": density_b, **extra}

    def _send_delta(self, cid: int, target: Mapping[str, torch.Tensor], exact: bool = False) -> Tensors:
        """D = SC_k(target - view) in wire precision; the sender's copy of the view moves by D."""
        view = self._known_view(cid, list(target))
        sent = {k: value.float() - view[k] for k, value in target.items()}
        if not exact:
            if self.compressed:
                sent = self.compressor.sparsify(sent, *self.densities())
            sent = {k: d.to(self.value_dtype).float() for k, d in sent.items()}
        self.views[cid] = {k: view[k] + sent[k] for k in target}
        return sent

    def _known_view(self, cid: int, keys: list[str]) -> Tensors:
        known = self.views.get(cid, {})
        return {k: known[k] if k in known else self.initial_lora[k].clone() for k in keys}

    # ---- leader: group rounds ----------------------------------------------------------------
    def start_group(self, leader: ClientRuntime, message: Message) -> None:
        """The leader applies the server's message; its copy becomes the group model M_g."""
        g = int(message.config["group"])
        view = _apply_delta(leader.state, self.initial_lora, message.tensors)
        self.group_model[g] = {k: v.clone() for k, v in view.items()}
        self.group_start[g] = {k: v.clone() for k, v in view.items()}

    def configure_intra(self, server_round: int, intra_round: int, group: int, participants: list[int]) -> dict[int, Message]:
        """Leader -> members (the first participant is the leader: its message is exact and local)."""
        plan = self.plans[group]
        hier = self.config.hier  # a distinct batch order for every local run, whatever the plans
        stride = max(p.intra_rounds for p in self.plans) if hier.replan_every <= 0 else max(
            hier.max_intra_rounds, hier.intra_rounds or 1)
        train_round = (server_round - 1) * stride + intra_round
        out = {}
        for position, cid in enumerate(participants):
            config = self._config(server_round, plan, intra=intra_round, train_round=train_round, local=position == 0)
            out[cid] = Message(config=config, tensors=self._send_delta(cid, self.group_model[group], exact=position == 0))
        return out

    def aggregate_intra(self, group: int, replies: Mapping[int, Message]) -> dict[str, float]:
        """M_g <- M_g + sum_i n_i U_i / sum_i n_i (step 2c)."""
        ordered = [replies[c] for c in sorted(replies)]
        weights = [r.num_examples for r in ordered]
        mean = weighted_average([r.tensors for r in ordered], weights, keys=sorted(self.group_model[group]))
        self.group_model[group] = {k: v + mean[k] for k, v in self.group_model[group].items()}
        total = float(sum(weights))
        losses = (sum(w * r.metrics["train_loss"] for w, r in zip(weights, ordered, strict=True)) / total,
                  sum(w * r.metrics["initial_loss"] for w, r in zip(weights, ordered, strict=True)) / total)
        self.group_examples[group], self.group_losses[group] = int(total), losses
        return {"train_loss": losses[0]}

    def close_group(self, leader: ClientRuntime, server_round: int, group: int) -> Message:
        """Leader -> server: U_g = M_g - M_g^start (+ecolora: top-k with the group's residual, eqs. 5-6).

        The residual belongs to the group, like M_g: under partial participation the leader changes
        from round to round, and a residual kept on the leader's device would be split across
        clients and go stale. The compressor keeps it (``owner_state("group<g>")``), checkpointed
        with the strategy; the leader's role runs where the group model lives (the server process).
        """
        del leader
        update = {k: v - self.group_start[group][k] for k, v in self.group_model[group].items()}
        if self.compressed:  # the residual is the group's, whichever member leads this round
            update = self.compressor.compress(self.compressor.owner_state(f"group{group}"), f"hier/group{group}",
                                              update, *self.densities())
        train_loss, initial_loss = self.group_losses[group]
        return Message(config={"round": server_round, "group": group}, tensors=update,
                       num_examples=self.group_examples[group],
                       metrics={"train_loss": train_loss, "initial_loss": initial_loss})

    # ---- server: groups -> global (step 4, through the base validation) -----------------------
    def expected_shapes(self, client_id: int, asked: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        keys = self.trained_keys(int(self.plans[int(asked["group"])].depth))
        return {k: tuple(self.global_state[k].shape) for k in keys}

    def fold_begin(self, server_round: int) -> None:
        self._sums: Tensors = {}
        self._weights: dict[str, float] = {}
        self._loss_sums = [0.0, 0.0, 0.0]

    def fold(self, client_id: int, reply: Message) -> None:
        n = float(reply.num_examples)
        for k, v in reply.tensors.items():
            self._sums[k] = self._sums.get(k, torch.zeros_like(self.global_state[k])).add_(v.float(), alpha=n)
            self._weights[k] = self._weights.get(k, 0.0) + n
        for i, value in enumerate((reply.metrics["train_loss"], reply.metrics["initial_loss"], 1.0)):
            self._loss_sums[i] += n * float(value)

    def fold_end(self, server_round: int) -> dict[str, Any]:
        for k, total in self._sums.items():
            self.global_state[k] = self.global_state[k] + total / self._weights[k]
        train_sum, initial_sum, weight = self._loss_sums
        self.compressor.observe_losses(train_sum / weight, initial_sum / weight)
        updated = len(self._sums)
        self._sums, self._weights = {}, {}
        density_a, density_b = self.densities()
        return {"tensors_updated": updated, "next_density_a": density_a, "next_density_b": density_b}

    def clip_reply(self, reply: Message, max_norm: float) -> tuple[Message, float]:
        """Clip the group update U_g."""
        return clip_delta_reply(reply, max_norm)

    # ---- client (member) ---------------------------------------------------------------------
    def client_round(self, runtime: ClientRuntime, message: Message) -> Message:
        """Apply the leader's delta, train the top d_g layers only, send the update (step 2b)."""
        cfg = message.config
        keys = self.trained_keys(int(cfg["depth"]))
        start = _apply_delta(runtime.state, self.initial_lora, message.tensors)
        full = {k: v.clone() for k, v in self.initial_lora.items()}
        full.update(start)
        runtime.set_lora(full)
        top = {_layer_index(k) for k in keys}
        runtime.freeze(lambda name: _layer_index(name) not in top)
        result = runtime.train(int(cfg["train_round"]), cfg)
        local = runtime.get_lora()
        update = {k: local[k].float() - start[k] for k in keys}
        reason = nonfinite_reason(update)
        if reason is not None:  # validate before compressing (top-k cannot rank NaN)
            return Message(config={"round": cfg["round"], "intra": cfg["intra"], "group": cfg["group"],
                                   CLIENT_REJECTION_KEY: reason},
                           num_examples=result.num_examples, metrics=train_metrics(result))
        if self.compressed and not cfg.get("local", False):
            update = self.compressor.compress(runtime.state, "hier/up", update,
                                              float(cfg["density_a"]), float(cfg["density_b"]))
        return Message(config={"round": cfg["round"], "intra": cfg["intra"], "group": cfg["group"]}, tensors=update,
                       num_examples=result.num_examples, metrics=train_metrics(result))

    # ---- wire and checkpoints ----------------------------------------------------------------
    def pack(self, message: Message, direction: str) -> bytes:
        if self.compressed:
            return self.compressor.pack(message.tensors)
        return super().pack(message, direction)

    def state_dict(self) -> dict[str, Any]:
        return {"global_state": self.global_state, "views": self.views, "plans": [p.to_dict() for p in self.plans],
                "compressor": self.compressor.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.global_state = {k: v.clone() for k, v in state["global_state"].items()}
        self.views = {int(c): {k: v.clone() for k, v in t.items()} for c, t in state["views"].items()}
        self.plans = [GroupPlan(p["group"], tuple(p["members"]), p["divergence"], p["intra_rounds"], p["depth"])
                      for p in state["plans"]]
        self.group_of = {cid: p.group_id for p in self.plans for cid in p.members}
        self.compressor.load_state_dict(state["compressor"])


def _layer_index(key: str) -> int:
    """Transformer block of a LoRA key."""
    return lora_layer_index(key)


def _apply_delta(state: dict[str, Any], initial: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor]) -> Tensors:
    """Receiver side of a delta message: view <- view + D (the initial LoRA before the first one)."""
    known = state.get("view", {})
    view = {k: (known[k] if k in known else initial[k].float()) + d.float() for k, d in delta.items()}
    state["view"] = {**known, **view}
    return view


def hierfedlora_ecolora(config: RunConfig, initial_lora: Mapping[str, torch.Tensor]) -> HierFedLoRA:
    """``hierfedlora+ecolora`` (:mod:`ecolora.methods`)."""
    return HierFedLoRA(config, initial_lora, compressed=True)
