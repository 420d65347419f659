"""Shared fixtures. Tests run on CPU with one torch thread, as a search worker does."""

import os
import random
import sys

import pytest
import torch

torch.set_num_threads(1)
# tests/ holds shared helpers (contracts/, toy tasks) imported by module name
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def rng() -> random.Random:
    return random.Random(0)


@pytest.fixture(scope="session")
def space():
    from gp_losses.space import SearchSpace

    return SearchSpace()
