"""The Minari 0.5 dataset format (a directory of ``data/main_data.hdf5`` + ``data/metadata.json``).

``minari`` itself is not imported: the layout is read and written with h5py + json under the
HDF5 safety rules of :mod:`merlion_core.data.io_hdf5`. See ``docs/formats.md``, section 4.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .dataset import (
    MAX_ACTIONS,
    MAX_TRANSITIONS,
    DatasetError,
    DatasetMeta,
    TransitionDataset,
    check_column,
    check_n_actions_cap,
    from_arrays,
)
from .io_common import (
    MAX_JSON_BYTES,
    Budget,
    atomic_write,
    dump_json,
    meta_from_json,
    meta_with,
    parse_json,
    read_json,
    resolve_n_actions,
)
from .io_hdf5 import _check_chained, _create, _dset, _episodes, _get, _open, _read, _subgroup

MINARI_VERSION = "0.5.4"  # the minari release whose HDF5 layout is written
_ID_RE = re.compile(r"^(?:[-_\w][-_\w/]*[-_\w]+/)?[-_\w]+?-v\d+$")


# ----------------------------------------------------------------------------- Minari


def _minari_dir(p: Path) -> Path:
    if p.is_file():
        return p.parent
    return p / "data" if (p / "data" / "metadata.json").is_file() else p


def _space(md: dict, key: str) -> dict | None:
    value = md.get(key)
    if isinstance(value, str):
        value = parse_json(value, key)
    if value is not None and not (isinstance(value, dict) and isinstance(value.get("type"), str)):
        raise DatasetError(f"{key}: expected a serialised gymnasium space")
    return value


def _propensities(g: h5py.Group, i: int, steps: int, budget: Budget) -> h5py.Dataset | None:
    """Episode ``i``'s ``infos/propensities``: [T], or [T+1] as Minari's DataCollector records infos
    from the reset on (entry t + 1 then belongs to action t); None if absent."""
    infos = _subgroup(g, "infos")
    obj = (
        None
        if infos is None
        else _dset(infos, "propensities", f"episode_{i}/infos/propensities", budget, required=False)
    )
    if obj is not None and (
        obj.ndim not in (1, 2) or obj.shape[1:] not in ((), (1,)) or obj.shape[0] not in (steps, steps + 1)
    ):
        raise DatasetError(
            f"episode_{i}/infos/propensities: shape {obj.shape} must be [T] or [T+1] for an episode of T={steps} steps"
        )
    return obj


def load_minari(p: Path, budget: Budget, n_actions: int | None, *, max_actions: int = MAX_ACTIONS) -> TransitionDataset:
    data = _minari_dir(p)
    md = read_json(data / "metadata.json", "metadata.json", MAX_JSON_BYTES)
    if not isinstance(md, dict):
        raise DatasetError("metadata.json: expected a JSON object")
    if md.get("data_format", "hdf5") != "hdf5":
        raise DatasetError(f"data_format: Minari {md.get('data_format')!r} storage is not supported (hdf5 only)")
    n_eps = md.get("total_episodes")
    if isinstance(n_eps, bool) or not isinstance(n_eps, int) or not 0 < n_eps <= MAX_TRANSITIONS:
        raise DatasetError(f"total_episodes: {n_eps!r} is not a positive int (empty or corrupt dataset)")
    act_space, obs_space = _space(md, "action_space"), _space(md, "observation_space")
    space_n = None
    if act_space is not None:
        if act_space["type"] != "Discrete" or act_space.get("start", 0) != 0:
            raise DatasetError(
                f"action_space: only Discrete(n) with start 0 is supported, got {act_space['type']}"
                f" start={act_space.get('start', 0)}"
            )
        space_n = act_space.get("n")
    if obs_space is not None and (obs_space["type"] != "Box" or len(obs_space.get("shape", ())) != 1):
        raise DatasetError(
            f"observation_space: only flat Box vectors are supported, got {obs_space['type']} "
            f"shape {obs_space.get('shape')}"
        )
    file_n, meta = meta_from_json(md.get("merlion"), "metadata.json merlion")
    if meta is None:
        spec = parse_json(md["env_spec"], "env_spec") if isinstance(md.get("env_spec"), str) else None
        env_id = spec.get("id") if isinstance(spec, dict) else None
        meta = DatasetMeta(
            env_id=env_id if isinstance(env_id, str) else None,
            expert_return=md.get("ref_max_score"),
            random_return=md.get("ref_min_score"),
            extra={"minari_dataset_id": str(md.get("dataset_id"))},
        )
    file_n = resolve_n_actions(space_n, file_n)
    n_known = resolve_n_actions(file_n, n_actions)
    check_n_actions_cap(n_known, max_actions)
    with _open(data / "main_data.hdf5") as h5:
        plan = []
        for i in range(n_eps):
            g = _get(h5, f"episode_{i}", f"episode_{i}", kind=h5py.Group)
            parts = [
                _dset(g, k, f"episode_{i}/{k}", budget)
                for k in ("observations", "actions", "rewards", "terminations", "truncations")
            ]
            o, rest = parts[0], parts[1:]
            if o.ndim != 2 or any(x.shape[:1] != (o.shape[0] - 1,) or x.shape[1:] not in ((), (1,)) for x in rest):
                raise DatasetError(
                    f"episode_{i}/observations: shape {o.shape} must be [T+1, S] with "
                    f"actions/rewards/terminations/truncations of length T"
                )
            plan.append([*parts, _propensities(g, i, o.shape[0] - 1, budget)])
        has_probs = [pr is not None for *_, pr in plan]
        if any(has_probs) and not all(has_probs):
            raise DatasetError(
                f"episode_{has_probs.index(False)}/infos/propensities: missing, but other "
                "episodes have it (propensities must cover every transition)"
            )
        dims = {o.shape[1] for o, *_ in plan}
        if len(dims) != 1:
            raise DatasetError(f"observations: episodes disagree on the observation dim ({sorted(dims)})")
        n, s = sum(o.shape[0] - 1 for o, *_ in plan), dims.pop()
        f = {
            "observations": np.empty((n, s), np.result_type(*[o.dtype for o, *_ in plan])),
            "actions": np.empty(n, np.result_type(*[a.dtype for _, a, *_ in plan])),
            "rewards": np.empty(n, np.result_type(*[r.dtype for _, _, r, *_ in plan])),
            "terminals": np.zeros(n, bool),
            "timeouts": np.zeros(n, bool),
        }
        f["next_observations"] = np.empty_like(f["observations"])
        if all(has_probs):
            f["propensities"] = np.empty(n, np.result_type(*[pr.dtype for *_, pr in plan]))
        k = marked = both = empty = 0
        for i, (o, a, r, te, tr, pr) in enumerate(plan):
            obs, size, name = _read(o), o.shape[0] - 1, f"episode_{i}"
            check_column(f"{name}/observations", obs, "float")  # every row, also of an episode without steps
            act = _read(a).reshape(-1)
            check_column(f"{name}/actions", act, "actions", n_actions=n_known, max_actions=max_actions)
            rew = _read(r).reshape(-1)
            check_column(f"{name}/rewards", rew, "float")
            term = check_column(f"{name}/terminations", _read(te).reshape(-1), "flag")
            trunc = check_column(f"{name}/truncations", _read(tr).reshape(-1), "flag").copy()
            probs = None if pr is None else _read(pr).reshape(-1)
            if probs is not None:  # all of it (a [T+1] layout's first entry, the reset's, is unused but read)
                check_column(f"{name}/infos/propensities", probs, "float")
                check_column(
                    f"{name}/infos/propensities", probs[probs.size - size :], "propensities", base=probs.size - size
                )
            if size == 0:
                empty += 1
                continue
            both += int(np.count_nonzero(term & trunc))
            if not (term[-1] or trunc[-1]):
                trunc[-1], marked = True, marked + 1
            f["observations"][k : k + size], f["next_observations"][k : k + size] = obs[:-1], obs[1:]
            f["actions"][k : k + size], f["rewards"][k : k + size] = act, rew
            f["terminals"][k : k + size], f["timeouts"][k : k + size] = term, trunc & ~term
            if probs is not None:
                f["propensities"][k : k + size] = probs[probs.size - size :]
            k += size
    notes: dict[str, Any] = {
        key: v for key, v in (("episodes_marked_timeout", marked), ("terminal_and_truncated", both)) if v
    }
    if empty:
        notes.update(
            dropped_rows=empty,
            dropped_reason=f"{empty} episode(s) of 0 steps (a single observation, no action): no transition",
        )
    return from_arrays(f, n_known, meta_with(meta, "minari", **notes), infer_n_actions=True, max_actions=max_actions)


def _dataset_id(p: Path, dataset_id: str | None) -> str:
    if dataset_id is None:
        dataset_id = p.name if re.search(r"-v\d+$", p.name) else f"{p.name}-v0"
    if not _ID_RE.match(dataset_id):
        raise DatasetError(f"dataset_id: {dataset_id!r} is not a Minari id ((namespace/)name-vN)")
    return dataset_id


def save_minari(
    ds: TransitionDataset, p: Path, *, compressed: bool = False, dataset_id: str | None = None, **_: Any
) -> None:
    dataset_id = _dataset_id(p, dataset_id)
    _check_chained(ds, "minari")
    episodes = _episodes(ds)
    if p.exists() and not p.is_dir():
        raise DatasetError("exists and is not a directory (a Minari dataset is a directory)")
    data = p / "data"
    data.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w", track_order=True) as h5:
            for i, (a, b) in enumerate(episodes):
                g = h5.create_group(f"episode_{i}")
                g.attrs["id"], g.attrs["total_steps"] = np.int64(i), np.int64(b - a)
                obs = np.concatenate([ds.observations[a:b], ds.next_observations[b - 1 : b]])
                _create(g, "observations", obs, compressed, chunks=True, maxshape=(None, ds.obs_dim))
                for name, arr in (
                    ("actions", ds.actions),
                    ("rewards", ds.rewards),
                    ("terminations", ds.terminals),
                    ("truncations", ds.timeouts),
                ):
                    _create(g, name, arr[a:b], compressed, chunks=True, maxshape=(None,))
                if ds.propensities is not None:  # aligned with actions: entry t is the probability of action t
                    _create(
                        g.create_group("infos"),
                        "propensities",
                        ds.propensities[a:b],
                        compressed,
                        chunks=True,
                        maxshape=(None,),
                    )

    atomic_write(data / "main_data.hdf5", write)
    inf = float("inf")
    md: dict[str, Any] = {
        "dataset_id": dataset_id,
        "total_episodes": len(episodes),
        "total_steps": ds.n_transitions,
        "data_format": "hdf5",
        "jpeg_encoding": False,
        "minari_version": MINARI_VERSION,
        "observation_space": json.dumps(
            {
                "type": "Box",
                "dtype": "float32",
                "shape": [ds.obs_dim],
                "low": [-inf] * ds.obs_dim,
                "high": [inf] * ds.obs_dim,
            }
        ),
        "action_space": json.dumps({"type": "Discrete", "dtype": "int64", "start": 0, "n": ds.n_actions}),
        "dataset_size": round((data / "main_data.hdf5").stat().st_size / 1e6, 1),
        "merlion": {"n_actions": ds.n_actions, "meta": ds.meta.to_dict()},
    }
    if ds.meta.expert_return is not None and ds.meta.random_return is not None:
        md["ref_max_score"], md["ref_min_score"] = ds.meta.expert_return, ds.meta.random_return
    text = dump_json(md) + "\n"
    atomic_write(data / "metadata.json", lambda t: t.write_text(text, encoding="utf-8"))
