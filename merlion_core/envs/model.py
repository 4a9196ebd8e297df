"""The batch-model contract shared by every environment with a simulator.

A model steps a whole batch of states with arrays (no Python loop over the batch). Both
the Gymnasium envs and the vectorised collection and evaluation code are built on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

ProbabilityFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class StepResult:
    """One batched transition."""

    next_states: np.ndarray  # float32 [B, S]
    rewards: np.ndarray  # float32 [B]
    terminated: np.ndarray  # bool [B]
    executed_actions: np.ndarray  # int64 [B] (after the env's own action noise)
    successes: np.ndarray | None = None  # bool [B]: the task succeeded (None: success = terminated)


class BatchModel(Protocol):
    """What collection and evaluation need from an environment's simulator."""

    n_actions: int
    obs_dim: int
    max_steps: int

    def initial_states(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray: ...

    def true_step(self, states: np.ndarray, actions: np.ndarray) -> StepResult: ...

    def step(self, states: np.ndarray, actions: np.ndarray, rng: np.random.Generator) -> StepResult: ...

    def info(self) -> dict[str, Any]: ...

    # Optional, for simulators with hidden state (recommender, dialogue):
    #   observe(states) -> f32[B, obs_dim]: what a policy sees (default: the state itself);
    #   behaviour(name) -> callable (states, rng) -> int64[B]: the env's own behaviour policies.
    # Optional class attribute: has_task_success = False when the env has no notion of success
    #   (the recommender: termination = the user leaves); benchmark tables then show no success rate.


def observe(model: Any, states: np.ndarray) -> np.ndarray:
    """f32[B, obs_dim]: the observations of a batch of model states (the states themselves
    unless the model keeps hidden state and defines ``observe``)."""
    observe_fn = getattr(model, "observe", None)
    return states if observe_fn is None else observe_fn(states)


def apply_action_noise(actions: np.ndarray, noise: float, n_actions: int, rng: np.random.Generator) -> np.ndarray:
    """Replace each action by a uniformly random one with probability ``noise``.

    Always draws the same number of variates (B uniforms, then B integers) so the generator's
    stream does not depend on the actions themselves.
    """
    actions = np.asarray(actions, dtype=np.int64)
    replace = rng.random(actions.shape[0]) < noise
    random_actions = rng.integers(0, n_actions, size=actions.shape[0])
    return np.where(replace, random_actions, actions)


@dataclass(frozen=True)
class Behaviour:
    """A named, vectorised behaviour policy, with its action probabilities when it can compute them."""

    name: str
    act: Callable[[np.ndarray, np.random.Generator], np.ndarray]
    probability: ProbabilityFn | None = None
    """float64 [B]: probability that ``act`` picks ``actions[i]`` at ``states[i]``; None = unknown."""

    def __call__(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.act(states, rng)
