"""FLASC: exact top-k densities in both directions, dense local training, update aggregation."""

import json
import math

import pytest
import torch

from ecolora import codec
from ecolora.config import ConfigError, load_config
from ecolora.network.ledger import ByteLedger
from ecolora.sim.transport import InProcessTransport
from ecolora.strategies import build_strategy
from ecolora.strategies.flasc import FLASC

from .fakes import NoisyRuntime, lora_template


def _cfg(*overrides):
    return load_config(None, ["method=flasc", "fed.clients_per_round=3", *overrides])


def _round(strategy, clients, server_round, transport=None):
    msgs = strategy.configure_round(server_round, [c.client_id for c in clients])
    replies = {}
    for c in clients:
        msg = transport.send(server_round, c.client_id, "down", msgs[c.client_id]) if transport else msgs[c.client_id]
        reply = strategy.client_round(c, msg)
        replies[c.client_id] = transport.send(server_round, c.client_id, "up", reply) if transport else reply
    strategy.aggregate_round(server_round, replies)
    return msgs, replies


def _trained(strategy):
    """A global LoRA with every entry non-zero and distinct magnitudes; three clients."""
    g = torch.Generator().manual_seed(7)
    strategy.global_state = {k: torch.randn(v.shape, generator=g) for k, v in strategy.global_state.items()}
    return [NoisyRuntime(cid, num_examples=cid + 1) for cid in range(3)]


def test_build_strategy_finds_flasc():
    assert isinstance(build_strategy(_cfg(), lora_template()), FLASC)


@pytest.mark.parametrize(("down", "up"), [(0.25, 0.5), (0.5, 0.125), (1.0, 0.25)])
def test_densities_are_exact_per_tensor_in_both_directions(down, up):
    strategy = build_strategy(_cfg(f"flasc.download_density={down}", f"flasc.upload_density={up}"), lora_template())
    clients = _trained(strategy)
    msgs, replies = _round(strategy, clients, 2)
    for cid in msgs:
        for k, v in msgs[cid].tensors.items():
            assert int((v != 0).sum()) == round(down * v.numel()), k
        for k, v in replies[cid].tensors.items():
            assert int((v != 0).sum()) == round(up * v.numel()), k


def test_packed_payload_carries_exactly_the_kept_values():
    strategy = build_strategy(_cfg("flasc.download_density=0.25", "flasc.upload_density=0.5"), lora_template())
    clients = _trained(strategy)
    ledger = ByteLedger()
    _round(strategy, clients, 2, InProcessTransport(strategy, ledger))
    down = [e for e in ledger.entries if e.direction == "down"]
    up = [e for e in ledger.entries if e.direction == "up"]
    # 4 tensors of 8 and 6 values: down keeps 2 + 2 (A) and 2 + 2 (B, round(1.5) = 2), up 4 + 3 each
    assert [e.num_params for e in down] == [2 + 2 + 2 + 2] * 3
    assert [e.num_params for e in up] == [4 + 3 + 4 + 3] * 3
    payload = strategy.pack(strategy.configure_round(3, [0])[0], "down")
    assert sum(int(t["nnz"]) for t in codec.describe(payload)) == 8


def test_global_scope_keeps_round_d_times_total():
    strategy = build_strategy(_cfg("flasc.scope=global", "flasc.download_density=0.25"), lora_template())
    clients = _trained(strategy)
    msgs, replies = _round(strategy, clients, 2)
    total = sum(v.numel() for v in lora_template().values())  # 28
    assert sum(int((v != 0).sum()) for v in msgs[0].tensors.values()) == round(0.25 * total)
    assert sum(int((v != 0).sum()) for v in replies[0].tensors.values()) == round(0.25 * total)


def test_clients_start_from_the_sparse_download_and_server_adds_weighted_updates():
    init = lora_template()
    strategy = build_strategy(_cfg("flasc.download_density=0.5", "flasc.upload_density=0.5"), init)
    clients = [NoisyRuntime(cid, num_examples=cid + 1) for cid in range(3)]
    before = {k: v.clone() for k, v in strategy.global_state.items()}
    msgs, replies = _round(strategy, clients, 1)
    for c in clients:
        for k, v in msgs[c.client_id].tensors.items():
            assert torch.equal(c.seen_start[k], v.float())  # started from the sparse download
            update = c.lora[k] - v.float()
            assert torch.equal(replies[c.client_id].tensors[k], torch.where(replies[c.client_id].tensors[k] != 0, update, 0.0))
    for k in before:  # P^{t+1} = P^t + sum_i n_i S_i / sum_i n_i, by hand
        expected = before[k] + sum((c.client_id + 1) * replies[c.client_id].tensors[k] for c in clients) / 6.0
        assert torch.allclose(strategy.global_state[k], expected, atol=1e-6)


def test_download_is_topk_of_global_by_magnitude():
    strategy = build_strategy(_cfg("flasc.download_density=0.25"), lora_template())
    _trained(strategy)
    msg = strategy.configure_round(2, [0])[0]
    for k, g in strategy.global_state.items():
        kept = msg.tensors[k] != 0
        assert torch.equal(msg.tensors[k][kept], g[kept])
        assert g[kept].abs().min() >= g[~kept].abs().max()


def test_error_feedback_carries_what_topk_dropped():
    strategy = build_strategy(_cfg("flasc.error_feedback=true", "flasc.upload_density=0.25"), lora_template())
    client = NoisyRuntime(0, num_examples=4)
    sent_total = {k: torch.zeros_like(v) for k, v in lora_template().items()}
    update_total = {k: torch.zeros_like(v) for k, v in lora_template().items()}
    for t in (1, 2, 3):
        msg = strategy.configure_round(t, [0])[0]
        reply = strategy.client_round(client, msg)
        for k in sent_total:
            sent_total[k] += reply.tensors[k]
            update_total[k] += client.lora[k] - msg.tensors[k].float()
        strategy.aggregate_round(t, {0: reply})
    residual = client.state["feedback"]["residuals"]["flasc/up"]
    for k in sent_total:  # sum of sent + residual = sum of updates (eqs. 5-6)
        assert torch.allclose(sent_total[k] + residual[k], update_total[k], atol=1e-5)
        assert residual[k].abs().sum() > 0


def test_flasc_bytes_are_below_dense_fedit():
    flasc = build_strategy(_cfg("flasc.download_density=0.25", "flasc.upload_density=0.25"), lora_template())
    fedit = build_strategy(load_config(None, ["method=fedit"]), lora_template())
    sizes = {}
    for name, strategy in (("flasc", flasc), ("fedit", fedit)):
        ledger = ByteLedger()
        clients = [NoisyRuntime(cid, num_examples=2) for cid in range(3)]
        for t in (1, 2):
            _round(strategy, clients, t, InProcessTransport(strategy, ledger))
        sizes[name] = ledger.totals()
    # 6 uploads; FLASC keeps 2 of 8 (A) and round(1.5) = 2 of 6 (B) per tensor, FedIT all 28 values
    assert (sizes["flasc"]["upload_params"], sizes["fedit"]["upload_params"]) == (6 * 8, 6 * 28)
    assert sizes["flasc"]["upload_bytes"] < sizes["fedit"]["upload_bytes"]


def test_config_errors_are_pinned():
    with pytest.raises(ConfigError, match=r"`method`: EcoLoRA does not apply to flasc, so 'flasc\+ecolora' is not a method; known: fedit, "):
        load_config(None, ["method=flasc+ecolora"])
    with pytest.raises(ConfigError, match=r"`flasc.upload_density` must be in \(0, 1\], got 0.0."):
        load_config(None, ["flasc.upload_density=0"])
    with pytest.raises(ConfigError, match=r"`flasc.scope` must be tensor or global, got 'layer'."):
        load_config(None, ["flasc.scope=layer"])


def test_clip_norm_scales_the_sparse_update():
    strategy = build_strategy(_cfg("faults.clip_norm=0.5"), lora_template())
    client = NoisyRuntime(0, num_examples=1)
    msg = strategy.configure_round(1, [0])[0]
    reply = strategy.client_round(client, msg)
    norm = math.sqrt(sum(float(v.square().sum()) for v in reply.tensors.values()))
    before = {k: v.clone() for k, v in strategy.global_state.items()}
    strategy.aggregate_round(1, {0: reply})
    moved = math.sqrt(sum(float((strategy.global_state[k] - before[k]).square().sum()) for k in before))
    assert norm > 0.5 and moved == pytest.approx(0.5, rel=1e-5)


# ---- FLASC-Search (model-free: a synthetic run function) ------------------------------------------
def test_flasc_search_walks_pairwise_within_budget(tmp_path):
    import math as _math

    from ecolora.bench.flasc_search import flasc_search

    seen = []

    def fake_run(config, out_dir):
        r, d = config.lora.r, config.flasc.upload_density
        seen.append((config.method, r, d, config.flasc.download_density, config.fed.rounds))
        per_round = int(r * d * 1000)
        return {"final_eval_loss": 2 - 0.1 * _math.log2(r) - 0.3 * d, "upload_bytes": per_round,
                "download_bytes": per_round}

    base = load_config(None, ["method=fedit", "fed.rounds=10"])
    result = flasc_search(base, [16, 4, 8], [1.0, 0.25, 0.5], out_dir=tmp_path, byte_budget=60_000,
                          short_rounds=2, run_fn=fake_run)
    assert all(m == "flasc" and up == down and rounds == 2 for m, _, up, down, rounds in seen)
    # (4, .25) -> (8, .25) beats (4, .5) -> (16, .25) beats (8, .5) -> (16, .5) is over budget (r d = 8 > 6)
    assert result.path == [(4, 0.25), (8, 0.25), (16, 0.25)]
    assert sorted(p.key for p in result.points) == [(4, 0.25), (4, 0.5), (8, 0.25), (8, 0.5), (16, 0.25), (16, 0.5)]
    assert len(seen) == 6  # every configuration ran once
    assert result.best == (16, 0.25)
    assert result.frontier == [(4, 0.25), (8, 0.25), (16, 0.25), (16, 0.5)]
    over = next(p for p in result.points if p.key == (16, 0.5))
    assert not over.within_budget and over.projected_bytes == 2 * 8000 / 2 * 10
    table = (tmp_path / "search.md").read_text()
    assert "| 16 | 0.25 | 1.5250 | 8,000 | 0.040 | yes | 3 | * |" in table
    assert (tmp_path / "search.png").stat().st_size > 1000
    assert json.loads((tmp_path / "search.json").read_text())["best"] == [16, 0.25]


def test_flasc_search_rejects_empty_grid(tmp_path):
    from ecolora.bench.flasc_search import flasc_search

    with pytest.raises(ValueError, match=r"Give at least one rank and one density, got ranks \[\] and densities \[0.5\]."):
        flasc_search(load_config(None, []), [], [0.5], out_dir=tmp_path, run_fn=lambda c, o: {})
