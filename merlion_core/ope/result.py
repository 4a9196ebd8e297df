"""The result of every off-policy estimator, and the episode bootstrap they share.

Confidence intervals are percentile bootstrap intervals over episodes (Efron & Tibshirani 1993,
ch. 13): B resamples of the E held-out episodes with replacement, drawn at once as a [B, E]
matrix of multinomial counts, so an estimator that is a ratio of per-episode sums is evaluated
for every resample with one matrix product.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

ProgressFn = Callable[[int, int], None]
"""progress(done, total): called by the estimators that train, every few gradient steps."""


@dataclass(frozen=True, eq=False)
class OPEEstimate:
    """One estimator's estimate of the target policy's discounted value."""

    value: float
    """The point estimate."""
    ci95: tuple[float, float]
    """2.5 and 97.5 percentiles of the bootstrap estimates ((nan, nan) without resamples)."""
    per_episode: np.ndarray | None = None
    """float64[E]: per-episode terms whose mean is ``value`` (None when there are none)."""
    details: dict = field(default_factory=dict)
    """JSON-friendly extras: settings, diagnostics (effective sample size, losses), behaviour source."""


def bootstrap_counts(n_items: int, n_resamples: int, seed: int) -> np.ndarray:
    """float64[B, E]: row b counts how often each of the E items is drawn in resample b (each row sums to E)."""
    if n_items < 1:
        raise ValueError(f"n_items: must be >= 1, got {n_items}")
    if n_resamples < 0:
        raise ValueError(f"n_resamples: must be >= 0, got {n_resamples}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=n_resamples).astype(np.float64)


def percentile_interval(estimates_B: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The (1 - level) / 2 and (1 + level) / 2 percentiles of the bootstrap estimates (Efron's percentile interval)."""
    estimates_B = np.asarray(estimates_B, dtype=np.float64)
    if estimates_B.size == 0:
        return (float("nan"), float("nan"))
    lo, hi = np.percentile(estimates_B, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    return (float(lo), float(hi))


def safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator elementwise, with x / 0 defined as 0 (no episode carries weight)."""
    out = np.zeros(np.broadcast(numerator, denominator).shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out
