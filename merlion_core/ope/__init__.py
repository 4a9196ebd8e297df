"""Off-policy evaluation of a deterministic target policy on held-out logged episodes.

Estimators: ``fqe`` (fitted Q evaluation, fqe.py), ``wis`` (per-decision weighted importance
sampling, importance.py), ``dr`` (weighted doubly robust with FQE's Q), and ``pdis`` (ordinary
per-decision importance sampling) on request. Everything here is numeric: arrays in, dataclasses
out. The caller computes the target policy's actions once (at every observation and next
observation of the held-out transitions) and the behaviour probabilities mu(a_t | s_t) of the
logged actions, from logged propensities or a fitted :class:`BehaviourModel`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from merlion_core.ope.episodes import (
    EpisodeTable,
    HoldoutSplit,
    check_split_record,
    holdout_split,
    split_from_dict,
    split_to_dict,
    to_padded,
)
from merlion_core.ope.importance import effective_sample_size, pdis, pdwis, wdr
from merlion_core.ope.result import OPEEstimate, ProgressFn, bootstrap_counts, percentile_interval

if TYPE_CHECKING:
    from merlion_core.ope.behaviour import BehaviourModel, BehaviourModelConfig, fit_behaviour_model
    from merlion_core.ope.fqe import FittedQ, FQEConfig, fitted_q_evaluation

_TORCH_PARTS = {
    "BehaviourModel": "behaviour",
    "BehaviourModelConfig": "behaviour",
    "fit_behaviour_model": "behaviour",
    "FittedQ": "fqe",
    "FQEConfig": "fqe",
    "fitted_q_evaluation": "fqe",
}
"""Names imported on first use: the torch modules stay unloaded for callers that need only the constants,
the split or the importance estimators (job specs, the CLI's option tables)."""


def __getattr__(name: str) -> Any:
    if name in _TORCH_PARTS:
        import importlib

        return getattr(importlib.import_module(f"merlion_core.ope.{_TORCH_PARTS[name]}"), name)
    raise AttributeError(f"module 'merlion_core.ope' has no attribute {name!r}")


ESTIMATORS = ("fqe", "wis", "dr")
"""The estimators :func:`estimate` runs by default."""
ALL_ESTIMATORS = ESTIMATORS + ("pdis",)
"""Every estimator :func:`estimate` knows."""

__all__ = [
    "ALL_ESTIMATORS",
    "ESTIMATORS",
    "BehaviourModel",
    "BehaviourModelConfig",
    "EpisodeTable",
    "FQEConfig",
    "FittedQ",
    "HoldoutSplit",
    "OPEEstimate",
    "ProgressFn",
    "bootstrap_counts",
    "check_split_record",
    "effective_sample_size",
    "estimate",
    "fit_behaviour_model",
    "fitted_q_evaluation",
    "holdout_split",
    "feature_fqe",
    "pdis",
    "pdwis",
    "percentile_interval",
    "split_from_dict",
    "split_to_dict",
    "to_padded",
    "wdr",
]


class _ImportanceInputs(TypedDict):
    """The arguments every importance estimator of :func:`estimate` shares."""

    rewards_N: np.ndarray
    actions_N: np.ndarray
    policy_actions_N: np.ndarray
    mu_N: np.ndarray
    table: EpisodeTable
    gamma: float


def estimate(
    observations: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    next_observations: np.ndarray,
    terminals: np.ndarray,
    timeouts: np.ndarray,
    n_actions: int,
    policy_actions_N: np.ndarray,
    next_policy_actions_N: np.ndarray,
    mu_N: np.ndarray,
    behaviour_source: str,
    *,
    estimators: tuple[str, ...] = ESTIMATORS,
    gamma: float = 0.99,
    fqe_config: FQEConfig | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    progress: ProgressFn | None = None,
    device: str = "auto",
    action_features: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> dict[str, OPEEstimate]:
    """Run ``estimators`` on held-out complete episodes; name -> :class:`OPEEstimate`.

    ``policy_actions_N`` = pi(s_t) and ``next_policy_actions_N`` = pi(s'_t) for every transition (the
    initial states' actions are ``policy_actions_N`` at each episode's first transition); ``mu_N`` =
    mu(a_t | s_t) of the logged actions, whose origin ``behaviour_source`` is recorded in the details.
    FQE is fitted once (``fqe_config``, default ``FQEConfig(gamma=gamma)``) and its head 0 gives dr's
    q_hat and v_hat. ``n_bootstrap`` and ``seed`` set the importance estimators' episode bootstrap.

    ``action_features`` = (f(s_t, a_t), f(s_t, pi(s_t)), f(s'_t, pi(s'_t))), each f32[N, D] (e.g. an encoder's
    phi(a; s)): FQE then fits Q(s, a) = Q([s, f(s, a)]) on the features instead of one output per action id,
    so actions with similar features share what the data says about them (:func:`feature_fqe`).
    """
    from merlion_core.ope.fqe import FQEConfig, fitted_q_evaluation

    unknown = [name for name in estimators if name not in ALL_ESTIMATORS]
    if unknown or not estimators:
        raise ValueError(
            f"estimators: unknown {unknown} (known: {', '.join(ALL_ESTIMATORS)})"
            if unknown
            else "estimators: none requested"
        )
    config = FQEConfig(gamma=gamma) if fqe_config is None else fqe_config
    if config.gamma != gamma:
        raise ValueError(f"gamma: {gamma} differs from fqe_config.gamma {config.gamma}")
    terminals, timeouts = np.asarray(terminals, bool), np.asarray(timeouts, bool)
    table = EpisodeTable.from_flags(terminals, timeouts)
    if int(table.ends[-1]) != terminals.shape[0] - 1:
        raise ValueError(
            f"terminals/timeouts: transitions after the last episode end ({int(table.ends[-1])}); "
            "pass complete episodes only"
        )
    policy_actions_N = np.asarray(policy_actions_N, dtype=np.int64)
    results: dict[str, OPEEstimate] = {}
    if "fqe" in estimators or "dr" in estimators:  # one fit; dr reads its Q at (s, a_t) and (s, pi(s))
        if action_features is None:
            results["fqe"], fitted_q = fitted_q_evaluation(
                observations,
                actions,
                rewards,
                next_observations,
                terminals,
                next_policy_actions_N,
                policy_actions_N[table.starts],
                table,
                n_actions,
                config,
                progress=progress,
                device=device,
            )
            q_and_v = lambda: (fitted_q.q(observations, actions), fitted_q.v(observations, policy_actions_N))  # noqa: E731
        else:
            results["fqe"], q_and_v = feature_fqe(
                observations,
                next_observations,
                rewards,
                terminals,
                action_features,
                table,
                config,
                progress=progress,
                device=device,
            )
    common = _ImportanceInputs(
        rewards_N=np.asarray(rewards),
        actions_N=np.asarray(actions, dtype=np.int64),
        policy_actions_N=policy_actions_N,
        mu_N=mu_N,
        table=table,
        gamma=gamma,
    )
    if "wis" in estimators:
        results["wis"] = pdwis(**common, n_bootstrap=n_bootstrap, seed=seed)
    if "pdis" in estimators:
        results["pdis"] = pdis(**common, n_bootstrap=n_bootstrap, seed=seed)
    if "dr" in estimators:
        q_hat_N, v_hat_N = q_and_v()
        results["dr"] = wdr(**common, q_hat_N=q_hat_N, v_hat_N=v_hat_N, n_bootstrap=n_bootstrap, seed=seed)
    for name in ("wis", "pdis", "dr"):
        if name in results:
            results[name].details["behaviour_source"] = str(behaviour_source)
    return {name: results[name] for name in estimators}


def feature_fqe(
    observations: np.ndarray,
    next_observations: np.ndarray,
    rewards: np.ndarray,
    terminals: np.ndarray,
    action_features: tuple[np.ndarray, np.ndarray, np.ndarray],
    table: EpisodeTable,
    config: FQEConfig,
    progress: ProgressFn | None = None,
    device: str = "auto",
) -> tuple[OPEEstimate, Callable[[], tuple[np.ndarray, np.ndarray]]]:
    """FQE on action features: Q(s, a) = Q'([s, f(s, a)], 0), a one-output :func:`fitted_q_evaluation` on
    observations widened by the features (logged action at s, pi(s') at s', pi(s_0) at the initial states).
    Returns the estimate and a function giving (q_hat_N = Q(s_t, a_t), v_hat_N = Q(s_t, pi(s_t))), which
    only doubly robust needs."""
    from merlion_core.ope.fqe import fitted_q_evaluation

    obs = np.asarray(observations, dtype=np.float32)
    logged, at_pi, next_at_pi = (np.asarray(f, dtype=np.float32) for f in action_features)
    n = obs.shape[0]
    for name, f in (("logged", logged), ("at_pi", at_pi), ("next_at_pi", next_at_pi)):
        if f.ndim != 2 or f.shape[0] != n or not np.isfinite(f).all():
            raise ValueError(f"action_features[{name}]: expected finite [{n}, D], got shape {f.shape}")
    if not logged.shape[1] == at_pi.shape[1] == next_at_pi.shape[1]:
        raise ValueError("action_features: the three arrays must have the same width D")
    next_obs = np.asarray(next_observations, dtype=np.float32)
    zeros = np.zeros(n, dtype=np.int64)
    widened = np.concatenate([obs, logged], axis=1)
    estimate_, fitted = fitted_q_evaluation(
        widened,
        zeros,
        rewards,
        np.concatenate([next_obs, next_at_pi], axis=1),
        terminals,
        zeros,
        zeros[: table.n_episodes],
        table,
        1,
        config,
        progress=progress,
        device=device,
        initial_observations_E=np.concatenate([obs, at_pi], axis=1)[table.starts],
    )
    estimate_.details["action_features"] = int(logged.shape[1])
    return estimate_, lambda: (fitted.q(widened, zeros), fitted.q(np.concatenate([obs, at_pi], axis=1), zeros))
