"""Shared fixtures: a fixed seed for every test, one thread so parallel CI stays predictable."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


torch.set_num_threads(1)
# Shared test helpers (a tiny word-level tokenizer and a 2-layer random Llama): tests/support/.
sys.path.insert(0, str(Path(__file__).parent / "support"))
