"""Vectorised episodes on a batch model: many environments stepped at once with arrays."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

Policy = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class RolloutResult:
    """Undiscounted returns, lengths and goal flags of complete episodes."""

    returns: np.ndarray  # float64 [E]
    lengths: np.ndarray  # int64 [E]
    successes: np.ndarray  # bool [E]: episode ended by termination (goal)


def rollout_episodes(
    model, policy: Policy, n_episodes: int, rng: np.random.Generator, noise: float = 0.0
) -> RolloutResult:
    """Run ``n_episodes`` episodes side by side (env noise on), ``noise`` = share of the
    policy's actions replaced by uniform random ones."""
    states = model.initial_states(n_episodes)
    returns = np.zeros(n_episodes)
    lengths = np.zeros(n_episodes, dtype=np.int64)
    running = np.ones(n_episodes, dtype=bool)
    success = np.zeros(n_episodes, dtype=bool)
    for _ in range(model.max_steps):
        idx = np.flatnonzero(running)
        if idx.size == 0:
            break
        actions = policy(states[idx], rng)
        if noise > 0:
            replace = rng.random(idx.size) < noise
            actions = np.where(replace, rng.integers(0, model.n_actions, size=idx.size), actions)
        result = model.step(states[idx], actions, rng)
        states[idx] = result.next_states
        returns[idx] += result.rewards
        lengths[idx] += 1
        success[idx] = result.terminated
        running[idx] = ~result.terminated
    return RolloutResult(returns, lengths, success)
