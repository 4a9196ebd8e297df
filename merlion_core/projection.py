"""2-D views of D-dimensional action embeddings: UMAP (umap-learn), and its artifact on disk.

``umap_projection`` is the numeric part (arrays in, f32[N, 2] out); ``save_projection`` and
``load_projection`` are the only code that knows the projection artifact's format:

    projection/umap.npz      coords f32[R, A, 2] (R states x A actions), rows int64[R]
    projection/config.json   the job's config, its seed, the encoder's method, d and |A|, seconds

umap-learn is imported when a projection is computed (it pulls numba; its first call in a
process compiles for 30-50 s). Not a numeric-core module: numba may write its cache files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

MAX_POINTS = 200_000
"""Largest point set a projection accepts (UMAP's memory and time grow with N)."""
ARCHIVE = "umap.npz"
CONFIG = "config.json"


def umap_projection(
    points_ND: np.ndarray, *, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0
) -> np.ndarray:
    """f32[N, 2]: the UMAP embedding of ``points_ND`` (Euclidean), deterministic for a seed (umap's
    random_state; it then runs on one thread). Needs at least n_neighbors + 1 distinct finite
    points; copies of a point share its coordinates."""
    points = np.asarray(points_ND)
    if points.ndim != 2 or points.shape[1] < 1:
        raise ValueError(f"umap_projection: points must be a 2-D array [N, D], got shape {points.shape}")
    if not np.issubdtype(points.dtype, np.number) or np.iscomplexobj(points):
        raise ValueError(f"umap_projection: points must be real numbers, got dtype {points.dtype}")
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, (int, np.integer)) or n_neighbors < 2:
        raise ValueError(f"umap_projection: n_neighbors must be an integer >= 2, got {n_neighbors!r}")
    if not np.isfinite(min_dist) or min_dist < 0:
        raise ValueError(f"umap_projection: min_dist must be a finite number >= 0, got {min_dist!r}")
    n = points.shape[0]
    if n < n_neighbors + 1:
        raise ValueError(f"umap_projection: {n} points; need at least n_neighbors + 1 = {n_neighbors + 1}")
    if n > MAX_POINTS:
        raise ValueError(f"umap_projection: {n} points; at most {MAX_POINTS}")
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        raise ValueError(
            f"umap_projection: points must be finite; row {int(np.flatnonzero(bad)[0])} is not "
            f"({int(bad.sum())} rows in all)"
        )
    # UMAP is not deterministic on repeated points (ties among neighbours): project each distinct
    # point once and give its copies the same place
    distinct, inverse = np.unique(points.astype(np.float32), axis=0, return_inverse=True)
    if len(distinct) < n_neighbors + 1:
        raise ValueError(
            f"umap_projection: {len(distinct)} distinct points; need at least n_neighbors + 1 = {n_neighbors + 1}"
        )
    import umap  # numba-compiled: imported (and compiled) only when a projection is asked for

    reducer = umap.UMAP(
        n_components=2, n_neighbors=int(n_neighbors), min_dist=float(min_dist), random_state=int(seed), n_jobs=1
    )
    return np.asarray(reducer.fit_transform(distinct), dtype=np.float32)[inverse.reshape(-1)]


def save_projection(
    out_dir: str | os.PathLike, coords_RA2: np.ndarray, rows_R: np.ndarray, config: dict[str, Any]
) -> Path:
    """Write the coordinates and their config (both atomically); returns the .npz path."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    coords = np.asarray(coords_RA2, dtype=np.float32)
    rows = np.asarray(rows_R, dtype=np.int64)
    if coords.ndim != 3 or coords.shape[2] != 2 or coords.shape[0] != len(rows):
        raise ValueError(f"save_projection: coords must be [R, A, 2] with R = {len(rows)} rows, got {coords.shape}")
    tmp = folder / ".tmp-umap.npz"
    np.savez(tmp, coords=coords, rows=rows)
    os.replace(tmp, folder / ARCHIVE)
    tmp_config = folder / ".tmp-config.json"
    tmp_config.write_text(json.dumps(config, indent=2, sort_keys=True))
    os.replace(tmp_config, folder / CONFIG)
    return folder / ARCHIVE


def load_projection(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(coords f32[R, A, 2], rows int64[R], config) from a projection folder or its .npz; one-line
    errors naming the file."""
    archive = Path(path)
    archive = archive / ARCHIVE if archive.is_dir() else archive
    try:
        with np.load(archive, allow_pickle=False) as saved:
            coords, rows = saved["coords"], saved["rows"]
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{archive}: not a projection archive ({exc})") from None
    if coords.ndim != 3 or coords.shape[2] != 2 or rows.shape != (coords.shape[0],) or coords.dtype != np.float32:
        raise ValueError(
            f"{archive}: coords must be float32 [R, A, 2] with rows [R], got {coords.dtype} "
            f"{coords.shape} and rows {rows.shape}"
        )
    config_path = archive.parent / CONFIG
    try:
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{config_path}: not valid JSON ({exc})") from None
    return coords, rows.astype(np.int64), config
