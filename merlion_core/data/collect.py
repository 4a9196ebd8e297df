"""Logged-data collection: a behaviour policy with action noise, many environments at once.

``collect`` steps ``n_envs`` copies of an environment's true model side by side with arrays.
Each copy's stream of transitions is a run of whole episodes; streams are laid end to end
(copy 0 first), each copy's unfinished last episode is dropped, and the result is cut at
exactly ``n`` transitions (the cut episode's last kept transition is flagged as a timeout,
as D4RL does). The same arguments give the same dataset, bit for bit. When the behaviour can
compute the probability of an action (``Behaviour.probability``), each transition also records
its propensity: ``(1 - noise) * pi_beta(a | s) + noise / n_actions`` for the logged action a.

Feedback without printing: ``stage(message)`` names each slow preparation before it starts (the
env's normalisers, the behaviour's planner: seconds on the mazes, most of a short collection),
then ``progress(done, n)`` is called with 0 as the stepping starts and with the count after
each step, so a progress bar started at the 0 measures the collection's own rate.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from merlion_core.config import to_dict
from merlion_core.data.dataset import DatasetMeta, TransitionDataset
from merlion_core.envs import make_model, resolve_env_id
from merlion_core.envs.behaviours import BEHAVIOURS, make_behaviour
from merlion_core.envs.model import observe
from merlion_core.envs.rollout import rollout_episodes

ProgressFn = Callable[[int, int], None]
StageFn = Callable[[str], None]
NORMALISER_EPISODES = 1000
NORMALISER_SEED = 20220717  # fixed: normalisers are a property of the env config, not of a run
MAX_TRANSITIONS = 50_000_000


@functools.lru_cache(maxsize=16)
def _normalisers(env_id: str, overrides_key: tuple) -> tuple[float, float]:
    model = make_model(env_id, dict(overrides_key))
    means = []
    for name in ("expert", "random"):
        rng = np.random.default_rng(NORMALISER_SEED)
        result = rollout_episodes(model, make_behaviour(model, name), NORMALISER_EPISODES, rng)
        means.append(float(result.returns.mean()))
    return means[0], means[1]


def _freeze(overrides: dict[str, Any] | None) -> tuple:
    def frozen(value: Any) -> Any:
        return tuple(frozen(v) for v in value) if isinstance(value, (list, tuple)) else value

    return tuple(sorted((k, frozen(v)) for k, v in (overrides or {}).items()))


def env_normalisers(env: str, overrides: dict[str, Any] | None = None) -> tuple[float, float]:
    """(expert_return, random_return): mean undiscounted returns over 1000 episodes each,
    env noise on, measured once per env config and process."""
    return _normalisers(resolve_env_id(env), _freeze(overrides))


def normalised_score(returns: Any, expert_return: float, random_return: float) -> Any:
    """100 * (R - R_random) / (R_expert - R_random)."""
    return 100.0 * (np.asarray(returns) - random_return) / (expert_return - random_return)


@dataclass(frozen=True)
class CollectConfig:
    """Settings of one logged-data collection (paper A.4, "Data collection")."""

    env: str = "maze"
    """Environment: short name (maze, multistep-maze, recommender, dialogue) or full id."""
    behaviour: str = "medium"
    """Behaviour policy pi_beta: expert, medium or random."""
    noise: float = 0.5
    """Share of actions replaced by uniform random ones (paper: 50%)."""
    n: int = 100_000
    """Number of transitions N (paper: 100,000)."""
    seed: int = 0
    """Seed of every random draw; the same seed gives the same bytes."""
    n_envs: int = 256
    """Environments stepped side by side (changes the data, not its distribution)."""


def collect_from_config(
    config: CollectConfig, progress: ProgressFn | None = None, stage: StageFn | None = None
) -> TransitionDataset:
    """``collect`` with the settings of a :class:`CollectConfig`."""
    return collect(
        config.env,
        config.behaviour,
        config.noise,
        config.n,
        config.seed,
        n_envs=config.n_envs,
        progress=progress,
        stage=stage,
    )


def collect(
    env: str,
    behaviour: str = "medium",
    noise: float = 0.5,
    n: int = 100_000,
    seed: int = 0,
    *,
    n_envs: int = 256,
    env_overrides: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
    stage: StageFn | None = None,
) -> TransitionDataset:
    """Collect ``n`` transitions of ``behaviour`` with a share ``noise`` of uniform random actions;
    ``stage`` and ``progress``: see the module's docstring."""
    env_id = resolve_env_id(env)
    if behaviour not in BEHAVIOURS:
        raise ValueError(f"behaviour: unknown {behaviour!r}; choose one of {', '.join(BEHAVIOURS)}")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise: must be in [0, 1], got {noise}")
    if not 1 <= n <= MAX_TRANSITIONS:
        raise ValueError(f"n: must be in [1, {MAX_TRANSITIONS}], got {n}")
    if n_envs < 1:
        raise ValueError(f"n_envs: must be >= 1, got {n_envs}")
    model = make_model(env_id, env_overrides)
    if stage is not None:
        stage(
            f"{env_id}: the expert and random returns that normalise scores "
            f"({NORMALISER_EPISODES} episodes each, once per process)"
        )
    expert_return, random_return = env_normalisers(env_id, env_overrides)  # cached per process
    if stage is not None:
        stage(f"the {behaviour} behaviour policy (planners solve the env's true model first)")
    policy = make_behaviour(model, behaviour)
    behaviour_rng, noise_rng, env_rng = np.random.default_rng(seed).spawn(3)

    n_slots = min(n_envs, n)
    # every slot then holds at least (n_steps - max_steps) transitions of complete episodes
    n_steps = math.ceil(n / n_slots) + model.max_steps
    obs_dim = model.obs_dim
    observations = np.empty((n_steps, n_slots, obs_dim), dtype=np.float32)
    next_observations = np.empty_like(observations)
    actions = np.empty((n_steps, n_slots), dtype=np.int64)
    rewards = np.empty((n_steps, n_slots), dtype=np.float32)
    terminals = np.empty((n_steps, n_slots), dtype=bool)
    timeouts = np.empty((n_steps, n_slots), dtype=bool)
    probability = getattr(policy, "probability", None)
    propensities = None if probability is None else np.empty((n_steps, n_slots), dtype=np.float32)

    states = model.initial_states(n_slots, env_rng)
    elapsed = np.zeros(n_slots, dtype=np.int64)
    if progress is not None:
        progress(0, n)  # the preparation is over: the stepping starts
    for t in range(n_steps):
        chosen = policy(states, behaviour_rng)
        replace = noise_rng.random(n_slots) < noise
        chosen = np.where(replace, noise_rng.integers(0, model.n_actions, size=n_slots), chosen)
        if propensities is not None and probability is not None:  # draws nothing: the logged bytes do not depend on it
            propensities[t] = (1.0 - noise) * probability(states, chosen) + noise / model.n_actions
        result = model.step(states, chosen, env_rng)
        elapsed += 1
        truncated = ~result.terminated & (elapsed >= model.max_steps)
        observations[t], actions[t], rewards[t] = observe(model, states), chosen, result.rewards
        next_observations[t], terminals[t], timeouts[t] = (
            observe(model, result.next_states),
            result.terminated,
            truncated,
        )
        done = result.terminated | truncated
        if done.any():  # fresh episodes in the finished slots (simulators may draw hidden state)
            states = result.next_states.copy()
            states[done] = model.initial_states(int(done.sum()), env_rng)
        else:
            states = result.next_states
        elapsed[done] = 0
        if progress is not None:
            progress(min(n, (t + 1) * n_slots), n)

    # slot-major streams; keep each slot's transitions up to its last episode end
    ends = terminals | timeouts  # [T, B]
    last_end = n_steps - 1 - np.argmax(ends[::-1], axis=0)  # per slot
    keep = np.arange(n_steps)[:, None] <= last_end[None, :]
    order_mask = keep.T.ravel()  # slot-major order

    def flat(a: np.ndarray) -> np.ndarray:
        return a.swapaxes(0, 1).reshape(n_slots * n_steps, *a.shape[2:])[order_mask][:n]

    fields = {
        "observations": flat(observations),
        "actions": flat(actions),
        "rewards": flat(rewards),
        "next_observations": flat(next_observations),
        "terminals": flat(terminals),
        "timeouts": flat(timeouts),
    }
    logged_propensities = None if propensities is None else flat(propensities)
    if len(fields["actions"]) < n:  # cannot happen by construction; guard the invariant
        raise RuntimeError(f"collect: gathered {len(fields['actions'])} < {n} transitions")
    fields["timeouts"][-1] |= ~fields["terminals"][-1]  # the cut episode ends here

    meta = DatasetMeta(
        env_id=env_id,
        env_config=to_dict(model.config),
        behaviour=behaviour,
        noise=float(noise),
        seed=int(seed),
        expert_return=expert_return,
        random_return=random_return,
        extra={"n_envs": int(n_slots), "collector": "merlion_core.data.collect/1"},
    )
    return TransitionDataset(**fields, n_actions=model.n_actions, meta=meta, propensities=logged_propensities)
