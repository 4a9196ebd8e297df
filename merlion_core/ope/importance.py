"""Per-decision importance sampling estimators of a deterministic target policy pi.

    rho_t    = 1[a_t == pi(s_t)] / mu(a_t | s_t)                    (per-decision ratio)
    w_{i,t}  = prod_{t' <= t} rho_{i,t'}                             (Precup, Sutton & Singh 2000)
    wbar_{i,t} = w_{i,t} / sum_j w_{j,t},   wbar_{i,-1} = 1 / n      (weighted, Thomas & Brunskill 2016)
    PDIS  = 1/n sum_i sum_t gamma^t w_{i,t} r_{i,t}
    PDWIS = sum_i sum_t gamma^t wbar_{i,t} r_{i,t}
    WDR   = sum_i sum_t gamma^t [wbar_{i,t} r_{i,t} - (wbar_{i,t} q_hat_{i,t} - wbar_{i,t-1} v_hat_{i,t})]
            (Thomas & Brunskill 2016, WDR; the per-decision DR of Jiang & Li 2016, self-normalised)

with q_hat = Q(s_t, a_t), v_hat = Q(s_t, pi(s_t)) from a fitted model (FQE).

Episodes of unequal length (Thomas & Brunskill 2016 work with a fixed horizon L, shorter episodes
padded with an absorbing state): all arrays are padded to [E, T_max]; after its last step an
episode sits in an absorbing state with reward 0, q_hat = v_hat = 0 and ratio 1, so it **keeps its
last weight w_{i,L_i-1}, and that weight stays in the normalisation** sum_j w_{j,t} of every later
step t. Dropping ended episodes from the denominator would estimate E_pi[r_t | episode alive at t]
instead of E_pi[r_t] (a survival bias). An episode cut by a timeout is treated the same way, so
these estimators estimate the discounted return over the logged episodes' lengths (FQE, which
bootstraps through timeouts, estimates the infinite-horizon value; the two agree when every
episode ends in a terminal state or when gamma^T_max is negligible).

0 / 0 = 0: at a step where every episode's weight is 0 (no logged episode followed pi that far)
the step contributes nothing; weights are products, so every later step does the same.

Weights are handled in log space, each time step scaled by its largest weight: the weighted
estimators and the effective sample size are invariant to that scale and products of many large
ratios do not overflow (plain PDIS needs the raw weights: float64, finite up to about 1e308).
Intervals: percentile bootstrap over episodes (result.py), the ratio of per-step sums evaluated
for every resample with a [B, E] @ [E, T] product.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from merlion_core.ope.episodes import EpisodeTable, to_padded
from merlion_core.ope.result import OPEEstimate, bootstrap_counts, percentile_interval, safe_ratio


def per_decision_ratio(actions_N: np.ndarray, policy_actions_N: np.ndarray, mu_N: np.ndarray) -> np.ndarray:
    """rho_t = 1[a_t == pi(s_t)] / mu(a_t | s_t): pi(a_t | s_t) / mu(a_t | s_t) for a deterministic pi (Precup 2000)."""
    return (actions_N == policy_actions_N) / mu_N


def log_cumulative_weights(log_rho_ET: np.ndarray) -> np.ndarray:
    """log w_{i,t} = sum_{t' <= t} log rho_{i,t'} (-inf once a rho is 0): per-decision weights, Precup et al. 2000."""
    return np.cumsum(log_rho_ET, axis=1)


def scaled_weights(log_w_ET: np.ndarray) -> np.ndarray:
    """w_{i,t} / max_j w_{j,t}: per-step rescaled weights (all 0 in a step where every weight is 0)."""
    top_T = log_w_ET.max(axis=0)
    top_T = np.where(np.isfinite(top_T), top_T, 0.0)
    return np.exp(log_w_ET - top_T[None, :])


def normalised_weights(w_ET: np.ndarray) -> np.ndarray:
    """wbar_{i,t} = w_{i,t} / sum_j w_{j,t}, 0 / 0 = 0 (Thomas & Brunskill 2016, weighted importance sampling)."""
    return safe_ratio(w_ET, w_ET.sum(axis=0, keepdims=True))


def effective_sample_size(w_E: np.ndarray) -> float:
    """(sum_i w_i)^2 / sum_i w_i^2 (Kong 1992): 0 when every weight is 0."""
    total, squares = float(w_E.sum()), float(np.square(w_E).sum())
    return total * total / squares if squares > 0 else 0.0


def weighted_step_sums(counts_BE: np.ndarray, w_ET: np.ndarray, x_ET: np.ndarray) -> np.ndarray:
    """[B, T]: sum_i c_{b,i} w_{i,t} x_{i,t} / sum_i c_{b,i} w_{i,t}: a self-normalised per-step mean under counts c."""
    return safe_ratio(counts_BE @ (w_ET * x_ET), counts_BE @ w_ET)


def discounted_sum(x_BT: np.ndarray, gamma: float) -> np.ndarray:
    """[B]: sum_t gamma^t x_{b,t}."""
    return x_BT @ np.power(gamma, np.arange(x_BT.shape[1], dtype=np.float64))


@dataclass(frozen=True, eq=False)
class PaddedEpisodes:
    """The logged episodes as [E, T_max] arrays (absorbing-state padding, see the module docstring)."""

    rewards_ET: np.ndarray
    """float64: r_{i,t}, 0 past the end."""
    log_w_ET: np.ndarray
    """float64: log w_{i,t}, the last value carried past the end."""
    mask_ET: np.ndarray
    """bool: True on real steps."""


def padded_episodes(
    rewards_N: np.ndarray, actions_N: np.ndarray, policy_actions_N: np.ndarray, mu_N: np.ndarray, table: EpisodeTable
) -> PaddedEpisodes:
    """Check the flat inputs and pad them: rewards, and log cumulative weights with rho = 1 past each end."""
    n = table.n_transitions
    mu_N = np.asarray(mu_N, dtype=np.float64)
    arrays = {"rewards_N": rewards_N, "actions_N": actions_N, "policy_actions_N": policy_actions_N, "mu_N": mu_N}
    for name, arr in arrays.items():
        if np.shape(arr) != (n,):
            raise ValueError(f"{name}: expected shape ({n},) to match the episode table, got {np.shape(arr)}")
    if not np.all((mu_N > 0) & (mu_N <= 1)):
        raise ValueError(f"mu_N: behaviour probabilities must be in (0, 1]; min {mu_N.min()}, max {mu_N.max()}")
    rho_N = per_decision_ratio(np.asarray(actions_N), np.asarray(policy_actions_N), mu_N)
    with np.errstate(divide="ignore"):
        log_rho_ET, mask_ET = to_padded(np.log(rho_N), table, fill=0.0)
    rewards_ET, _ = to_padded(np.asarray(rewards_N, dtype=np.float64), table, fill=0.0)
    return PaddedEpisodes(rewards_ET, log_cumulative_weights(log_rho_ET), mask_ET)


def _estimate(
    name: str,
    per_episode_E: np.ndarray,
    resample_fn: Callable[[np.ndarray], np.ndarray],
    n_episodes: int,
    n_bootstrap: int,
    seed: int,
    details: dict,
) -> OPEEstimate:
    """The estimate (mean of the per-episode terms) with the percentile interval of ``resample_fn`` on [B, E] counts."""
    values = resample_fn(bootstrap_counts(n_episodes, n_bootstrap, seed))
    details = {
        "estimator": name,
        "n_bootstrap": n_bootstrap,
        "interval": "percentile bootstrap over episodes",
        "n_episodes": n_episodes,
        **details,
    }
    return OPEEstimate(float(per_episode_E.mean()), percentile_interval(values), per_episode_E, details)


def _weight_details(w_ET: np.ndarray) -> dict:
    final_E = w_ET[:, -1]
    return {
        "ess_final": effective_sample_size(final_E),
        "n_following_pi": int(np.count_nonzero(final_E)),
        "horizon": int(w_ET.shape[1]),
        "convention": "absorbing padding: ended episodes keep their last weight",
    }


def pdis(
    rewards_N: np.ndarray,
    actions_N: np.ndarray,
    policy_actions_N: np.ndarray,
    mu_N: np.ndarray,
    table: EpisodeTable,
    gamma: float,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> OPEEstimate:
    """Ordinary per-decision importance sampling (Precup, Sutton & Singh 2000): unbiased, high variance."""
    episodes = padded_episodes(rewards_N, actions_N, policy_actions_N, mu_N, table)
    with np.errstate(over="ignore"):
        w_ET = np.exp(episodes.log_w_ET)
    per_episode_E = discounted_sum(w_ET * episodes.rewards_ET, gamma)
    n = table.n_episodes
    return _estimate(
        "pdis", per_episode_E, lambda c: c @ per_episode_E / n, n, n_bootstrap, seed, _weight_details(w_ET)
    )


def pdwis(
    rewards_N: np.ndarray,
    actions_N: np.ndarray,
    policy_actions_N: np.ndarray,
    mu_N: np.ndarray,
    table: EpisodeTable,
    gamma: float,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> OPEEstimate:
    """Per-decision weighted importance sampling (Precup et al. 2000; weighted as Thomas & Brunskill 2016)."""
    episodes = padded_episodes(rewards_N, actions_N, policy_actions_N, mu_N, table)
    w_ET = scaled_weights(episodes.log_w_ET)
    n = table.n_episodes
    per_episode_E = n * discounted_sum(normalised_weights(w_ET) * episodes.rewards_ET, gamma)

    def resample(c: np.ndarray) -> np.ndarray:
        return discounted_sum(weighted_step_sums(c, w_ET, episodes.rewards_ET), gamma)

    return _estimate("wis", per_episode_E, resample, n, n_bootstrap, seed, _weight_details(w_ET))


def wdr(
    rewards_N: np.ndarray,
    actions_N: np.ndarray,
    policy_actions_N: np.ndarray,
    mu_N: np.ndarray,
    q_hat_N: np.ndarray,
    v_hat_N: np.ndarray,
    table: EpisodeTable,
    gamma: float,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> OPEEstimate:
    """Weighted doubly robust (Thomas & Brunskill 2016), q_hat_N = Q(s_t, a_t), v_hat_N = Q(s_t, pi(s_t)).

    The model is held fixed across bootstrap resamples (only the episodes are resampled)."""
    episodes = padded_episodes(rewards_N, actions_N, policy_actions_N, mu_N, table)
    for name, arr in (("q_hat_N", q_hat_N), ("v_hat_N", v_hat_N)):
        if np.shape(arr) != (table.n_transitions,):
            raise ValueError(f"{name}: expected shape ({table.n_transitions},), got {np.shape(arr)}")
    q_ET, _ = to_padded(np.asarray(q_hat_N, dtype=np.float64), table, fill=0.0)
    v_ET, _ = to_padded(np.asarray(v_hat_N, dtype=np.float64), table, fill=0.0)
    n = table.n_episodes
    w_ET = scaled_weights(episodes.log_w_ET)
    w_prev_ET = np.concatenate([np.ones((n, 1)), w_ET[:, :-1]], axis=1)  # w_{i,-1} = 1, so wbar_{i,-1} = 1/n
    terms_ET = normalised_weights(w_ET) * (episodes.rewards_ET - q_ET) + normalised_weights(w_prev_ET) * v_ET
    per_episode_E = n * discounted_sum(terms_ET, gamma)

    def resample(c: np.ndarray) -> np.ndarray:
        correction = weighted_step_sums(c, w_ET, episodes.rewards_ET - q_ET)
        return discounted_sum(correction + weighted_step_sums(c, w_prev_ET, v_ET), gamma)

    details = {**_weight_details(w_ET), "direct_method": float(v_ET[:, 0].mean())}
    return _estimate("dr", per_episode_E, resample, n, n_bootstrap, seed, details)
