"""Off-policy evaluation of a deterministic target policy on held-out logged episodes.

Estimators: ``fqe`` (fitted Q evaluation, fqe.py), ``wis`` (per-decision weighted importance
sampling, importance.py), ``dr`` (weighted doubly robust with FQE's Q), and ``pdis`` (ordinary
per-decision importance sampling) on request. Everything here is numeric: arrays in, dataclasses
out. The caller computes the target policy's actions once (at every observation and next
observation of the held-out transitions) and the behaviour probabilities mu(a_t | s_t) of the
logged actions, from logged propensities or a fitted :class:`BehaviourModel`.
"""

from __future__ import annotations

import numpy as np

from typing import TYPE_CHECKING, Any

from merlion_core.ope.episodes import (EpisodeTable, HoldoutSplit, check_split_record, holdout_split,
                                       split_from_dict, split_to_dict, to_padded)
from merlion_core.ope.importance import effective_sample_size, pdis, pdwis, wdr
from merlion_core.ope.result import OPEEstimate, ProgressFn, bootstrap_counts, percentile_interval

if TYPE_CHECKING:
    from merlion_core.ope.behaviour import BehaviourModel, BehaviourModelConfig, fit_behaviour_model
    from merlion_core.ope.fqe import FittedQ, FQEConfig, fitted_q_evaluation

_TORCH_PARTS = {"BehaviourModel": "behaviour", "BehaviourModelConfig": "behaviour", "fit_behaviour_model": "behaviour",
                "FittedQ": "fqe", "FQEConfig": "fqe", "fitted_q_evaluation": "fqe"}
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

__all__ = ["ALL_ESTIMATORS", "ESTIMATORS", "BehaviourModel", "BehaviourModelConfig", "EpisodeTable", "FQEConfig",
           "FittedQ", "HoldoutSplit", "OPEEstimate", "ProgressFn", "bootstrap_counts", "check_split_record",
           "effective_sample_size", "estimate", "fit_behaviour_model", "fitted_q_evaluation", "holdout_split",
           "pdis", "pdwis", "percentile_interval", "split_from_dict", "split_to_dict", "to_padded", "wdr"]


def estimate(observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_observations: np.ndarray,
             terminals: np.ndarray, timeouts: np.ndarray, n_actions: int, policy_actions_N: np.ndarray,
             next_policy_actions_N: np.ndarray, mu_N: np.ndarray, behaviour_source: str, *,
             estimators: tuple[str, ...] = ESTIMATORS, gamma: float = 0.99, fqe_config: FQEConfig | None = None,
             n_bootstrap: int = 1000, seed: int = 0, progress: ProgressFn | None = None,
             device: str = "auto") -> dict[str, OPEEstimate]:
    """Run ``estimators`` on held-out complete episodes; name -> :class:`OPEEstimate`.

    ``policy_actions_N`` = pi(s_t) and ``next_policy_actions_N`` = pi(s'_t) for every transition (the
    initial states' actions are ``policy_actions_N`` at each episode's first transition); ``mu_N`` =
    mu(a_t | s_t) of the logged actions, whose origin ``behaviour_source`` is recorded in the details.
    FQE is fitted once (``fqe_config``, default ``FQEConfig(gamma=gamma)``) and its head 0 gives dr's
    q_hat and v_hat. ``n_bootstrap`` and ``seed`` set the importance estimators' episode bootstrap.
    """
    from merlion_core.ope.fqe import FQEConfig, fitted_q_evaluation

    unknown = [name for name in estimators if name not in ALL_ESTIMATORS]
    if unknown or not estimators:
        raise ValueError(f"estimators: unknown {unknown} (known: {', '.join(ALL_ESTIMATORS)})" if unknown
                         else "estimators: none requested")
    config = FQEConfig(gamma=gamma) if fqe_config is None else fqe_config
    if config.gamma != gamma:
        raise ValueError(f"gamma: {gamma} differs from fqe_config.gamma {config.gamma}")
    terminals, timeouts = np.asarray(terminals, bool), np.asarray(timeouts, bool)
    table = EpisodeTable.from_flags(terminals, timeouts)
    if int(table.ends[-1]) != terminals.shape[0] - 1:
        raise ValueError(f"terminals/timeouts: transitions after the last episode end ({int(table.ends[-1])}); "
                         "pass complete episodes only")
    policy_actions_N = np.asarray(policy_actions_N, dtype=np.int64)
    results: dict[str, OPEEstimate] = {}
    fitted = None
    if "fqe" in estimators or "dr" in estimators:
        fqe_estimate, fitted = fitted_q_evaluation(
            observations, actions, rewards, next_observations, terminals, next_policy_actions_N,
            policy_actions_N[table.starts], table, n_actions, config, progress=progress, device=device)
        if "fqe" in estimators:
            results["fqe"] = fqe_estimate
    common = dict(rewards_N=np.asarray(rewards), actions_N=np.asarray(actions, dtype=np.int64),
                  policy_actions_N=policy_actions_N, mu_N=mu_N, table=table, gamma=gamma)
    if "wis" in estimators:
        results["wis"] = pdwis(**common, n_bootstrap=n_bootstrap, seed=seed)
    if "pdis" in estimators:
        results["pdis"] = pdis(**common, n_bootstrap=n_bootstrap, seed=seed)
    if fitted is not None and "dr" in estimators:
        results["dr"] = wdr(**common, q_hat_N=fitted.q(observations, actions),
                            v_hat_N=fitted.v(observations, policy_actions_N), n_bootstrap=n_bootstrap, seed=seed)
    for name in ("wis", "pdis", "dr"):
        if name in results:
            results[name].details["behaviour_source"] = str(behaviour_source)
    return {name: results[name] for name in estimators}
