"""Random action representations, the paper's Rand-1 and Rand-2 baselines (section 5.1).

Both are state-independent tables drawn once from the seed; nothing is trained.

- Rand-1: every action gets a vector drawn uniformly from [-1, 1]^dim.
- Rand-2: random vectors whose pairwise L1 distances all exceed a constant ``min_distance``.
  Scheme (a jittered lattice, fully vectorised, feasibility known in advance): split [-1, 1]^dim
  into k = ceil(|A|^(1/dim)) cells per axis (cell width w = 2 / k), give every action its own
  cell chosen uniformly at random without replacement, and place it uniformly inside a box of
  half-width j = (w - min_distance) / 2 round the cell centre. Two points in different cells then
  differ by at least w - 2j = min_distance in some coordinate, so their L1 (>= L-inf) distance is
  >= min_distance. Feasible iff min_distance <= w (less 1e-6 kept against float32 rounding);
  otherwise :func:`build_rand2` raises ValueError. The default margin 0.01 is feasible up to
  about 200^dim actions (40,000 in 2-D); for the 4096-action maze in 2-D, w = 2 / 64 = 0.03125,
  so each point keeps about 2/3 of its cell's width as random jitter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from merlion_core.models.mlp import resolve_device
from merlion_core.representation.base import ProgressFn, Representation

_SAFETY = 1e-6  # float32 rounding moves a coordinate by <= 6e-8: keep the margin with room to spare


@dataclass(frozen=True)
class Rand1Config:
    """Rand-1: uniform random vectors in [-1, 1]^dim."""

    dim: int = 2
    """|E|: dimension of the action representation."""
    steps: int = 0
    """Training steps: unused (the table is drawn, not trained); kept for the common interface."""
    batch_size: int = 256
    """Minibatch size: unused; kept for the common interface."""
    lr: float = 0.0
    """Learning rate: unused; kept for the common interface."""
    seed: int = 0
    """Seed of the random table."""


@dataclass(frozen=True)
class Rand2Config:
    """Rand-2: random vectors with every pairwise L1 distance >= min_distance."""

    dim: int = 2
    """|E|: dimension of the action representation."""
    min_distance: float = 0.01
    """Margin: the minimum L1 distance between any two action vectors (must be <= 2 / ceil(|A|^(1/dim)))."""
    steps: int = 0
    """Training steps: unused (the table is drawn, not trained); kept for the common interface."""
    batch_size: int = 256
    """Minibatch size: unused; kept for the common interface."""
    lr: float = 0.0
    """Learning rate: unused; kept for the common interface."""
    seed: int = 0
    """Seed of the random table."""


class TableRepresentation(Representation):
    """A state-independent representation: a fixed table e[A, dim] held as a buffer."""

    table: torch.Tensor

    def __init__(self, method: str, table_AD: torch.Tensor, obs_dim: int) -> None:
        super().__init__(table_AD.shape[0], obs_dim, table_AD.shape[1])
        self.method = method
        self.register_buffer("table", table_AD.to(torch.float32).contiguous())

    def embed(self, obs_BS: torch.Tensor, act_B: torch.Tensor) -> torch.Tensor:
        return self.table[act_B.to(self.table.device).long()]

    def embed_chunk(self, obs_BS: torch.Tensor, actions_C: torch.Tensor) -> torch.Tensor:
        rows = self.table[actions_C.to(self.table.device).long()]
        return rows[None].expand(obs_BS.shape[0], *rows.shape)


def _check(dim: int, n_actions: int) -> None:
    if dim < 1:
        raise ValueError(f"dim: must be >= 1, got {dim}")
    if n_actions < 1:
        raise ValueError(f"n_actions: must be >= 1, got {n_actions}")


def rand1_table(n_actions: int, dim: int, seed: int) -> torch.Tensor:
    """float32 [A, dim]: uniform in [-1, 1]^dim, a pure function of the seed."""
    _check(dim, n_actions)
    gen = torch.Generator().manual_seed(int(seed))
    return torch.rand(n_actions, dim, generator=gen, dtype=torch.float64).mul_(2).sub_(1).float()


def rand2_max_distance(n_actions: int, dim: int) -> float:
    """The largest margin the jittered-lattice scheme can guarantee: the cell width 2 / k."""
    return 2.0 / _cells_per_axis(n_actions, dim)


def _cells_per_axis(n_actions: int, dim: int) -> int:
    k = max(1, math.ceil(n_actions ** (1.0 / dim)))
    while k**dim < n_actions:  # guard float rounding of the root
        k += 1
    while k > 1 and (k - 1) ** dim >= n_actions:
        k -= 1
    return k


def rand2_table(n_actions: int, dim: int, min_distance: float, seed: int) -> torch.Tensor:
    """float32 [A, dim]: random vectors in [-1, 1]^dim, pairwise L1 distance >= min_distance."""
    _check(dim, n_actions)
    if not math.isfinite(min_distance) or min_distance < 0:
        raise ValueError(f"rand2: min_distance must be a finite number >= 0, got {min_distance}")
    k = _cells_per_axis(n_actions, dim)
    width = 2.0 / k
    if min_distance > width - _SAFETY:  # a tiny band keeps the margin exact after float32 rounding
        raise ValueError(
            f"rand2: min_distance {min_distance} is infeasible for {n_actions} actions in {dim}-D: "
            f"the jittered lattice ({k} cells per axis) guarantees at most {width:.6g}; "
            f"lower min_distance or raise dim"
        )
    if k**dim > 2**62:
        raise ValueError(f"rand2: {k}^{dim} lattice cells overflow int64; lower dim")
    gen = torch.Generator().manual_seed(int(seed))
    n_cells = k**dim
    if n_cells <= 4 * n_actions or n_cells <= 1 << 24:
        cells = torch.randperm(n_cells, generator=gen)[:n_actions]
    else:  # sparse lattice: draw distinct cell ids by rejection of duplicates, in batches
        cells = torch.empty(0, dtype=torch.int64)
        while cells.numel() < n_actions:
            draw = torch.randint(0, n_cells, (2 * n_actions,), generator=gen, dtype=torch.int64)
            merged = torch.cat([cells, draw])
            uniq, inverse = torch.unique(merged, return_inverse=True)
            first = torch.full((uniq.numel(),), merged.numel(), dtype=torch.int64)
            first.scatter_reduce_(0, inverse, torch.arange(merged.numel()), reduce="amin")
            cells = merged[first.sort().values][:n_actions]
    powers = k ** torch.arange(dim - 1, -1, -1, dtype=torch.int64)
    coords = (cells[:, None] // powers[None, :]) % k  # [A, dim] integer cell coordinates
    centres = -1.0 + width * (coords.double() + 0.5)
    jitter = max((width - min_distance - _SAFETY) / 2, 0.0)
    noise = torch.rand(n_actions, dim, generator=gen, dtype=torch.float64).mul_(2).sub_(1)
    return (centres + jitter * noise).clamp_(-1, 1).float()


def build_rand1(config: Rand1Config, n_actions: int, obs_dim: int) -> Representation:
    """The Rand-1 table for ``config.seed`` (deterministic, so it is also the trained result)."""
    return TableRepresentation("rand1", rand1_table(n_actions, config.dim, config.seed), obs_dim)


def build_rand2(config: Rand2Config, n_actions: int, obs_dim: int) -> Representation:
    """The Rand-2 table for ``config.seed``; ValueError when the margin is infeasible."""
    table = rand2_table(n_actions, config.dim, config.min_distance, config.seed)
    return TableRepresentation("rand2", table, obs_dim)


def _fit(
    build: Any,
    dataset: Any,
    config: Any,
    device: str,
    progress: ProgressFn | None,
) -> tuple[Representation, dict[str, float]]:
    rep = build(config, dataset.n_actions, dataset.obs_dim).to(resolve_device(device))
    metrics = {"loss": 0.0}
    if progress is not None:
        progress(0, dict(metrics))
    return rep, metrics


def fit_rand1(
    dataset: Any,
    config: Rand1Config,
    *,
    device: str = "auto",
    progress: ProgressFn | None = None,
) -> tuple[Representation, dict[str, float]]:
    """Draw the Rand-1 table for the dataset's action set (no training; the data is not used)."""
    return _fit(build_rand1, dataset, config, device, progress)


def fit_rand2(
    dataset: Any,
    config: Rand2Config,
    *,
    device: str = "auto",
    progress: ProgressFn | None = None,
) -> tuple[Representation, dict[str, float]]:
    """Draw the Rand-2 table for the dataset's action set (no training; the data is not used)."""
    return _fit(build_rand2, dataset, config, device, progress)
