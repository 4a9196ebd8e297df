"""Vectorised episodes on a batch model: many environments stepped at once with arrays."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from merlion_core.envs.model import observe

Policy = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class RolloutResult:
    """Undiscounted returns, lengths and goal flags of complete episodes."""

    returns: np.ndarray  # float64 [E]
    lengths: np.ndarray  # int64 [E]
    successes: np.ndarray  # bool [E]: the task succeeded (StepResult.successes; else: ended by termination)


def rollout_episodes(
    model,
    policy: Policy,
    n_episodes: int,
    rng: np.random.Generator,
    noise: float = 0.0,
    policy_sees: str = "state",
) -> RolloutResult:
    """Run ``n_episodes`` episodes side by side (env noise on), ``noise`` = share of the
    policy's actions replaced by uniform random ones. ``policy_sees``: ``"state"`` (behaviour
    policies, which may read a simulator's hidden state) or ``"observation"`` (learned agents)."""
    if policy_sees not in ("state", "observation"):
        raise ValueError(f"policy_sees: 'state' or 'observation', got {policy_sees!r}")
    states = model.initial_states(n_episodes, rng)
    returns = np.zeros(n_episodes)
    lengths = np.zeros(n_episodes, dtype=np.int64)
    running = np.ones(n_episodes, dtype=bool)
    success = np.zeros(n_episodes, dtype=bool)
    for _ in range(model.max_steps):
        idx = np.flatnonzero(running)
        if idx.size == 0:
            break
        seen = states[idx] if policy_sees == "state" else observe(model, states[idx])
        actions = policy(seen, rng)
        if noise > 0:
            replace = rng.random(idx.size) < noise
            actions = np.where(replace, rng.integers(0, model.n_actions, size=idx.size), actions)
        result = model.step(states[idx], actions, rng)
        states[idx] = result.next_states
        returns[idx] += result.rewards
        lengths[idx] += 1
        success[idx] = result.terminated if result.successes is None else result.successes
        running[idx] = ~result.terminated
    return RolloutResult(returns, lengths, success)
