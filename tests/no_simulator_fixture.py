"""Datasets that name no simulator (meta without env_id), and a small studio home built on them:
uploads of two observation shapes, encoders trained on each, recorded as succeeded jobs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from studio_fixture import record

from merlion_core.data.dataset import TransitionDataset, from_arrays
from merlion_core.data.io import save_dataset
from merlion_core.jobs.store import JobStore
from merlion_core.pipelines.encoder import train_encoder


def no_env_dataset(
    n: int = 400, obs_dim: int = 3, n_actions: int = 64, seed: int = 0, episode: int = 20
) -> TransitionDataset:
    """Random transitions in episodes of ``episode`` steps (next_obs chained inside an episode,
    every episode ends terminal), recorded without an environment."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    terminals = (np.arange(n) % episode) == episode - 1
    nxt = np.empty_like(obs)
    nxt[:-1] = obs[1:]
    nxt[terminals] = obs[terminals]
    fields = dict(
        observations=obs,
        actions=rng.integers(0, n_actions, n),
        rewards=rng.normal(size=n),
        next_observations=nxt,
        terminals=terminals,
        timeouts=np.zeros(n, bool),
    )
    return from_arrays(fields, n_actions, {"behaviour": "logged"})


def build_no_sim_home(home: Path) -> dict:
    """data/uploads/{nosim.npz (obs 3, 64 actions), wide.npz (obs 5, 64 actions), maze-like.hdf5 (D4RL,
    obs 3, 4096 actions: the shape of both mazes)}; encoders (in this order): merlion on wide, merlion
    and rand1 on nosim."""
    torch.set_num_threads(1)
    uploads = home / "data" / "uploads"
    uploads.mkdir(parents=True)
    nosim = save_dataset(no_env_dataset(), uploads / "nosim.npz", format="npz")
    wide = save_dataset(no_env_dataset(obs_dim=5, seed=1), uploads / "wide.npz", format="npz")
    maze_like = save_dataset(no_env_dataset(n_actions=4096, seed=2), uploads / "maze-like.hdf5", format="d4rl")
    store = JobStore(home / "runs")
    art = home / "runs" / "fixture"
    out: dict = {"home": home, "nosim": str(nosim), "wide": str(wide), "maze_like": str(maze_like)}
    quick = {"steps": 30, "batch_size": 32}
    for name, data, method, options in (
        ("wide", wide, "merlion", quick),
        ("merlion", nosim, "merlion", quick),
        ("rand1", nosim, "rand1", {}),
    ):  # the nosim MERLION encoder is the newest
        enc = train_encoder(data, method, art / name, overrides=options)
        out[name] = enc["out"]
        out[f"{name}_job"] = record(
            store,
            "train-encoder",
            {"dataset": str(data), "method": method, "options": options},
            {"encoder": enc["out"]},
        )
    store.close()
    return out
