"""Near-IID client groups and the per-group frequency/depth controller of HierFedLoRA.

HierFedLoRA (Liu, Liao, Xu, Xu, "Resource-Efficient Federated Fine-Tuning Large Language Models for
Heterogeneous Data", arXiv 2503.21213) partitions the clients into groups whose *combined* category
distribution is close to the global one, so that aggregating inside a group already averages away
most of the non-IID skew.

Divergence of a group g with category counts c_g (summed over its members) from the global
distribution pi = sum_i c_i / sum_i |c_i|, with p_g = c_g / |c_g|:

    KL:  D(g) = sum_q p_g[q] log(p_g[q] / pi[q])      (0 log 0 = 0; pi[q] > 0 wherever p_g[q] > 0)
    TV:  D(g) = 1/2 sum_q |p_g[q] - pi[q]|

Grouping (:func:`near_iid_groups`), deterministic for a given seed:

1. Group capacities differ by at most one client: the first ``K mod G`` groups take
   ``ceil(K / G)`` clients, the others ``floor(K / G)``.
2. Clients are visited by decreasing number of examples (large clients shape a group's
   distribution the most); ties follow a permutation drawn from ``np.random.default_rng(seed)``.
3. Greedy step: each client joins the group with room whose divergence *after* adding it is the
   smallest; ties go to the group with fewer examples, then the lower index.
4. Refinement: while a swap of two clients in different groups lowers the objective
   ``sum_g D(g)``, apply the best such swap (at most ``K^2`` swaps).

Controller (:func:`control_group`), our rule; the paper optimises frequency and depth jointly and
this is a closed form with the same coupling. With ``h_g = min(1, D(g) / D_clients)`` the share of
the clients' own mean divergence ``D_clients`` that group g still carries (0: the group is IID):

    tau_g = 1 + round((tau_max - 1) (1 - h_g))           intra-group aggregations per global round
    d_g   = clamp(floor(B / tau_g), 1, L)                 top layers trained and exchanged
    tau_g = min(tau_g, max(1, floor(B / d_g)))            so that tau_g * d_g <= B when possible

where L is the number of layers with LoRA and B the budget in layer-rounds per client per global
round (default L: the compute and LoRA bytes of one full-depth round). Reasoning: an intra-group
aggregate of a near-IID group is an almost unbiased estimate of the global update, so such a group
can aggregate several times before talking to the server; a group that still carries the clients'
skew would drift towards its own distribution, so it returns to the server every round. Backward
compute and the LoRA bytes of a round both grow linearly with depth, so the budget B caps
``tau_g * d_g``: frequent intra-group rounds are paid for by a shallower depth.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecolora.strategies.base import ClientRuntime, Message, Strategy

__all__ = [
    "DIVERGENCES",
    "GroupPlan",
    "GroupedStrategy",
    "category_counts",
    "control_group",
    "distribution_divergence",
    "group_divergences",
    "near_iid_groups",
]

DIVERGENCES = ("kl", "tv")


@dataclass(frozen=True)
class GroupPlan:
    """One group: its members, its divergence from the global distribution, tau_g and d_g."""

    group_id: int
    members: tuple[int, ...]
    divergence: float
    intra_rounds: int
    depth: int

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group_id, "members": list(self.members), "divergence": self.divergence,
                "intra_rounds": self.intra_rounds, "depth": self.depth}


def category_counts(stats: Mapping[str, Any]) -> np.ndarray:
    """(clients, categories) count matrix from :func:`ecolora.data.partition_stats`'s output."""
    categories = list(stats["categories"])
    rows = sorted(stats["clients"], key=lambda c: int(c["partition_id"]))
    return np.array([[int(c["category_counts"].get(q, 0)) for q in categories] for c in rows], dtype=np.float64)


def distribution_divergence(counts: np.ndarray, reference: np.ndarray, kind: str = "kl") -> float:
    """D(counts / |counts| || reference / |reference|); 0 for an empty ``counts``."""
    if kind not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {', '.join(DIVERGENCES)}, got {kind!r}.")
    total = float(counts.sum())
    if total <= 0:
        return 0.0
    p = counts / total
    pi = reference / float(reference.sum())
    if kind == "tv":
        return float(0.5 * np.abs(p - pi).sum())
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / pi[nz])))


def group_divergences(counts: np.ndarray, groups: Sequence[Sequence[int]], kind: str = "kl") -> np.ndarray:
    """D(g) for each group (members' counts summed) against the global distribution."""
    reference = counts.sum(axis=0)
    return np.array([distribution_divergence(counts[list(g)].sum(axis=0), reference, kind) for g in groups])


def near_iid_groups(counts: np.ndarray, num_groups: int, *, kind: str = "kl", seed: int = 0) -> list[list[int]]:
    """Partition clients (rows of ``counts``) into ``num_groups`` near-IID groups (module docstring)."""
    counts = np.asarray(counts, dtype=np.float64)
    num_clients = counts.shape[0]
    if not 1 <= num_groups <= num_clients:
        raise ValueError(f"num_groups must be in [1, {num_clients}] (the number of clients), got {num_groups}.")
    if counts.ndim != 2 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError("counts must be a (clients, categories) matrix of non-negative counts with a positive sum.")
    reference = counts.sum(axis=0)
    base, extra = divmod(num_clients, num_groups)
    capacity = [base + (1 if g < extra else 0) for g in range(num_groups)]
    tie = np.random.default_rng(seed).permutation(num_clients)
    order = sorted(range(num_clients), key=lambda i: (-counts[i].sum(), tie[i]))
    groups: list[list[int]] = [[] for _ in range(num_groups)]
    sums = np.zeros((num_groups, counts.shape[1]))
    for i in order:  # ---- greedy: join the group that ends up closest to the global distribution
        open_groups = [g for g in range(num_groups) if len(groups[g]) < capacity[g]]
        best = min(open_groups, key=lambda g: (
            round(distribution_divergence(sums[g] + counts[i], reference, kind), 12), sums[g].sum(), g))
        groups[best].append(i)
        sums[best] += counts[i]
    for _ in range(num_clients**2):  # ---- refinement: best improving swap until none is left
        if not _apply_best_swap(counts, groups, sums, reference, kind):
            break
    return [sorted(g) for g in groups]


def _apply_best_swap(counts: np.ndarray, groups: list[list[int]], sums: np.ndarray, reference: np.ndarray,
                     kind: str) -> bool:
    current = [distribution_divergence(s, reference, kind) for s in sums]
    best_gain, best_move = 1e-12, None
    for g in range(len(groups)):
        for h in range(g + 1, len(groups)):
            for i in groups[g]:
                for j in groups[h]:
                    delta = counts[j] - counts[i]
                    after = (distribution_divergence(sums[g] + delta, reference, kind)
                             + distribution_divergence(sums[h] - delta, reference, kind))
                    gain = current[g] + current[h] - after
                    if gain > best_gain:
                        best_gain, best_move = gain, (g, h, i, j)
    if best_move is None:
        return False
    g, h, i, j = best_move
    groups[g][groups[g].index(i)] = j
    groups[h][groups[h].index(j)] = i
    sums[g] += counts[j] - counts[i]
    sums[h] += counts[i] - counts[j]
    return True


def control_group(
    group_divergence: float,
    client_divergence: float,
    *,
    num_layers: int,
    max_intra_rounds: int,
    budget: float | None = None,
    intra_rounds: int | None = None,
    depth: int | None = None,
) -> tuple[int, int]:
    """(tau_g, d_g) for one group by the rule in the module docstring; fixed values win."""
    if num_layers < 1 or max_intra_rounds < 1:
        raise ValueError(f"num_layers and max_intra_rounds must be >= 1, got {num_layers} and {max_intra_rounds}.")
    budget = float(num_layers if budget is None else budget)
    share = 0.0 if client_divergence <= 0 else min(1.0, group_divergence / client_divergence)
    tau = intra_rounds if intra_rounds is not None else 1 + round((max_intra_rounds - 1) * (1.0 - share))
    d = depth if depth is not None else min(num_layers, max(1, math.floor(budget / tau)))
    if intra_rounds is None:
        tau = min(tau, max(1, math.floor(budget / d)))
    return int(tau), int(min(d, num_layers))


class GroupedStrategy(Strategy, ABC):
    """A strategy whose global rounds are made of client groups, each with its own intra-group
    rounds led by one member (run by :func:`ecolora.sim.hier_runner.run_hierarchical`, the
    ``hierarchical`` loop of :mod:`ecolora.methods`). Per global round t and group g:
    ``replan`` (optional), ``configure_round`` (server -> leaders), ``start_group`` (the leader applies it),
    ``plans[g].intra_rounds`` x [``configure_intra`` -> members' ``client_round`` ->
    ``aggregate_intra``], ``close_group`` (leader -> server), then ``aggregate_round``."""

    plans: list[GroupPlan]

    @abstractmethod
    def form_groups(self, counts: np.ndarray) -> list[GroupPlan]:
        """Groups of all clients from their per-category example counts (rows), with their plans."""

    @abstractmethod
    def round_groups(self, sampled: list[int], num_examples: Mapping[int, int]) -> dict[int, list[int]]:
        """Group id -> the sampled members of that group, its leader first."""

    def replan(self, server_round: int, participants: Mapping[int, Sequence[int]]) -> bool:
        """Re-plan the groups of ``server_round`` from its participants (group -> members);
        return whether a plan changed. Default: the plans of :meth:`form_groups` hold all run."""
        del server_round, participants
        return False

    @abstractmethod
    def start_group(self, leader: ClientRuntime, message: Message) -> None:
        """The leader applies the server's message: the start of the group model."""

    @abstractmethod
    def configure_intra(self, server_round: int, intra_round: int, group: int, participants: list[int]) -> dict[int, Message]:
        """Leader -> members (the first participant is the leader)."""

    @abstractmethod
    def aggregate_intra(self, group: int, replies: Mapping[int, Message]) -> dict[str, float]:
        """Fold one intra round's member replies into the group model."""

    @abstractmethod
    def close_group(self, leader: ClientRuntime, server_round: int, group: int) -> Message:
        """Leader -> server: the group's update of this global round."""
