"""CPU-vs-CUDA equivalence (skipped without CUDA): the same training and scores on both devices.

Run on a GPU machine: ``PYTHONPATH=src python3 -m pytest -q tests/unit/client/test_device_cuda.py``.
"""

from __future__ import annotations

import pytest
import torch
from tiny_run import build_peft, train_tiny

from ecolora.client.device import Placement, peak_memory_bytes, reset_peak_memory
from ecolora.client.lora import get_lora_state, set_lora_state
from ecolora.config import load_config
from ecolora.sim.setup import build_setup

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda", 0)


def test_fp32_training_matches_cpu() -> None:
    cpu, cpu_state, _ = train_tiny(Placement(), steps=3)
    gpu, gpu_state, _ = train_tiny(Placement(device=CUDA), steps=3)
    assert gpu.initial_loss == pytest.approx(cpu.initial_loss, rel=1e-4)
    assert gpu.train_loss == pytest.approx(cpu.train_loss, rel=1e-3)
    for key, value in cpu_state.items():
        assert gpu_state[key].device.type == "cpu"  # the one device->host boundary
        torch.testing.assert_close(gpu_state[key], value, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_base_on_cuda_close_to_cpu_fp32(dtype: torch.dtype) -> None:
    cpu, _, _ = train_tiny(Placement(), steps=2)
    gpu, state, _ = train_tiny(Placement(device=CUDA, dtype=dtype), steps=2)
    assert gpu.initial_loss == pytest.approx(cpu.initial_loss, rel=2e-2)
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" for t in state.values())


def test_gradient_checkpointing_same_loss_on_cuda() -> None:
    plain, _, _ = train_tiny(Placement(device=CUDA), steps=3)
    ckpt, _, _ = train_tiny(Placement(device=CUDA, gradient_checkpointing=True), steps=3)
    assert ckpt.train_loss == pytest.approx(plain.train_loss, rel=1e-4)


def test_lora_state_round_trip_from_host() -> None:
    peft_model, _ = build_peft(Placement(device=CUDA))
    state = {k: torch.randn_like(v) for k, v in get_lora_state(peft_model).items()}
    set_lora_state(peft_model, state)
    back = get_lora_state(peft_model)
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_peak_memory_does_not_grow_with_clients() -> None:
    peaks = []
    for clients in (2, 6):
        overrides = [
            "model.name=smollm2-135m-shape", "model.num_layers=2", "train.device=cuda",
            "data.source=configs/data/gpu_check.jsonl", "data.eval_size=4", "data.max_seq_len=64",
            f"fed.num_clients={clients}", f"fed.clients_per_round={clients}", "train.local_steps=1",
            "method=fedit", "data.partition=iid",
        ]  # fmt: skip
        setup = build_setup(load_config(None, overrides))
        reset_peak_memory(CUDA)
        baseline = torch.cuda.memory_allocated(CUDA)
        for client in setup.clients:
            client.set_lora(setup.strategy.global_lora())
            client.train(1, {})
            client.get_lora()
        peaks.append(peak_memory_bytes(CUDA) - baseline)
        del setup
        torch.cuda.empty_cache()
    assert peaks[1] <= peaks[0] * 1.05 + 2**20
