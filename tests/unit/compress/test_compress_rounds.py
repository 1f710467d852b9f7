"""EcoLoRA round semantics on a model-free harness: many rounds, random participation and densities.

Properties (issue 16): every client's copy of the global equals the server's record of what it
was sent, bit for bit, in both ``aggregate`` modes and through the codec; no parameter grows
without training; error feedback absorbs the wire rounding; ``paper`` matches an independent
reference of eqs. 2-6 written from the paper alone (``_PaperReference`` below), over 24 rounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from strategies.fakes import FakeRuntime

from ecolora import codec
from ecolora.compress.masked import apply_masked, join_masked, select_masked, split_masked
from ecolora.config import load_config
from ecolora.strategies import Message, build_strategy
from ecolora.strategies.base import TrainResult

NAMES = ["l0.q.lora_A.weight", "l0.q.lora_B.weight", "l1.q.lora_A.weight", "l1.q.lora_B.weight"]
SHAPES = [(2, 6), (5, 2), (2, 6), (5, 2)]


def _initial(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(s, generator=g) for n, s in zip(NAMES, SHAPES, strict=True)}


@dataclass
class _Client(FakeRuntime):
    """'Training' moves every value by a seeded step of scale ``step`` (0: training changes nothing)."""

    step: float = 0.1

    def train(self, server_round: int, config: Any) -> TrainResult:
        self.seen_start = self.get_lora()
        g = torch.Generator().manual_seed(7919 * self.client_id + int(server_round))
        self.lora = {k: v + self.step * torch.randn(v.shape, generator=g) for k, v in sorted(self.lora.items())}
        return TrainResult(train_loss=3.0 - 0.05 * server_round, initial_loss=3.2, num_examples=self.num_examples,
                           num_steps=1, compute_s=0.0)


def _wire(strategy: Any, message: Message) -> Message:
    """The message as the receiver decodes it (codec round trip)."""
    return Message(config=dict(message.config), tensors=strategy.unpack(strategy.pack(message, "down")),
                   num_examples=message.num_examples, metrics=dict(message.metrics))


def _play(mode: str, seed: int, rounds: int, *extra: str, scale: float = 0.1):
    rng = np.random.default_rng(seed)
    cfg = load_config(None, ["method=fedit+ecolora", "fed.num_clients=8", "fed.clients_per_round=4",
                             "ecolora.num_segments=3", f"ecolora.aggregate={mode}", *extra])
    strategy = build_strategy(cfg, _initial())
    clients = [_Client(c, int(rng.integers(1, 9)), scale) for c in range(8)]
    if cfg.ecolora.sparsification != "none":  # random densities every round
        strategy.compressor.densities = lambda: (float(rng.uniform(0.05, 1.0)), float(rng.uniform(0.05, 1.0)))
    for t in range(1, rounds + 1):
        sampled = [int(c) for c in rng.choice(8, size=int(rng.integers(3, 5)), replace=False)]
        messages = strategy.configure_round(t, sampled)
        replies = {c: _wire(strategy, strategy.client_round(clients[c], _wire(strategy, messages[c]))) for c in sampled}
        strategy.aggregate_round(t, replies)
        yield t, strategy, clients


@pytest.mark.parametrize("mode", ["delta", "paper"])
@pytest.mark.parametrize("seed", range(4))
def test_every_client_copy_is_the_server_record_bit_for_bit(mode, seed):
    """Regression (issue 16, points 3 and 6): delta-mode copies drifted from the replica by the fp16
    rounding (and more for clients that skipped rounds); params-mode copies went stale."""
    for _, strategy, clients in _play(mode, seed, 30):
        replica = strategy.compressor.require_replica()
        for c in clients:
            if "view" in c.state:
                record = replica.view(c.client_id)
                assert all(torch.equal(c.state["view"][k], record[k]) for k in record), (mode, c.client_id)


@pytest.mark.parametrize("mode", ["delta", "paper"])
def test_no_parameter_grows_without_training(mode):
    """Regression (point 1): params mode took P + R as the parameter; with density 0.5 and no
    training the global reached 2.39x its initial value."""
    bound = max(float(v.abs().max()) for v in _initial().values()) * (1 + 2**-10)  # fp16 rounding
    for _, strategy, clients in _play(mode, 0, 25, "ecolora.sparsification=fixed", "ecolora.fixed_density=0.5",
                                      scale=0.0):
        assert max(float(v.abs().max()) for v in strategy.global_state.values()) <= bound
        for c in clients:
            for v in c.state.get("view", {}).values():
                assert float(v.abs().max()) <= bound


def test_delta_uploads_keep_the_rounding_error_in_the_residual():
    """Regression (point 6): the upload residual never absorbed the fp16 rounding of what was
    sent, so what the server decoded plus the residual fell short of the client's updates."""
    cfg = load_config(None, ["method=fedit+ecolora", "fed.clients_per_round=1", "ecolora.num_segments=1",
                             "ecolora.sparsification=fixed", "ecolora.fixed_density=0.3"])
    strategy = build_strategy(cfg, _initial())
    client = _Client(0, 1)
    decoded = {k: torch.zeros(v.numel()) for k, v in _initial().items()}
    updates = {k: torch.zeros(v.numel()) for k, v in _initial().items()}
    for t in range(1, 11):
        reply = _wire(strategy, strategy.client_round(client, _wire(strategy, strategy.configure_round(t, [0])[0])))
        strategy.aggregate_round(t, {0: reply})
        for k in decoded:
            decoded[k] += reply.tensors[k].float()
            updates[k] += (client.lora[k] - client.seen_start[k]).reshape(-1)
    residual = client.state["feedback"]["residuals"]["up/0"]
    for k in decoded:
        assert torch.allclose(decoded[k] + residual[k], updates[k], rtol=0, atol=2e-6)


class _SetClient(_Client):
    """'Training' sets every value to ``value``."""

    value: float = 0.0

    def train(self, server_round: int, config: Any) -> TrainResult:
        self.lora = {k: torch.full_like(v, self.value) for k, v in self.lora.items()}
        return TrainResult(train_loss=1.0, initial_loss=2.0, num_examples=self.num_examples, num_steps=1, compute_s=0.0)


def test_paper_mode_counts_a_sent_zero_as_a_value():
    """Regression (point 2): params mode read an exact 0 as 'not sent': clients sending 0 and 1
    over a global of 5 gave 3.0 instead of eq. 2's 0.5."""
    cfg = load_config(None, ["method=fedit+ecolora", "fed.clients_per_round=2", "ecolora.segments=false",
                             "ecolora.aggregate=paper", "ecolora.sparsification=none"])
    strategy = build_strategy(cfg, {k: torch.full(v.shape, 5.0) for k, v in _initial().items()})
    clients = [_SetClient(0, 1), _SetClient(1, 1)]
    clients[1].value = 1.0
    messages = strategy.configure_round(1, [0, 1])
    replies = {c.client_id: _wire(strategy, strategy.client_round(c, _wire(strategy, messages[c.client_id])))
               for c in clients}
    strategy.aggregate_round(1, replies)
    assert all(torch.equal(v, torch.full_like(v, 0.5)) for v in strategy.global_state.values())


# ---- an independent reference of eqs. 2-6, written from the paper (arXiv 2506.02001, sec. 3) ----
def _topk(x: np.ndarray, k: int) -> np.ndarray:
    """Mask of the k largest |x|, ties to the lower index."""
    mask = np.zeros(x.size, dtype=bool)
    mask[np.argsort(-np.abs(x), kind="stable")[:k]] = True
    return mask


def _fp16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32)


class _PaperReference:
    """Eqs. 2-6 on flat parameter vectors: per-client copies G_c, residual R_c = P - G_c."""

    def __init__(self, initial: dict[str, torch.Tensor], num_segments: int, eco: Any) -> None:
        self.names = sorted(initial)
        self.sizes = [initial[n].numel() for n in self.names]
        self.P = np.concatenate([initial[n].reshape(-1).numpy() for n in self.names]).astype(np.float32)
        self.init = self.P.copy()
        self.ns, self.eco = num_segments, eco
        self.G: dict[int, np.ndarray] = {}
        self.local: dict[int, np.ndarray] = {}
        self.tau: dict[int, int] = {}
        self.L0: float | None = None
        self.L: float | None = None

    def density(self, name: str) -> float:  # eq. 4
        e = self.eco
        k_min, gamma = (e.k_min_a, e.gamma_a) if "lora_A" in name else (e.k_min_b, e.gamma_b)
        if self.L0 is None or self.L is None:
            return e.k_max
        return min(e.k_max, max(k_min, k_min + (e.k_max - k_min) * math.exp(min(0.0, -gamma * (self.L0 - self.L)))))

    def pieces(self, lo: int, hi: int) -> list[tuple[str, int, int]]:
        out, start = [], 0
        for name, size in zip(self.names, self.sizes, strict=True):
            a, b = max(lo, start), min(hi, start + size)
            if a < b:
                out.append((name, a, b))
            start += size
        return out

    def select(self, target: np.ndarray, base: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """base with fp16(target) written at the top-k of |target - base| per tensor (eqs. 5-6)."""
        out = base.copy()
        for name, a, b in self.pieces(lo, hi):
            residual = target[a:b] - base[a:b]
            mask = _topk(residual, round(self.density(name) * (b - a))) & (residual != 0)  # SC_k(R)'s non-zeros
            out[a:b][mask] = _fp16(target[a:b][mask])
        return out

    def round(self, t: int, sampled: list[int], clients: list[_Client]) -> None:
        n = self.P.size
        uploads: dict[int, list[tuple[float, np.ndarray]]] = {}
        losses = []
        for j, c in enumerate(sampled):
            self.G[c] = self.select(self.P, self.G.get(c, self.init), 0, n)  # download
            start = self.G[c]
            if c in self.local:  # eq. 3
                w = math.exp(-self.eco.beta * (t - self.tau[c]))
                start = (1 - w) * self.G[c] + w * self.local[c]
            client = clients[c]
            offsets = np.cumsum([0, *self.sizes])
            client.set_lora({nm: torch.from_numpy(start[offsets[i]:offsets[i + 1]].copy()).reshape(SHAPES[NAMES.index(nm)])
                             for i, nm in enumerate(self.names)})
            result = client.train(t, {})
            local = np.concatenate([client.lora[nm].reshape(-1).numpy() for nm in self.names])
            self.local[c], self.tau[c] = local, t
            s = (j + t) % self.ns  # eq. 2's segment
            lo, hi = s * n // self.ns, (s + 1) * n // self.ns
            uploads.setdefault(s, []).append((float(result.num_examples), self.select(local, self.G[c], lo, hi)[lo:hi]))
            losses.append((result.num_examples, result.train_loss, result.initial_loss))
        for s, items in uploads.items():  # eq. 2
            lo, hi = s * n // self.ns, (s + 1) * n // self.ns
            self.P[lo:hi] = sum(w * v for w, v in items) / sum(w for w, _ in items)
        total = sum(w for w, _, _ in losses)
        self.L = sum(w * lt for w, lt, _ in losses) / total
        if self.L0 is None:
            self.L0 = sum(w * l0 for w, _, l0 in losses) / total


def test_paper_mode_matches_an_independent_reference_of_eqs_2_to_6():
    cfg = load_config(None, ["method=fedit+ecolora", "fed.num_clients=8", "fed.clients_per_round=4",
                             "ecolora.num_segments=3", "ecolora.aggregate=paper", "ecolora.k_min_a=0.3",
                             "ecolora.k_min_b=0.2", "ecolora.gamma_a=3", "ecolora.gamma_b=6", "ecolora.beta=0.7"])
    strategy = build_strategy(cfg, _initial())
    reference = _PaperReference(_initial(), 3, cfg.ecolora)
    rng = np.random.default_rng(11)
    sizes = [int(rng.integers(1, 9)) for _ in range(8)]
    clients, ref_clients = [_Client(c, sizes[c]) for c in range(8)], [_Client(c, sizes[c]) for c in range(8)]
    densities = set()
    for t in range(1, 25):
        sampled = [int(c) for c in rng.choice(8, size=int(rng.integers(3, 5)), replace=False)]
        messages = strategy.configure_round(t, sampled)
        densities.add(round(messages[sampled[0]].config["density_b"], 6))
        replies = {c: _wire(strategy, strategy.client_round(clients[c], _wire(strategy, messages[c]))) for c in sampled}
        strategy.aggregate_round(t, replies)
        reference.round(t, sampled, ref_clients)
        got = np.concatenate([strategy.global_state[nm].reshape(-1).numpy() for nm in reference.names])
        np.testing.assert_allclose(got, reference.P, rtol=0, atol=1e-6, err_msg=f"round {t}")
        for c, copy in reference.G.items():
            mine = np.concatenate([clients[c].state["view"][nm].reshape(-1).numpy() for nm in reference.names])
            np.testing.assert_array_equal(mine, copy)
    assert len(densities) > 10  # eq. 4 moved the densities over the run


def test_masked_values_survive_the_codec_with_sent_zeros_and_cost_no_more_than_a_sparse_tensor():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(500, generator=g)
    target = base + torch.randn(500, generator=g) * (torch.rand(500, generator=g) < 0.5)
    target[:3] = 0.0  # sent zeros must arrive as values, not as "not sent"
    base[:3] = 1.0
    sent = {"x": select_masked(target, base, 0.4, torch.float16)}
    payload = codec.pack(split_masked(sent))
    got = join_masked(codec.unpack(payload))["x"]
    assert torch.equal(got.mask, sent["x"].mask) and torch.equal(got.values, sent["x"].values)
    assert torch.equal(apply_masked(base, got)[:3], torch.zeros(3))
    sparse = codec.pack({"x": torch.where(sent["x"].mask, target, torch.zeros(()))})
    assert len(payload) <= len(sparse) + 32  # the @zeros entry (manifest, positions, 3 bytes) and nothing else


@pytest.mark.parametrize("mode", ["delta", "paper"])
def test_a_restored_strategy_continues_bit_for_bit(mode):
    cfg = load_config(None, ["method=fedit+ecolora", "fed.num_clients=4", "fed.clients_per_round=3",
                             "ecolora.num_segments=3", f"ecolora.aggregate={mode}"])
    runs = []
    for restore in (False, True):
        strategy = build_strategy(cfg, _initial())
        clients = [_Client(c, c + 1) for c in range(4)]
        for t in range(1, 7):
            if restore and t == 4:  # a new server process from the checkpointed state
                state = strategy.state_dict()
                strategy = build_strategy(cfg, _initial())
                strategy.load_state_dict(state)
            sampled = [(t + i) % 4 for i in range(3)]
            messages = strategy.configure_round(t, sampled)
            strategy.aggregate_round(t, {c: _wire(strategy, strategy.client_round(clients[c], _wire(strategy, messages[c])))
                                         for c in sampled})
        runs.append(strategy.global_state)
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
