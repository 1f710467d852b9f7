"""HierFedLoRA's and FedBuff's loops resumed from a checkpoint equal the uninterrupted run, bit for bit.

The interrupted run stops right after its round-1 (server step 1) checkpoint (the progress hook
raises, as a crash there would), the process's RNGs are scrambled, and ``resume=True`` runs
rounds 2 and 3 on a freshly built setup. FedBuff's checkpoint holds the jobs in flight with their
replies; ``fedbuff.step_time_s`` makes its event order independent of the machine's speed. Adapter tensors, metrics.jsonl rows (bytes, losses, groups) and
summary.json must equal the uninterrupted run's, apart from measured time.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ecolora.config import load_config
from ecolora.sim.async_runner import run_async
from ecolora.sim.hier_runner import run_hierarchical

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TINY = ["fed.rounds=3", "fed.num_clients=4", "fed.clients_per_round=4", "fed.eval_every=0", "train.num_threads=1",
        "train.batch_size=2", "data.limit=80", "data.eval_size=8", "data.max_seq_len=48"]
TIMING_KEYS = {"wall_s", "compute_s", "network", "net"}


class _Crash(Exception):
    pass


def _crash_after_round_1(event: str, done: int, total: int) -> None:
    if event == "round" and done == 1:
        raise _Crash


def _untimed(value):
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def _outcome(run: Path) -> tuple[dict, list[dict], dict]:
    adapter = load_file(run / "adapter" / "adapter_model.safetensors")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    return adapter, _untimed(records), _untimed(summary)


@pytest.mark.parametrize("method", ["hierfedlora", "hierfedlora+ecolora"])
def test_hierfedlora_resumed_after_round_1_equals_uninterrupted(tmp_path, method):
    config = load_config(ROOT / "configs" / "methods" / "hierfedlora.yaml", [f"method={method}", *TINY])
    ref, chain = tmp_path / "ref", tmp_path / "chain"
    run_hierarchical(config, ref)

    with pytest.raises(_Crash):
        run_hierarchical(config, chain, progress=_crash_after_round_1)
    assert sorted(p.name for p in (chain / "checkpoints").iterdir()) == ["round-000001.safetensors"]
    random.seed(99), np.random.seed(99), torch.manual_seed(99)  # the resumed run must not depend on them
    run_hierarchical(config, chain, resume=True)

    want, ref_records, ref_summary = _outcome(ref)
    got, chain_records, chain_summary = _outcome(chain)
    assert sorted(want) == sorted(got)
    assert all(torch.equal(want[k], got[k]) for k in want), "adapters differ"
    assert [r["round"] for r in chain_records] == [1, 2, 3]
    assert chain_records == ref_records
    assert chain_summary == ref_summary
    assert ref_records[-1]["upload_bytes"] > 0 and ref_records[-1]["intra_group_bytes"] > 0


@pytest.mark.parametrize("method", ["fedbuff", "fedbuff+ecolora"])
def test_fedbuff_resumed_after_step_1_equals_uninterrupted(tmp_path, method):
    overrides = [f"method={method}", *TINY, "train.local_steps=1", "fedbuff.step_time_s=0.5"]
    config = load_config(ROOT / "configs" / "methods" / "fedbuff.yaml", overrides)
    ref, chain = tmp_path / "ref", tmp_path / "chain"
    run_async(config, ref)

    with pytest.raises(_Crash):
        run_async(config, chain, progress=_crash_after_round_1)
    assert sorted(p.name for p in (chain / "checkpoints").iterdir()) == ["round-000001.safetensors"]
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    run_async(config, chain, resume=True)

    want, ref_records, ref_summary = _outcome(ref)
    got, chain_records, chain_summary = _outcome(chain)
    assert all(torch.equal(want[k], got[k]) for k in want), "adapters differ"
    assert [r["round"] for r in chain_records] == [1, 2, 3]
    assert chain_records == ref_records
    assert chain_summary == ref_summary
    assert ref_summary["jobs_dispatched"] > 4 and ref_summary["jobs_discarded"] > 0
    assert any(s > 0 for r in ref_records for s in r["staleness"])
