"""Shared fixtures. Tests run on CPU with one torch thread, as a search worker does."""

import random

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def rng() -> random.Random:
    return random.Random(0)


@pytest.fixture(scope="session")
def space():
    from gp_losses.space import SearchSpace

    return SearchSpace()
