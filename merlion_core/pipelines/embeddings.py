"""Pipelines over a trained encoder's embeddings: a warm start with new p and tau (frames as it
goes) and a UMAP view of every action's embedding at chosen states.

One implementation each, used by the jobs runner's ``warm-start`` and ``umap`` kinds and by the
app's resident warm-start worker (which passes encoders and datasets it keeps loaded).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from merlion_core.projection import MAX_POINTS, save_projection, umap_projection
from merlion_core.representation.artifacts import LoadedRepresentation, save_representation, write_frame

Progress = Callable[..., None]


def _no_progress(*_: Any, **__: Any) -> None:
    return None


def encoder_dataset_path(loaded: LoadedRepresentation, where: str | os.PathLike) -> str:
    """The dataset a saved encoder was trained on (its config.json records it); one-line error when
    it records none or the file is gone."""
    path = (loaded.info.get("dataset") or {}).get("path")
    if not path or not Path(path).exists():
        raise ValueError(f"{where}: its dataset {path!r} is not there; give a dataset")
    return str(path)


def _state_rows(dataset: Any, state: Any, obs_dim: int, where: str) -> np.ndarray:
    """f32[1, S]: the given observation, or the dataset's first one when ``state`` is empty."""
    obs = np.array(dataset.observations[:1] if len(state) == 0 else [state], dtype=np.float32)  # a writable copy
    if obs.shape != (1, obs_dim) or not np.isfinite(obs).all():
        raise ValueError(
            f"{where}: state must be {obs_dim} finite numbers (the encoder's observation size), got {len(obs[0])}"
        )
    return obs


def warm_start_encoder(
    loaded: LoadedRepresentation,
    dataset: Any,
    *,
    p: float,
    tau: float,
    steps: int,
    frame_every: int,
    state: Any = (),
    seed: int = 0,
    frames_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    source: str = "",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Warm-start a copy of a saved MERLION encoder (models frozen, merlion.warm_start) with new p
    and tau; every ``frame_every`` steps write the embeddings at ``state`` to ``frames_dir``
    (step-0 first: the encoder as loaded) and report ``progress(step, metrics, total=steps)``
    (it may raise to stop). With ``out_dir``, save the warm-started encoder there."""
    from merlion_core.representation.merlion import MerlionRepresentation, warm_start

    progress = progress or _no_progress
    rep = loaded.representation
    if not isinstance(rep, MerlionRepresentation):
        raise ValueError(f"{source or 'warm start'}: warm starts need a MERLION encoder, got {loaded.method}")
    rep = copy.deepcopy(rep)  # the caller's (possibly cached) encoder stays as it was
    obs = _state_rows(dataset, state, rep.obs_dim, source or "warm start")
    started = time.perf_counter()
    with torch.no_grad():
        write_frame(frames_dir, 0, rep.embed_all(torch.as_tensor(obs))[0].cpu().numpy())
    progress(0, {}, total=steps)
    metrics: dict[str, float] = {}
    for update in warm_start(
        rep, dataset, p=p, tau=tau, steps=steps, yield_every=frame_every, states=obs, device="cpu", seed=seed
    ):
        if update.embeddings is None:  # warm_start embeds whenever it is given states
            raise RuntimeError("warm start: an update without the embeddings at the requested state")
        write_frame(frames_dir, update.step, update.embeddings[0])
        metrics = update.metrics
        progress(update.step, metrics, total=steps)
    seconds = time.perf_counter() - started
    result: dict[str, Any] = {"frames": str(frames_dir), "steps": steps, "seconds": seconds, "encoder": None}
    if out_dir is not None:
        info = {
            k: v
            for k, v in loaded.info.items()
            if k not in ("format", "version", "method", "n_actions", "obs_dim", "dim")
        }
        info["warm_start"] = {"from": str(source), "p": p, "tau": tau, "steps": steps, "seed": seed}
        save_representation(
            rep, loaded.method, rep.config, out_dir, metrics={**metrics, "warm_start_seconds": seconds}, info=info
        )
        result["encoder"] = str(out_dir)
    return result


def umap_embeddings(
    loaded: LoadedRepresentation,
    dataset: Any,
    rows: Any,
    *,
    n_neighbors: int,
    min_dist: float,
    seed: int,
    out_dir: str | os.PathLike,
    config: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Embed every action at each dataset row's observation with the encoder, project all R x A
    points with one UMAP (merlion_core.projection) and save coords f32[R, A, 2] with ``config`` to
    ``out_dir``. Progress: ``(1, {"points": N}, total=2)`` once embedded, ``(2, {...})`` when done."""
    progress = progress or _no_progress
    rep = loaded.representation
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    n = len(dataset.observations)
    if len(rows) == 0 or rows.min() < 0 or rows.max() >= n:
        raise ValueError(
            f"umap: rows: every row must be in 0..{n - 1} (the dataset has {n} transitions), got {rows.tolist()[:8]}"
        )
    if len(rows) * rep.n_actions > MAX_POINTS:
        raise ValueError(
            f"umap: {len(rows)} rows x {rep.n_actions} actions = {len(rows) * rep.n_actions} points; "
            f"at most {MAX_POINTS}"
        )
    progress(0, {}, total=2)
    with torch.no_grad():
        e_RAD = rep.embed_all(torch.as_tensor(np.asarray(dataset.observations)[rows], dtype=torch.float32))
    e = e_RAD.float().cpu().numpy()  # [R, A, D]
    progress(1, {"points": float(e.shape[0] * e.shape[1])}, total=2)
    started = time.perf_counter()
    coords = umap_projection(e.reshape(-1, e.shape[2]), n_neighbors=n_neighbors, min_dist=min_dist, seed=seed)
    seconds = time.perf_counter() - started
    document = {
        **(config or {}),
        "seed": seed,
        "method": loaded.method,
        "dim": int(e.shape[2]),
        "n_actions": int(e.shape[1]),
        "umap_seconds": round(seconds, 3),
    }
    path = save_projection(out_dir, coords.reshape(e.shape[0], e.shape[1], 2), rows, document)
    progress(2, {"umap_seconds": seconds}, total=2)
    return {
        "projection": str(path),
        "points": int(e.shape[0] * e.shape[1]),
        "dim": int(e.shape[2]),
        "umap_seconds": seconds,
    }
