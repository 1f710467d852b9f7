"""The server's download replica (EcoLoRA ``aggregate: delta``): what the clients hold of the global.

The server keeps ``Q``, the LoRA the clients reconstruct, and moves it once per round by a sparse
step towards the global ``P`` with error feedback (eqs. 5-6 on the download; the residual is
``P - Q``)::

    D_t = SC_k(P_t - Q_{t-1}),      Q_t = Q_{t-1} + D_t

A client last synchronised in round tau receives ``Q_t - Q_tau`` (the initial LoRA is known to
all from the shared seed, so tau = 0 needs no dense first message). ``Q`` is kept per round for
the rounds some client was last synchronised in (``history``), so the server's memory grows with
the distinct sync rounds, not with the clients.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from ecolora.compress.topk import sparsify_topk

__all__ = ["DownloadReplica"]

Tensors = dict[str, torch.Tensor]


class DownloadReplica:
    """``Q`` and its history by round, and each client's last sync round (module docstring)."""

    def __init__(self, initial: Mapping[str, torch.Tensor]) -> None:
        self.replica: Tensors = {k: v.detach().clone().float() for k, v in initial.items()}
        self.history: dict[int, Tensors] = {0: _clone(self.replica)}
        self.client_sync_round: dict[int, int] = {}

    def advance(self, target: Mapping[str, torch.Tensor], density: Callable[[str], float], server_round: int) -> None:
        """``Q_t = Q_{t-1} + SC_k(P_t - Q_{t-1})``; remember ``Q_t`` as round ``server_round``'s."""
        for k, q in self.replica.items():
            q += sparsify_topk(target[k] - q, density(k))
        self.history[server_round] = _clone(self.replica)

    def delta_for(self, client_id: int, server_round: int, cache: dict[int, Tensors] | None = None) -> Tensors:
        """``Q_t - Q_tau`` for a client last synchronised in tau; the client is then synchronised.

        ``cache`` (sync round -> delta) lets the messages of one round share their tensors.
        """
        synced = self.client_sync_round.get(client_id, 0)
        cache = {} if cache is None else cache
        if synced not in cache:
            since = self.history[synced]
            cache[synced] = {k: q - since[k] for k, q in self.replica.items()}
        self.client_sync_round[client_id] = server_round
        return dict(cache[synced])

    def prune(self) -> None:
        """Forget ``Q`` of the rounds no client is synchronised in any more (round 0 stays)."""
        keep = set(self.client_sync_round.values()) | {0}
        for r in [r for r in self.history if r not in keep]:
            del self.history[r]

    def state_dict(self) -> dict[str, Any]:
        return {"replica": self.replica, "history": self.history, "client_sync_round": dict(self.client_sync_round)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.replica = _clone(state["replica"])
        self.history = {int(r): _clone(v) for r, v in state["history"].items()}
        self.client_sync_round = {int(c): int(r) for c, r in state["client_sync_round"].items()}


def _clone(tensors: Mapping[str, torch.Tensor]) -> Tensors:
    return {k: v.clone() for k, v in tensors.items()}
