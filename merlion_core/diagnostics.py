"""How well a learned action representation matches the TRUE MERLION pseudometric.

Numeric only (arrays in, arrays and frozen dataclasses out). On an environment with a true
model, the pseudometric of the paper (Eq. 3) is computed exactly for the reward term and as
a documented upper bound for the W2 term (see :func:`w2_shared_mixture_bound`), then compared
with the L1 distances of a representation by per-state Spearman rank correlation and by how
tightly equivalent actions (same displacement) collapse. Also: the share of actions the
behaviour model calls out of distribution (Eq. 7's I_hat) and a check of Theorem 4.3 (Eq. 8).

Shapes: B states, K actions (a subset of the A actions; all of them when K = A), D embedding
dims, S state dims. Distances d[B, K, K] are float32; pairs are the upper triangle i < j.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

CHUNK_ELEMENTS = 1 << 22
"""Largest temporary block (elements) built at once; loops run over state chunks only."""


# ---------------------------------------------------------------- the pseudometric (Eq. 3, 4, 7)
def reward_distance(r_i: np.ndarray, r_j: np.ndarray, eps: float) -> np.ndarray:
    """Eq. 3, first term, with action noise: |R_s^{a_i} - R_s^{a_j}| = (1 - eps) |r_i - r_j|.

    With probability eps the env executes a uniform random action instead, so the expected
    reward of a is (1 - eps) r_a + eps * mean_k r_k; the shared part cancels exactly.
    """
    return (1.0 - eps) * np.abs(r_i - r_j)


def w2_shared_mixture_bound(next_i: np.ndarray, next_j: np.ndarray, eps: float) -> np.ndarray:
    """Eq. 3, W2 term: an UPPER BOUND sqrt(1 - eps) * ||s'_i - s'_j||_2 (last axis = state dims).

    With noise, P_s^a = (1 - eps) delta(s'_a) + eps * (1/A) sum_k delta(s'_k): both mixtures
    share the eps component. The coupling that leaves the shared component in place and moves
    the (1 - eps) mass from s'_i to s'_j costs (1 - eps) ||s'_i - s'_j||^2, so W2 is at most
    its square root. It equals W2 unless routing mass through the shared atoms is cheaper
    (it can be: exact W2 is smaller when some s'_k lie between s'_i and s'_j), but the exact
    value needs an optimal-transport solve per pair over ~A atoms, infeasible for A^2 pairs.
    The ground metric is the Euclidean norm over the whole state vector (in the maze:
    position and the bonus flag). A terminated transition (the goal) has no next-state
    distribution beyond it: its next state is taken as given (the model returns the goal
    position), i.e. a point mass like any other.
    """
    return np.sqrt(1.0 - eps) * np.sqrt(np.sum((next_i - next_j) ** 2, axis=-1))


def pseudometric(reward_dist: np.ndarray, w2: np.ndarray, gamma: float) -> np.ndarray:
    """Eq. 3: d(a_i, a_j | s) = |R_s^{a_i} - R_s^{a_j}| + gamma * W2(P_s^{a_i}, P_s^{a_j})."""
    return reward_dist + gamma * w2


def ood_indicator(relative_probs: np.ndarray, tau: float) -> np.ndarray:
    """Eq. 7's I_hat(a|s): True where G(a|s) / max_a' G(a'|s) <= tau (out of distribution).

    The penalised pseudometric of Eq. 4 adds p * I to Eq. 3; the true model has no data
    distribution, so :func:`true_pseudometric` is Eq. 3 only.
    """
    rel = np.asarray(relative_probs, dtype=np.float64)
    if rel.size and (rel.min() < 0.0 or rel.max() > 1.0 + 1e-6):
        raise ValueError("relative_probs must be G(a|s) / max G, in [0, 1]; scale them first")
    return rel <= tau


def _check_states_actions(model: Any, states: np.ndarray, actions: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if callable(getattr(model, "observe", None)):
        raise ValueError(
            f"diagnostics: {type(model).__name__} keeps hidden state, so observations are not "
            "states; the true pseudometric needs a model stepped from its observations"
        )
    states = np.asarray(states, dtype=np.float32)
    if states.ndim != 2 or states.shape[1] != model.obs_dim:
        raise ValueError(f"states must be [B, {model.obs_dim}], got {states.shape}")
    actions = np.arange(model.n_actions) if actions is None else np.asarray(actions, dtype=np.int64)
    if actions.ndim != 1 or (actions.size and (actions.min() < 0 or actions.max() >= model.n_actions)):
        raise ValueError(f"actions must be int[K] in [0, {model.n_actions})")
    return states, actions.astype(np.int64)


def true_pseudometric(
    model: Any, states: np.ndarray, actions: np.ndarray | None = None, gamma: float = 0.99
) -> np.ndarray:
    """d[B, K, K] float32: Eq. 3 with the env's action noise included, from the true model.

    Reward term exact (:func:`reward_distance`); W2 term the shared-mixture upper bound
    (:func:`w2_shared_mixture_bound`). ``actions`` None means all of the model's actions.
    The noise component spans all A actions but cancels in both terms, so only the K given
    actions are stepped: one vectorised ``true_step`` over all B*K pairs. The K x K blocks
    are built a chunk of states at a time (64 x 4096^2 float32 alone is 4 GB: use a subset).
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    states, actions = _check_states_actions(model, states, actions)
    b, k = len(states), len(actions)
    eps = float(model.config.action_noise)
    step = model.true_step(np.repeat(states, k, axis=0), np.tile(actions, b))
    nxt = step.next_states.reshape(b, k, -1).astype(np.float64)
    rew = step.rewards.reshape(b, k).astype(np.float64)
    out = np.empty((b, k, k), dtype=np.float32)
    chunk = max(1, CHUNK_ELEMENTS // max(1, k * k * nxt.shape[-1]))
    for lo in range(0, b, chunk):
        n, r = nxt[lo : lo + chunk], rew[lo : lo + chunk]
        out[lo : lo + chunk] = pseudometric(
            reward_distance(r[:, :, None], r[:, None, :], eps),
            w2_shared_mixture_bound(n[:, :, None, :], n[:, None, :, :], eps),
            gamma,
        )
    return out


# ---------------------------------------------------------------- comparing representations
def pairwise_l1(embeddings: np.ndarray) -> np.ndarray:
    """[B, K, K]: L1 distances ||e_i - e_j||_1 between the K embeddings at each state.

    float32 input stays float32 (anything else becomes float64). ``torch.cdist(p=1)`` builds
    no [B, K, K, D] temporary, so only the output itself takes memory (and it is ~7x faster
    than numpy broadcasting on CPU).
    """
    e = np.asarray(embeddings)
    if e.ndim != 3:
        raise ValueError(f"embeddings must be [B, K, D], got {e.shape}")
    e = np.require(e, dtype=np.float32 if e.dtype == np.float32 else np.float64, requirements=["C", "W"])
    x = torch.from_numpy(e)
    return torch.cdist(x, x, p=1.0).numpy()


def _upper_pairs(d: np.ndarray) -> np.ndarray:
    """[B, P]: the entries i < j of each K x K matrix, P = K (K - 1) / 2."""
    iu, ju = np.triu_indices(d.shape[-1], k=1)
    return d[:, iu, ju]


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """float64[B, P]: ranks 1..P along axis 1, ties given their average rank.

    Same values as ``scipy.stats.rankdata(x, axis=1)``, about twice as fast: one argsort,
    then each tie run's first and last sorted position by running max / min.
    """
    b, p = x.shape
    order = np.argsort(x, axis=1)
    xs = np.take_along_axis(x, order, axis=1)
    idx = np.broadcast_to(np.arange(p), (b, p))
    starts = np.ones((b, p), dtype=bool)
    starts[:, 1:] = xs[:, 1:] != xs[:, :-1]
    ends = np.ones((b, p), dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, idx, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, idx, p)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty((b, p))
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    return ranks


def spearman_per_state(learned: np.ndarray, true: np.ndarray) -> np.ndarray:
    """float64[B]: Spearman correlation of the i < j pairs of learned[b] and true[b].

    Average ranks for ties; NaN for a state where either side is constant (or K < 3).
    """
    learned, true = np.asarray(learned), np.asarray(true)
    if learned.shape != true.shape or learned.ndim != 3 or learned.shape[1] != learned.shape[2]:
        raise ValueError(f"learned and true must both be [B, K, K], got {learned.shape} and {true.shape}")
    b, k = learned.shape[:2]
    n_pairs = k * (k - 1) // 2
    rho = np.full(b, np.nan)
    chunk = max(1, CHUNK_ELEMENTS // max(1, n_pairs))
    for lo in range(0, b if n_pairs >= 2 else 0, chunk):  # state chunks bound the rank arrays
        x, y = _upper_pairs(learned[lo : lo + chunk]), _upper_pairs(true[lo : lo + chunk])
        rx, ry = _average_ranks(x) - (n_pairs + 1) / 2.0, _average_ranks(y) - (n_pairs + 1) / 2.0
        den = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
        constant = (np.ptp(x, axis=1) == 0) | (np.ptp(y, axis=1) == 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            rho[lo : lo + chunk] = np.where(constant, np.nan, np.clip((rx * ry).sum(axis=1) / den, -1.0, 1.0))
    return rho


def class_separation(learned: np.ndarray, classes: np.ndarray) -> float:
    """mean d over same-class pairs / mean d over different-class pairs (i < j, all states).

    Lower is better: 0 when equivalent actions collapse, ~1 when classes do not matter.
    NaN when either kind of pair is missing or the different-class mean is 0.
    """
    learned = np.asarray(learned)
    classes = np.asarray(classes)
    if learned.ndim != 3 or classes.shape != (learned.shape[-1],):
        raise ValueError(f"learned must be [B, K, K], classes int[K]; got {learned.shape}, {classes.shape}")
    iu, ju = np.triu_indices(len(classes), k=1)
    same = classes[iu] == classes[ju]
    if not same.any() or same.all() or learned.shape[0] == 0:
        return float("nan")
    pairs = _upper_pairs(learned)
    diff_mean = pairs[:, ~same].mean(dtype=np.float64)
    return float(pairs[:, same].mean(dtype=np.float64) / diff_mean) if diff_mean > 0 else float("nan")


def ood_fraction(relative_probs: np.ndarray, tau: float) -> float:
    """Share of (state, action) entries with G(a|s) / max G <= tau (mean of Eq. 7's I_hat)."""
    flags = ood_indicator(relative_probs, tau)
    return float(flags.mean()) if flags.size else float("nan")


@dataclass(frozen=True)
class LipschitzResult:
    """Theorem 4.3 on given values: how often |Q_i - Q_j| > d_ij / (1 - gamma)."""

    violation_fraction: float
    max_ratio: float
    """max |Q_i - Q_j| (1 - gamma) / d_ij over pairs with d > 0 (<= 1 when the theorem holds)."""
    n_pairs: int


def lipschitz_check(q: np.ndarray, d: np.ndarray, gamma: float) -> LipschitzResult:
    """Eq. 8: |Q(s, a_i) - Q(s, a_j)| <= d(a_i, a_j | s) / (1 - gamma), over pairs i < j.

    q[B, K], d[B, K, K]; a pair violates when the gap exceeds the bound by more than 1e-6.
    """
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    q, d = np.asarray(q, dtype=np.float64), np.asarray(d)
    if q.ndim != 2 or d.shape != (*q.shape, q.shape[1]):
        raise ValueError(f"q must be [B, K] and d [B, K, K], got {q.shape} and {d.shape}")
    iu, ju = np.triu_indices(q.shape[1], k=1)
    gap = np.abs(q[:, iu] - q[:, ju])
    dist = _upper_pairs(d).astype(np.float64)
    n_pairs = int(gap.size)
    violations = gap > dist / (1.0 - gamma) + 1e-6
    positive = dist > 0
    ratio = gap[positive] * (1.0 - gamma) / dist[positive]
    return LipschitzResult(
        violation_fraction=float(violations.mean()) if n_pairs else float("nan"),
        max_ratio=float(ratio.max()) if ratio.size else float("nan"),
        n_pairs=n_pairs,
    )


# ---------------------------------------------------------------- sampling and the whole report
def sample_states(dataset_observations: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n rows with distinct values, drawn without replacement in a random order (all if fewer).

    Rows are taken in the order of a random permutation, keeping each value's first copy, so
    frequent states are likelier to be picked but never twice (datasets repeat the start state).
    """
    obs = np.asarray(dataset_observations)
    if obs.ndim != 2:
        raise ValueError(f"dataset_observations must be [N, S], got {obs.shape}")
    shuffled = obs[rng.permutation(len(obs))]
    if len(obs) == 0:
        return shuffled
    _, first = np.unique(shuffled, axis=0, return_index=True)
    return shuffled[np.sort(first)[: max(0, int(n))]]


def sample_actions(n_actions: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """int64[k]: k distinct action ids, sorted; all of them (arange) when k >= n_actions."""
    if k >= n_actions:
        return np.arange(n_actions, dtype=np.int64)
    return np.sort(rng.choice(n_actions, size=max(0, int(k)), replace=False)).astype(np.int64)


def _json_float(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


@dataclass(frozen=True, eq=False)
class DiagnosticsResult:
    """How a representation's L1 geometry matches the true pseudometric on some states."""

    spearman_median: float
    """Median over states of the per-state Spearman correlation (NaN states ignored)."""
    spearman_per_state: np.ndarray
    class_separation: float
    n_states: int
    n_actions_used: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: plain floats and ints; NaN or infinite values become None."""
        return {
            "spearman_median": _json_float(self.spearman_median),
            "spearman_per_state": [_json_float(v) for v in self.spearman_per_state],
            "class_separation": _json_float(self.class_separation),
            "n_states": int(self.n_states),
            "n_actions_used": int(self.n_actions_used),
        }


EmbedFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""embed_fn(states f32[B, S], actions int64[K]) -> e[B, K, D]."""


def diagnose(
    model: Any,
    embed_fn: EmbedFn,
    states: np.ndarray,
    *,
    n_action_samples: int = 512,
    gamma: float = 0.99,
    rng: np.random.Generator,
) -> DiagnosticsResult:
    """Compare embed_fn's L1 distances with the true pseudometric on one sampled action subset."""
    states, _ = _check_states_actions(model, states, np.zeros(0, dtype=np.int64))
    actions = sample_actions(model.n_actions, n_action_samples, rng)
    true = true_pseudometric(model, states, actions, gamma)
    e = np.asarray(embed_fn(states, actions))
    if e.ndim != 3 or e.shape[:2] != (len(states), len(actions)):
        raise ValueError(f"embed_fn must return [B={len(states)}, K={len(actions)}, D], got {e.shape}")
    learned = pairwise_l1(e)
    rho = spearman_per_state(learned, true)
    rho.setflags(write=False)
    finite = rho[np.isfinite(rho)]
    return DiagnosticsResult(
        spearman_median=float(np.median(finite)) if finite.size else float("nan"),
        spearman_per_state=rho,
        class_separation=class_separation(learned, np.asarray(model.action_classes)[actions]),
        n_states=len(states),
        n_actions_used=len(actions),
    )
