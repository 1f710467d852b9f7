"""A run's adapter names its base (hub id or folder) and carries the tokenizer, so peft's
``AutoPeftModelForCausalLM`` loads it in a fresh process without ecolora's model code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ecolora.client.model import load_base_model
from ecolora.config import load_config
from ecolora.sim.setup import base_model_id, build_setup

ROOT = Path(__file__).resolve().parents[3]


def test_base_model_id() -> None:
    assert base_model_id("smollm2-135m") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert base_model_id("org/model") == "org/model"
    assert base_model_id(".") == str(Path.cwd().resolve())


def test_adapter_loads_with_auto_peft_from_a_local_base(tmp_path: Path) -> None:
    base, tokenizer = load_base_model("tiny-llama")
    base.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    config = load_config(ROOT / "configs" / "smoke.yaml", [
        f"model.name={tmp_path / 'base'}", "data.limit=40", "data.eval_size=4", "fed.num_clients=2",
        "fed.clients_per_round=2", "ecolora.num_segments=2"])
    setup = build_setup(config)
    setup.save_adapter(tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == str((tmp_path / "base").resolve())
    code = (
        "import sys; from peft import AutoPeftModelForCausalLM; from transformers import AutoTokenizer\n"
        "m = AutoPeftModelForCausalLM.from_pretrained(sys.argv[1]); t = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "print(type(m).__name__, t.pad_token is not None, any('lora_A' in n for n, _ in m.named_parameters()))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "adapter")], capture_output=True,
                          text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["PeftModelForCausalLM", "True", "True"]
