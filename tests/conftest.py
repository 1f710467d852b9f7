"""Shared fixtures: a fixed seed for every test, one thread so parallel CI stays predictable."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


torch.set_num_threads(1)
