"""Value iteration on a grid over a maze's true model, for the expert and medium behaviours.

The state (x, y, bonus_taken) is discretised on a (grid x grid) lattice per flag value;
next states are snapped to the nearest lattice point while iterating. Acting re-scores a
few of the best candidates at the agent's actual (continuous) position with the true model
and a bilinear interpolation of the value table, so discretisation never walks the agent
into a wall it could not see on the lattice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from merlion_core.envs.model import StepResult

StepFn = Callable[[np.ndarray, np.ndarray], StepResult]


@dataclass(frozen=True)
class ValueTable:
    """V(x, y, flag) on a lattice, with bilinear lookup at continuous states."""

    values: np.ndarray  # float64 [2, grid, grid] indexed [flag, ix, iy]
    top_candidates: np.ndarray  # int64 [2 * grid * grid, k]: best candidates per lattice state

    @property
    def grid(self) -> int:
        return self.values.shape[1]

    def lattice_index(self, states: np.ndarray) -> np.ndarray:
        """int64 [B]: flat index of the nearest lattice state."""
        g = self.grid
        ix = np.clip(np.rint(states[:, 0] * (g - 1)), 0, g - 1).astype(np.int64)
        iy = np.clip(np.rint(states[:, 1] * (g - 1)), 0, g - 1).astype(np.int64)
        flag = (states[:, 2] > 0.5).astype(np.int64)
        return (flag * g + ix) * g + iy

    def interpolate(self, states: np.ndarray) -> np.ndarray:
        """float64 [B]: bilinear interpolation of V within the state's flag layer."""
        g = self.grid
        fx = np.clip(states[:, 0].astype(np.float64), 0.0, 1.0) * (g - 1)
        fy = np.clip(states[:, 1].astype(np.float64), 0.0, 1.0) * (g - 1)
        x0 = np.minimum(np.floor(fx).astype(np.int64), g - 2)
        y0 = np.minimum(np.floor(fy).astype(np.int64), g - 2)
        wx, wy = fx - x0, fy - y0
        flag = (states[:, 2] > 0.5).astype(np.int64)
        v00 = self.values[flag, x0, y0]
        v10 = self.values[flag, x0 + 1, y0]
        v01 = self.values[flag, x0, y0 + 1]
        v11 = self.values[flag, x0 + 1, y0 + 1]
        return (1 - wx) * (1 - wy) * v00 + wx * (1 - wy) * v10 + (1 - wx) * wy * v01 + wx * wy * v11


def lattice_states(grid: int) -> np.ndarray:
    """float32 [2 * grid * grid, 3]: every lattice state, flat index (flag * g + ix) * g + iy."""
    axis = np.linspace(0.0, 1.0, grid)
    flag, ix, iy = np.meshgrid(np.arange(2), np.arange(grid), np.arange(grid), indexing="ij")
    return np.stack([axis[ix].ravel(), axis[iy].ravel(), flag.ravel().astype(np.float64)], 1).astype(np.float32)


def value_iteration(
    step_fn: StepFn,
    candidates: np.ndarray,
    *,
    grid: int = 101,
    gamma: float = 0.99,
    noise: float = 0.0,
    noise_weights: np.ndarray | None = None,
    top_k: int = 8,
    tol: float = 1e-4,
    max_iters: int = 500,
    chunk_rows: int = 1_000_000,
) -> ValueTable:
    """Discounted value iteration over ``candidates`` (action ids passed to ``step_fn``).

    With ``noise`` > 0 the executed action is replaced, with that probability, by a random
    candidate drawn with ``noise_weights`` (default uniform), as the env's action noise does:
    V(s) = max_c [(1 - noise) Q(s, c) + noise * sum_c' w_c' Q(s, c')].
    """
    states = lattice_states(grid)
    n_states, n_cand = len(states), len(candidates)
    table_probe = ValueTable(np.zeros((2, grid, grid)), np.zeros((0, 1), dtype=np.int64))
    next_index = np.empty((n_states, n_cand), dtype=np.int64)
    rewards = np.empty((n_states, n_cand), dtype=np.float64)
    alive = np.empty((n_states, n_cand), dtype=np.float64)
    per_chunk = max(1, chunk_rows // n_states)
    for start in range(0, n_cand, per_chunk):  # chunks of candidates, each vectorised over states
        block = candidates[start : start + per_chunk]
        rep_states = np.repeat(states[None], len(block), 0).reshape(-1, 3)
        result = step_fn(rep_states, np.repeat(block, n_states))
        sl = slice(start, start + len(block))
        next_index[:, sl] = table_probe.lattice_index(result.next_states).reshape(len(block), n_states).T
        rewards[:, sl] = result.rewards.reshape(len(block), n_states).T
        alive[:, sl] = (~result.terminated).reshape(len(block), n_states).T
    weights = np.full(n_cand, 1.0 / n_cand) if noise_weights is None else noise_weights / noise_weights.sum()
    values = np.zeros(n_states)
    for _ in range(max_iters):
        q = rewards + gamma * alive * values[next_index]
        q = (1 - noise) * q + noise * (q @ weights)[:, None]
        new_values = q.max(axis=1)
        delta = np.abs(new_values - values).max()
        values = new_values
        if delta < tol:
            break
    k = min(top_k, n_cand)
    top = np.argpartition(-q, k - 1, axis=1)[:, :k] if k < n_cand else np.tile(np.arange(n_cand), (n_states, 1))
    return ValueTable(values.reshape(2, grid, grid), top.astype(np.int64))


def greedy_candidates(
    step_fn: StepFn, table: ValueTable, candidates: np.ndarray, states: np.ndarray, gamma: float
) -> np.ndarray:
    """int64 [B]: index into ``candidates`` of the best of each state's top-k, re-scored at
    the actual state with the true model and the interpolated value."""
    top = table.top_candidates[table.lattice_index(states)]  # [B, k]
    b, k = top.shape
    result = step_fn(np.repeat(states, k, axis=0), candidates[top.ravel()])
    q = result.rewards.astype(np.float64) + gamma * (~result.terminated) * table.interpolate(result.next_states)
    best = q.reshape(b, k).argmax(axis=1)
    return top[np.arange(b), best]


def without_regions(config):
    """The same config with the reward regions removed (what a region-blind planner sees)."""
    return dataclasses.replace(config, bonus_regions=(), penalty_regions=())
