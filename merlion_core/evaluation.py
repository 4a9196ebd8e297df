"""Online evaluation of a policy on an environment's true model, many episodes side by side.

``evaluate`` runs ``episodes`` episodes at once with arrays (the env's own action noise on,
drawn from a generator seeded by ``seed``): each step ``policy.act`` gets the batch of states
of the episodes still running. Returns are undiscounted; the normalised score is
100 * (R - R_random) / (R_expert - R_random) of the mean return with the env config's
normalisers (``data.collect.env_normalisers``). The same arguments give the same result.
``progress(done, total)``, when given, is called with 0 as the episodes start and then each time
more of them have finished (a count that only grows, ending at ``total``); it never prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from merlion_core.data.collect import env_normalisers, normalised_score
from merlion_core.envs import make_model, resolve_env_id
from merlion_core.envs.rollout import rollout_episodes
from merlion_core.policy import Policy

ProgressFn = Callable[[int, int], None]
"""``progress(done, total)``: episodes finished so far, of ``total``."""

MAX_LISTED_EPISODES = 1000
"""``EvalResult.to_dict`` lists per-episode values only up to this many episodes."""


@dataclass(frozen=True, eq=False)
class EvalResult:
    """Per-episode outcomes and their summary. Equality compares the arrays element-wise."""

    returns: np.ndarray  # float64 [E], undiscounted
    lengths: np.ndarray  # int64 [E]
    successes: np.ndarray  # bool [E]: the task succeeded (mazes: reached the goal; dialogue: the user's goal met)
    mean_return: float
    std_return: float  # population std (ddof=0) over episodes
    normalised_score: float  # of mean_return
    success_rate: float
    env_id: str

    @property
    def n_episodes(self) -> int:
        return int(self.returns.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EvalResult):
            return NotImplemented
        return all(
            np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
            for a, b in ((getattr(self, f.name), getattr(other, f.name)) for f in fields(self))
        )

    __hash__ = None  # type: ignore[assignment]  # holds arrays

    def to_dict(self, include_episodes: bool | None = None) -> dict[str, Any]:
        """JSON-able summary; per-episode lists are included when there are at most
        ``MAX_LISTED_EPISODES`` episodes (or as ``include_episodes`` says)."""
        out: dict[str, Any] = {
            "env_id": self.env_id,
            "n_episodes": self.n_episodes,
            "mean_return": float(self.mean_return),
            "std_return": float(self.std_return),
            "normalised_score": float(self.normalised_score),
            "success_rate": float(self.success_rate),
            "mean_length": float(self.lengths.mean()) if self.n_episodes else 0.0,
        }
        if include_episodes if include_episodes is not None else self.n_episodes <= MAX_LISTED_EPISODES:
            out["returns"] = [float(r) for r in self.returns]
            out["lengths"] = [int(n) for n in self.lengths]
            out["successes"] = [bool(s) for s in self.successes]
        return out


def evaluate(
    policy: Policy,
    env: str,
    episodes: int = 50,
    seed: int = 0,
    env_overrides: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
) -> EvalResult:
    """Run ``episodes`` episodes of ``policy`` on ``env`` (short name or id) side by side;
    ``progress(done, episodes)`` as they finish (see the module's docstring)."""
    if episodes < 1:
        raise ValueError(f"evaluate: episodes must be >= 1, got {episodes}")
    if not callable(getattr(policy, "act", None)):
        raise ValueError(f"evaluate: policy must have act(obs) -> int64[B], got {type(policy).__name__}")
    env_id = resolve_env_id(env)
    model = make_model(env_id, env_overrides)
    # the normalisers (measured once per env config and process, seconds the first time) come
    # before the episodes, so that the progress count's end is the end of the work
    env_normalisers(env_id, env_overrides)
    reported = 0  # episodes reported finished; act() sees the running ones, one call per step
    if progress is not None:
        progress(0, episodes)

    def act(states: np.ndarray, _rng: np.random.Generator) -> np.ndarray:
        nonlocal reported
        if progress is not None and episodes - states.shape[0] > reported:
            reported = episodes - states.shape[0]
            progress(reported, episodes)
        actions = np.asarray(policy.act(states))
        if actions.shape != (states.shape[0],) or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(
                f"evaluate: policy.act must return int[{states.shape[0]}], got {actions.dtype}{list(actions.shape)}"
            )
        if actions.size and (actions.min() < 0 or actions.max() >= model.n_actions):
            raise ValueError(f"evaluate: policy.act returned actions outside [0, {model.n_actions})")
        return actions.astype(np.int64, copy=False)

    result = rollout_episodes(model, act, episodes, np.random.default_rng(seed), policy_sees="observation")
    if progress is not None and reported < episodes:  # the last ones end with the last step (or its time limit)
        progress(episodes, episodes)
    return _eval_result(result, env_id, env_overrides)


def evaluate_behaviour(
    behaviour: str,
    env: str,
    episodes: int = 50,
    seed: int = 0,
    env_overrides: dict[str, Any] | None = None,
    policy_seed: int = 0,
) -> EvalResult:
    """Run the env's behaviour policy ``behaviour`` (expert, medium or random) without the
    collection's action noise, on the episodes ``evaluate`` plays with the same ``seed``: the
    reference an agent that only imitates the logged policy would reach. The behaviour draws from
    its own generator (``policy_seed``), so the env's draws are those of an agent's evaluation."""
    from merlion_core.envs.behaviours import make_behaviour

    if episodes < 1:
        raise ValueError(f"evaluate_behaviour: episodes must be >= 1, got {episodes}")
    env_id = resolve_env_id(env)
    model = make_model(env_id, env_overrides)
    policy, policy_rng = make_behaviour(model, behaviour), np.random.default_rng(policy_seed)
    result = rollout_episodes(
        model, lambda states, _env_rng: policy(states, policy_rng), episodes, np.random.default_rng(seed)
    )
    return _eval_result(result, env_id, env_overrides)


def _eval_result(result: Any, env_id: str, env_overrides: dict[str, Any] | None) -> EvalResult:
    expert_return, random_return = env_normalisers(env_id, env_overrides)
    returns = result.returns.astype(np.float64)
    mean_return = float(returns.mean())
    return EvalResult(
        returns=returns,
        lengths=result.lengths.astype(np.int64),
        successes=result.successes.astype(bool),
        mean_return=mean_return,
        std_return=float(returns.std()),
        normalised_score=float(normalised_score(mean_return, expert_return, random_return)),
        success_rate=float(result.successes.mean()),
        env_id=env_id,
    )


def learning_curve_point(step: int, result: EvalResult) -> dict[str, Any]:
    """One point of a learning curve: the training step and the result's headline numbers."""
    return {
        "step": int(step),
        "mean_return": float(result.mean_return),
        "normalised_score": float(result.normalised_score),
        "success_rate": float(result.success_rate),
    }
