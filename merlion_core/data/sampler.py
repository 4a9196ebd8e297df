"""Uniform minibatches of transitions as torch tensors, for the offline RL algorithms.

A :class:`BatchSampler` copies the dataset's arrays to the device once, then every
:meth:`BatchSampler.sample` draws ``batch_size`` indices uniformly with replacement from its
own CPU ``torch.Generator`` (so the same seed gives the same batches on every device) and
gathers them on the device. ``done`` is the terminal flag only: a timeout is a truncation,
not an absorbing state, so the target still bootstraps from its next state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from merlion_core.data.dataset import TransitionDataset
from merlion_core.models.mlp import host_to_device, resolve_device


@dataclass(frozen=True)
class Batch:
    """B transitions ``(s, a, r, s', done)`` as tensors on one device."""

    obs: torch.Tensor
    """f32[B, S]: states s."""
    act: torch.Tensor
    """i64[B]: logged action ids a."""
    rew: torch.Tensor
    """f32[B]: rewards r."""
    next_obs: torch.Tensor
    """f32[B, S]: next states s'."""
    done: torch.Tensor
    """f32[B]: 1.0 where s' is terminal (timeouts are 0.0: they bootstrap)."""


class BatchSampler:
    """Uniform sampling with replacement from a :class:`TransitionDataset`."""

    def __init__(self, dataset: TransitionDataset, batch_size: int, seed: int = 0, device: str = "cpu") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        self.n = dataset.n_transitions
        self.n_actions = dataset.n_actions
        self.obs_dim = dataset.obs_dim

        def to_device(arr: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return torch.tensor(np.asarray(arr), dtype=dtype, device=self.device)  # always a copy

        self._obs = to_device(dataset.observations, torch.float32)
        self._act = to_device(dataset.actions, torch.int64)
        self._rew = to_device(dataset.rewards, torch.float32)
        self._next_obs = to_device(dataset.next_observations, torch.float32)
        self._done = to_device(dataset.terminals, torch.float32)
        self.generator = torch.Generator().manual_seed(int(seed))

    @property
    def observations(self) -> torch.Tensor:
        """f32[N, S]: every state of the dataset, on the sampler's device (read-only use)."""
        return self._obs

    @property
    def actions(self) -> torch.Tensor:
        """i64[N]: every logged action of the dataset, on the sampler's device (read-only use)."""
        return self._act

    def sample(self) -> Batch:
        idx = host_to_device(torch.randint(0, self.n, (self.batch_size,), generator=self.generator), self.device)
        return Batch(
            obs=self._obs[idx],
            act=self._act[idx],
            rew=self._rew[idx],
            next_obs=self._next_obs[idx],
            done=self._done[idx],
        )
