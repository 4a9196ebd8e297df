"""Shared pieces of the latent-algorithm tests: one torch thread, a small maze, a fixed table phi."""

import pytest
import torch

from merlion_core.data.collect import collect
from merlion_core.representation.random_embeddings import TableRepresentation

DIM = 3


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def dataset():
    return collect("maze", "medium", 0.5, 3000, seed=0, env_overrides={"n_actuators": 6})


@pytest.fixture(scope="module")
def rep(dataset):
    """State-independent phi(a; s) = table[a], a fixed random [A, DIM] table."""
    table = torch.randn(dataset.n_actions, DIM, generator=torch.Generator().manual_seed(0))
    return TableRepresentation("table", table, dataset.obs_dim)
