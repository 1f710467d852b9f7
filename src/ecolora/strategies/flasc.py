"""FLASC (Kuo, Raje, Rajesh, Smith, "Federated LoRA with Sparse Communication", arXiv 2406.05233;
the CELLM follow-up, arXiv 2407.20557): dense local LoRA training, top-k sparse messages.

Round t, with download density d_down, upload density d_up and sample weights p_i = n_i / sum_j n_j:

1. Server: the download is the top-k of the global LoRA P^t by magnitude,
       D^t = SC_{d_down}(P^t)                    (exactly round(d_down * numel) entries kept),
   the same for every sampled client. Clients keep no state between rounds: they start from D^t
   (zeros where nothing was sent).
2. Client i fine-tunes *all* LoRA entries densely from D^t and gets P_i; its update is
       U_i = P_i - D^t.
3. Upload: S_i = SC_{d_up}(U_i) (exactly round(d_up * numel) entries kept). With
   ``flasc.error_feedback: true`` the client keeps the residual R_i of what top-k dropped and sends
   S_i = SC_{d_up}(U_i + R_i), R_i <- U_i + R_i - S_i (Stich et al. 2018; EcoLoRA eqs. 5-6).
4. Server: P^{t+1} = P^t + sum_i p_i S_i (the dense global keeps every entry).

``flasc.scope`` chooses where top-k competes: ``tensor`` (each LoRA matrix keeps its own share,
so every tensor of a message has exactly round(d * numel) entries) or ``global`` (all matrices
compete together and the message as a whole keeps round(d * total) entries, as FLASC's single
magnitude threshold over the flattened LoRA). Values and positions travel through
:func:`ecolora.codec.pack` (``auto``: Golomb/bitmap positions or dense, whichever is smallest).

FLASC is a plain :class:`~ecolora.strategies.base.Strategy`, so it runs unchanged on the Flower
adapter. ``flasc+ecolora`` is refused by the config: FLASC already sparsifies both directions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ecolora import codec
from ecolora.compress import ErrorFeedback, compress_owned
from ecolora.strategies.base import ClientRuntime, Message, clip_delta_reply, train_metrics
from ecolora.strategies.fedit import FedIT
from ecolora.strategies.validation import CLIENT_REJECTION_KEY, nonfinite_reason

__all__ = ["FLASC"]


class FLASC(FedIT):
    """Sparse download of the global LoRA, dense local training, sparse upload of the update."""

    name = "flasc"

    # ---- server ------------------------------------------------------------------------------
    def configure_round(self, server_round: int, client_ids: list[int]) -> dict[int, Message]:
        flasc = self.config.flasc
        download = _topk(self.global_state, flasc.download_density, flasc.scope)  # one copy shared by all
        config = {"round": server_round, "upload_density": flasc.upload_density}
        messages = {cid: Message(config=dict(config), tensors=dict(download)) for cid in client_ids}
        self.remember_asked(server_round, messages)
        return messages

    # Streaming step 4: FedIT's fold_begin/fold keep S = sum_i n_i S_i and W = sum_i n_i; then P += S / W.
    def fold_end(self, server_round: int) -> dict[str, Any]:
        self.global_state = {k: v + self._sum[k] / self._weight for k, v in self.global_state.items()}
        self._sum = {}
        flasc = self.config.flasc
        return {"download_density": flasc.download_density, "upload_density": flasc.upload_density}

    def clip_reply(self, reply: Message, max_norm: float) -> tuple[Message, float]:
        """Clip the sparse update S_i itself (zeros stay zeros)."""
        return clip_delta_reply(reply, max_norm)

    # ---- client ------------------------------------------------------------------------------
    def client_round(self, runtime: ClientRuntime, message: Message) -> Message:
        start = {k: message.tensors[k].float() for k in self.global_state}
        runtime.set_lora(start)
        server_round = int(message.config["round"])
        result = runtime.train(server_round, message.config)
        local = runtime.get_lora()
        update = {k: local[k].float() - start[k] for k in start}
        reason = nonfinite_reason(update)
        if reason is not None:  # validate before compressing (top-k cannot rank NaN)
            return Message(config={"round": server_round, CLIENT_REJECTION_KEY: reason},
                           num_examples=result.num_examples, metrics=train_metrics(result))
        density = float(message.config["upload_density"])
        if self.config.flasc.error_feedback:
            sent = compress_owned(runtime.state, "flasc/up", update, lambda _: density, scope=self.config.flasc.scope)
        else:
            sent = _topk(update, density, self.config.flasc.scope)
        return Message(config={"round": server_round}, tensors=sent, num_examples=result.num_examples,
                       metrics=train_metrics(result))

    # ---- wire --------------------------------------------------------------------------------
    def pack(self, message: Message, direction: str) -> bytes:
        """Sparse values in the run's wire dtype; positions Golomb/bitmap coded (or dense if smaller)."""
        return codec.pack(message.tensors, value_dtype=self.wire_dtype, encoding="auto")


def _topk(tensors: Mapping[str, torch.Tensor], density: float, scope: str) -> dict[str, torch.Tensor]:
    """SC_d of each tensor (``scope="tensor"``) or of all of them together (``"global"``), no residual."""
    return ErrorFeedback().compress("once", tensors, lambda _: density, scope=scope)
