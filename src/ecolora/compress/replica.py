"""The server's record of what each client holds of the global LoRA, bit for bit.

Every sparse download is recorded per client: the server keeps ``V_c``, the copy client ``c``
holds, and updates it with exactly the wire values it sent, so both copies stay bit-identical
whatever rounds the client skipped. Two ways to move ``V_c`` (``ecolora.aggregate``):

* ``delta``: the server keeps one replica ``Q`` and moves it once per round by a sparse step
  towards the global ``P`` (eqs. 5-6 on the download; the residual is ``P - Q``), rounded to the
  wire dtype *before* it is added, so ``Q`` is what was sent::

      D_t = wire(SC_k(P_t - Q_{t-1})),      Q_t = Q_{t-1} + D_t

  and client ``c`` receives ``wire(Q_t - V_c)`` and adds it (``V_c += ...`` on both sides). A client
  present every round receives ``D_t``; a returning client receives everything it missed.
* ``paper``: parameters with explicit masks (:mod:`ecolora.compress.masked`). The residual of
  client ``c``'s stream is ``R_c = P - V_c`` (eq. 6 unrolled: what was not sent yet); the server
  sends the parameter values at the top-k of ``|R_c|`` (eq. 5) and the client overwrites those
  positions. A returning client's residual holds everything it missed.

The initial LoRA is known to all from the shared seed, so a client's first copy is it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from ecolora.compress.masked import MaskedTensor, apply_masked, select_masked
from ecolora.compress.topk import sparsify_topk

__all__ = ["DownloadReplica", "to_wire"]

Tensors = dict[str, torch.Tensor]


def to_wire(tensor: torch.Tensor, wire_dtype: torch.dtype) -> torch.Tensor:
    """``tensor`` as the receiver decodes it: rounded to ``wire_dtype``, back in float32."""
    return tensor.to(wire_dtype).float()


class DownloadReplica:
    """``Q`` (delta mode) and every client's copy ``V_c`` as the server sent it (module docstring)."""

    def __init__(self, initial: Mapping[str, torch.Tensor], wire_dtype: torch.dtype = torch.float16) -> None:
        self.initial: Tensors = {k: v.detach().clone().float() for k, v in initial.items()}
        self.replica: Tensors = _clone(self.initial)
        self.views: dict[int, Tensors] = {}
        self.wire_dtype = wire_dtype

    def view(self, client_id: int) -> Tensors:
        """The copy client ``client_id`` holds (the initial LoRA before its first download)."""
        return self.views.get(client_id, self.initial)

    # ---- delta --------------------------------------------------------------------------------------
    def advance(self, target: Mapping[str, torch.Tensor], density: Callable[[str], float]) -> None:
        """``Q_t = Q_{t-1} + wire(SC_k(P_t - Q_{t-1}))``."""
        for k, q in self.replica.items():
            q += to_wire(sparsify_topk(target[k] - q, density(k)), self.wire_dtype)

    def delta_for(self, client_id: int) -> Tensors:
        """``wire(Q_t - V_c)``, and ``V_c`` moves by it (the client adds the same tensor)."""
        view = self.view(client_id)
        delta = {k: to_wire(q - view[k], self.wire_dtype) for k, q in self.replica.items()}
        self.views[client_id] = {k: view[k] + d for k, d in delta.items()}
        return delta

    # ---- paper --------------------------------------------------------------------------------------
    def values_for(self, client_id: int, target: Mapping[str, torch.Tensor], density: Callable[[str], float],
                   error_feedback: bool = True) -> dict[str, MaskedTensor]:
        """The values of ``P`` at the top-k of ``|P - V_c|`` (or of ``|P|`` without error
        feedback), with their masks; ``V_c`` takes them."""
        view = self.view(client_id)
        sent = {k: select_masked(p, view[k] if error_feedback else None, density(k), self.wire_dtype)
                for k, p in target.items()}
        self.views[client_id] = {k: apply_masked(view[k], m) for k, m in sent.items()}
        return sent

    # ---- checkpoints --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"replica": self.replica, "views": self.views}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.replica = _clone(state["replica"])
        self.views = {int(c): _clone(v) for c, v in state["views"].items()}


def _clone(tensors: Mapping[str, torch.Tensor]) -> Tensors:
    return {k: v.clone() for k, v in tensors.items()}
