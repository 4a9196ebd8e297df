"""The caching boundary: every heavy load of the pages goes through here.

Models (encoders, agents, env models, the planner's value table) are ``st.cache_resource``
keyed by path and a change stamp (mtime), so a re-trained folder is reloaded; derived data
(dataset summaries, embeddings, distance matrices) is ``st.cache_data``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import streamlit as st

from merlion_core.data.summary import dataset_summary
from studio import explore
from studio.catalog import stamp


@st.cache_resource(max_entries=6, show_spinner="Loading the dataset ...")
def _dataset(path: str, mtime: float) -> Any:
    from merlion_core.data.io import load_dataset

    return load_dataset(path)


def dataset(path: str) -> Any:
    return _dataset(path, stamp(path))


@st.cache_data(max_entries=16, show_spinner=False)
def _summary(path: str, mtime: float) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    from merlion_core.data.io import detect_format

    ds = _dataset(path, mtime)
    counts = np.bincount(np.asarray(ds.actions), minlength=ds.n_actions)
    return dataset_summary(ds, detect_format(path)), np.asarray(ds.episode_returns(), np.float32), counts


def summary(path: str) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """(the core's summary dict, episode returns f32[E], action counts int[A])."""
    return _summary(path, stamp(path))


@st.cache_resource(max_entries=8, show_spinner="Loading the encoder ...")
def _representation(path: str, mtime: float) -> Any:
    from merlion_core.representation.artifacts import load_representation

    return load_representation(path)


def representation(path: str) -> Any:
    """LoadedRepresentation (representation, method, config, info, metrics)."""
    return _representation(path, stamp(path))


@st.cache_resource(max_entries=8, show_spinner="Loading the agent ...")
def _agent(path: str, mtime: float) -> Any:
    from merlion_core.algos.artifacts import load_agent

    return load_agent(path)


def agent(path: str) -> Any:
    return _agent(path, stamp(path))


@st.cache_resource(max_entries=8)
def env_model(env_id: str, overrides_json: str = "null") -> Any:
    from merlion_core.envs import make_model

    return make_model(env_id, json.loads(overrides_json))


def env_key(ds: Any) -> tuple[str, str] | None:
    """(env id, its config overrides as JSON) of a dataset's env: the cache key of its model."""
    from merlion_core.data.summary import dataset_env_overrides

    if not ds.meta.env_id:
        return None
    return ds.meta.env_id, json.dumps(dataset_env_overrides(ds), sort_keys=True)


def model_for(ds: Any) -> Any | None:
    """The model of the dataset's env (with its recorded config), or None (no env recorded, its
    model cannot be built here, e.g. the dialogue env without its MultiWOZ files, or its observation
    size or action count is not the dataset's)."""
    try:
        key = env_key(ds)
        if key is None:
            return None
        model = env_model(*key)
    except (ValueError, OSError):  # an env id not registered here, or its model's files missing
        return None
    if int(model.obs_dim) != ds.obs_dim or int(model.n_actions) != ds.n_actions:
        return None
    return model


@st.cache_resource(
    max_entries=4,
    show_spinner="Computing the planner's value table (once per environment, about 20 s on 2 busy cores) ...",
)
def planner_table(env_id: str, overrides_json: str = "null") -> Any:
    """The planner's V* table, kept on disk under RUNS/studio/cache so later servers load it at once."""
    import hashlib

    from merlion_core.envs.planning import ValueTable
    from studio import settings

    name = hashlib.sha256(f"{env_id}|{overrides_json}|{explore.TRUE_VALUE_GRID}".encode()).hexdigest()[:16]
    path = settings.studio_dir() / "cache" / f"value-table-{name}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as saved:
            return ValueTable(saved["values"], saved["top_candidates"])
    table = explore.planner_table(env_model(env_id, overrides_json))
    if table is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, values=table.values, top_candidates=table.top_candidates)
        tmp.replace(path)
    return table


@st.cache_data(max_entries=8, show_spinner=False)
def _map_states(path: str, mtime: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    return explore.map_states(np.asarray(_dataset(path, mtime).observations), n)


def map_states(path: str, n: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    """(dataset rows, f32[n, S]): distinct dataset states for the maze map."""
    return _map_states(path, stamp(path), n)


@st.cache_data(max_entries=64, show_spinner=False)
def embeddings(path: str, mtime: float, state: tuple[float, ...]) -> np.ndarray:
    """f32[A, D]: every action's embedding at one state."""
    return explore.action_embeddings(_representation(path, mtime).representation, np.asarray(state, np.float32))


@st.cache_resource(max_entries=4)
def action_info(env_id: str, overrides_json: str = "null") -> explore.ActionInfo:
    return explore.action_info(env_model(env_id, overrides_json))


@st.cache_data(max_entries=32, show_spinner=False)
def _projection(path: str, mtime: float, n_actions: int) -> np.ndarray:
    from studio.projections import coordinates

    return coordinates(path, n_actions)


def projection(path: str, n_actions: int) -> np.ndarray:
    """f32[A, 2]: a finished UMAP job's coordinates (cached by path and mtime)."""
    return _projection(path, stamp(path), n_actions)
