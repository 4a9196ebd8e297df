"""Which actions a scatter draws when there are too many (no streamlit): a point budget, a seeded
uniform sample that always keeps the actions that matter at the state, a rectangular region of the
2-D view drawn at full resolution (the zoom), and a 2-D count grid of every action (the density
layer under the sampled points). Pure numpy, vectorised over actions.

Shapes: A actions, K candidates (the actions inside the region, or all), N drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

POINT_BUDGET = 20_000
"""Most actions the Embeddings scatter draws (WebGL points, each with its hover row); above it a sample."""
SAMPLE_SEED = 0
"""Seed of the uniform sample: the same actions are drawn at every state (only the always-drawn ones change)."""
DENSITY_BINS = 80
"""Cells per side of the density layer's 2-D count grid."""
PSEUDOMETRIC_BUDGET = 1024
"""Most actions in the Pseudometric page's K x K heatmaps; above it a seeded uniform sample."""


@dataclass(frozen=True)
class Region:
    """An axis-aligned rectangle of the 2-D view, bounds included: [x0, x1] x [y0, y1]."""

    x0: float
    x1: float
    y0: float
    y1: float

    def __post_init__(self) -> None:
        for name, low, high in (("x", self.x0, self.x1), ("y", self.y0, self.y1)):
            if not (np.isfinite(low) and np.isfinite(high)) or low > high:
                raise ValueError(f"Region: the {name} range must be finite with low <= high, got [{low}, {high}]")

    def inside(self, xy_A2: np.ndarray) -> np.ndarray:
        """int64[K]: the ids (rows of ``xy_A2``) of the points inside, ascending."""
        xy = np.asarray(xy_A2)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise ValueError(f"Region.inside: points must be [A, 2], got {xy.shape}")
        x, y = xy[:, 0], xy[:, 1]
        return np.flatnonzero((x >= self.x0) & (x <= self.x1) & (y >= self.y0) & (y <= self.y1))


def extent(xy_A2: np.ndarray) -> Region:
    """The smallest region holding every point (a zero-width side is widened by 1e-6 each way)."""
    xy = np.asarray(xy_A2, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) == 0:
        raise ValueError(f"extent: points must be a non-empty [A, 2], got {xy.shape}")
    low, high = xy.min(0), xy.max(0)
    pad = np.where(high > low, 0.0, 1e-6)
    return Region(float(low[0] - pad[0]), float(high[0] + pad[0]), float(low[1] - pad[1]), float(high[1] + pad[1]))


@dataclass(frozen=True)
class PointSelection:
    """The actions a scatter draws and how they were chosen."""

    actions: np.ndarray
    """int64[N]: the drawn action ids, ascending."""
    n_actions: int
    """|A|: every action of the representation."""
    n_candidates: int
    """Actions the view covers: those inside the region, or |A| without one."""
    budget: int
    """The point budget the selection kept to."""
    kept: np.ndarray
    """int64[M]: the always-drawn actions among the drawn ones (the logged action, the policy's action)."""
    region: Region | None = None

    @property
    def sampled(self) -> bool:
        """Whether some candidates are left out (a sample of them is drawn)."""
        return len(self.actions) < self.n_candidates

    def caption(self) -> str:
        """What the scatter shows, in one line: the counts, and whether it is a sample."""
        n, a = len(self.actions), self.n_actions
        kept = (
            f", {len(self.kept)} of them always drawn (the actions that matter at this state)" if len(self.kept) else ""
        )
        if self.region is None:
            if not self.sampled:
                return f"{a:,} actions"
            return (
                f"showing {n:,} of {a:,} actions (sampled): a seeded uniform sample within the budget of "
                f"{self.budget:,} points{kept}"
            )
        inside = f"{self.n_candidates:,} of {a:,} actions inside the region"
        if not self.sampled:
            return f"{inside}: showing all {n:,} (full resolution)"
        return (
            f"{inside}, more than the budget of {self.budget:,}: showing {n:,} of them (sampled){kept}; "
            "shrink the region for full resolution"
        )


def select_points(
    n_actions: int,
    budget: int = POINT_BUDGET,
    always: Sequence[int] | np.ndarray = (),
    candidates: np.ndarray | None = None,
    seed: int = SAMPLE_SEED,
    region: Region | None = None,
) -> PointSelection:
    """Every candidate when they fit the budget; else a seeded uniform sample of ``budget - len(always)``
    candidates plus the ``always`` actions that are candidates. ``candidates`` (int64[K], ascending: the
    actions in ``region``) defaults to every action. The sample is the first ``budget - len(always)`` of
    one seeded random ordering of ``budget`` candidates, so at every state of one encoder the same
    actions are drawn but for the last few (as many as there are always-drawn actions)."""
    if n_actions < 1 or budget < 1:
        raise ValueError(f"select_points: n_actions and budget must be >= 1, got {n_actions} and {budget}")
    keep = np.unique(np.asarray(always, dtype=np.int64))
    if len(keep) and (keep[0] < 0 or keep[-1] >= n_actions):
        raise ValueError(f"select_points: always-drawn actions must be in [0, {n_actions}), got {keep.tolist()}")
    pool = np.arange(n_actions, dtype=np.int64) if candidates is None else np.asarray(candidates, dtype=np.int64)
    if candidates is not None:
        keep = keep[np.isin(keep, pool)]
    if len(keep) > budget:
        raise ValueError(f"select_points: {len(keep)} always-drawn actions do not fit the budget of {budget}")
    if len(pool) <= budget:
        drawn = pool
    else:
        rng = np.random.default_rng(seed)
        positions = rng.choice(len(pool), budget, replace=False)[: budget - len(keep)]  # in random order
        drawn = np.union1d(pool[positions], keep)
    return PointSelection(drawn, int(n_actions), len(pool), int(budget), keep, region)


@dataclass(frozen=True)
class Density:
    """Counts of points on a regular grid: ``counts[j, i]`` points in the cell centred at (x[i], y[j])."""

    x: np.ndarray  # f32[nx]
    y: np.ndarray  # f32[ny]
    counts: np.ndarray  # int64[ny, nx]


def density_grid(xy_A2: np.ndarray, region: Region, bins: int = DENSITY_BINS) -> Density:
    """Every point inside ``region`` counted on a ``bins`` x ``bins`` grid over it (np.bincount:
    one pass over the points)."""
    if bins < 1:
        raise ValueError(f"density_grid: bins must be >= 1, got {bins}")
    xy = np.asarray(xy_A2, dtype=np.float64)[region.inside(xy_A2)]
    low = np.array([region.x0, region.y0])
    width = np.maximum(np.array([region.x1, region.y1]) - low, 1e-12)
    cell = np.clip(((xy - low) / width * bins).astype(np.int64), 0, bins - 1)
    counts = np.bincount(cell[:, 1] * bins + cell[:, 0], minlength=bins * bins).reshape(bins, bins)
    centres = (np.arange(bins) + 0.5) / bins
    return Density(
        (low[0] + centres * width[0]).astype(np.float32), (low[1] + centres * width[1]).astype(np.float32), counts
    )
