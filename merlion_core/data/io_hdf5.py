"""HDF5-based dataset formats: D4RL and d3rlpy 2.x (read and write with h5py), and the HDF5 helpers.

``d3rlpy`` is not imported: its layout is read and written with h5py + json (Minari, the
third HDF5-based format, lives in :mod:`merlion_core.data.io_minari` on these helpers). Every
dataset is checked before reading: it must be a hard-linked, non virtual, non external HDF5
dataset of a numeric dtype whose ``shape * itemsize`` fits the byte budget. Soft/external
links are never followed. Layout details and the handling of episode ends are documented in
``docs/formats.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, overload

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
    MAX_META_BYTES,
    Budget,
    atomic_write,
    check_dtype,
    derive_next_observations,
    dump_json,
    merlion_json,
    meta_from_json,
    meta_with,
    parse_json,
    resolve_n_actions,
)

D3RLPY_VERSION = "2.1"  # DATASET_VERSION of d3rlpy/dataset/io.py (d3rlpy 2.x)
D3RLPY_COLUMNS = ("observations", "actions", "rewards", "terminated")


# ----------------------------------------------------------------------------- helpers


def _open(p: Path) -> h5py.File:
    try:
        return h5py.File(p, "r")
    except (OSError, ValueError) as exc:
        raise DatasetError(f"not a readable HDF5 file ({exc})") from None


def _read(obj: h5py.Dataset, what: str | None = None) -> Any:
    what = what or obj.name.lstrip("/")
    try:
        return obj[()]
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise DatasetError(f"{what}: unreadable HDF5 data ({exc})") from None


def _get(group: h5py.Group, name: str, what: str, *, required: bool = True, kind: type = h5py.Dataset) -> Any:
    try:
        link = group.get(name, getlink=True)
        obj = group[name] if isinstance(link, h5py.HardLink) else None
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise DatasetError(f"{what}: unreadable HDF5 object ({exc})") from None
    if link is None:
        if required:
            raise DatasetError(f"{what}: required field missing")
        return None
    if not isinstance(link, h5py.HardLink):
        raise DatasetError(f"{what}: {type(link).__name__} links are not followed")
    if not isinstance(obj, kind):
        raise DatasetError(f"{what}: expected an HDF5 {kind.__name__.lower()}, got {type(obj).__name__}")
    if isinstance(obj, h5py.Dataset) and (obj.is_virtual or obj.external or obj.shape is None):
        raise DatasetError(f"{what}: virtual, external or empty-dataspace datasets are not read")
    return obj


def _subgroup(group: h5py.Group, name: str) -> h5py.Group | None:
    """A hard-linked subgroup, else None: absent, linked or non-group objects are ignored (never followed)."""
    try:
        link = group.get(name, getlink=True)
        obj = group[name] if isinstance(link, h5py.HardLink) else None
    except (OSError, RuntimeError, KeyError, ValueError, TypeError):
        return None
    return obj if isinstance(obj, h5py.Group) else None


@overload
def _dset(
    group: h5py.Group, name: str, what: str, budget: Budget, *, required: Literal[True] = ..., kinds: str = ...
) -> h5py.Dataset: ...
@overload
def _dset(
    group: h5py.Group, name: str, what: str, budget: Budget, *, required: bool, kinds: str = ...
) -> h5py.Dataset | None: ...
def _dset(
    group: h5py.Group, name: str, what: str, budget: Budget, *, required: bool = True, kinds: str = "biuf"
) -> h5py.Dataset | None:
    """A numeric dataset whose declared size has been charged to the budget (not read yet)."""
    obj = _get(group, name, what, required=required)
    if obj is not None:
        check_dtype(obj.dtype, what, kinds)
        nbytes = int(np.prod(obj.shape, dtype=np.int64)) * obj.dtype.itemsize
        budget.take(nbytes, what)
        _check_storage(obj, nbytes, what)
    return obj


DEFLATE_MAX_RATIO = 1032  # deflate (gzip) never expands data more than about 1032:1


def _check_storage(obj: h5py.Dataset, nbytes: int, what: str) -> None:
    """Refuse a dataset whose declared size the file cannot hold: unfiltered data must be stored
    in full (no unallocated/fill-value or truncated data), compressed data within deflate's
    ratio, so a small file never makes the reader allocate much more than its own size."""
    try:
        stored, filtered = obj.id.get_storage_size(), obj.id.get_create_plist().get_nfilters() > 0
    except (OSError, RuntimeError, ValueError) as exc:
        raise DatasetError(f"{what}: unreadable HDF5 storage ({exc})") from None
    if not filtered and stored < nbytes:
        raise DatasetError(
            f"{what}: declares {nbytes} bytes of data but the file stores {stored} "
            "(unallocated or truncated data); refused"
        )
    if filtered and nbytes > stored * DEFLATE_MAX_RATIO + (1 << 16):
        raise DatasetError(
            f"{what}: declares {nbytes} bytes from {stored} compressed bytes, beyond deflate's "
            f"maximum ratio of {DEFLATE_MAX_RATIO}:1 (a compression bomb or a corrupt file); refused"
        )


def _string(group: h5py.Group, name: str, what: str, *, required: bool = False) -> str | None:
    obj = _get(group, name, what, required=required)
    if obj is None:
        return None
    if obj.shape != () or (h5py.check_string_dtype(obj.dtype) is None and obj.dtype.kind != "S"):
        raise DatasetError(f"{what}: expected a scalar string")
    if obj.dtype.kind == "S" and obj.dtype.itemsize > MAX_META_BYTES:
        raise DatasetError(f"{what}: longer than the {MAX_META_BYTES}-byte metadata cap")
    value = _read(obj)
    if isinstance(value, np.ndarray) or not isinstance(value, (bytes, str)):
        raise DatasetError(f"{what}: expected a scalar string")
    if len(value) > MAX_META_BYTES:
        raise DatasetError(f"{what}: longer than the {MAX_META_BYTES}-byte metadata cap")
    try:
        return value.decode("utf-8") if isinstance(value, bytes) else value
    except UnicodeDecodeError:
        raise DatasetError(f"{what}: not valid UTF-8 text") from None


@overload
def _int(group: h5py.Group, name: str, what: str, *, required: Literal[True] = ...) -> int: ...
@overload
def _int(group: h5py.Group, name: str, what: str, *, required: bool) -> int | None: ...
def _int(group: h5py.Group, name: str, what: str, *, required: bool = True) -> int | None:
    obj = _get(group, name, what, required=required)
    if obj is None:
        return None
    if obj.dtype.kind not in "iu" or obj.size != 1:
        raise DatasetError(f"{what}: expected an integer scalar, got dtype {obj.dtype} shape {obj.shape}")
    return int(_read(obj).reshape(-1)[0]) if obj.shape else int(_read(obj))


def detect_hdf5(p: Path) -> str:
    try:
        with h5py.File(p, "r") as h5:
            keys = set(h5.keys())
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise DatasetError(f"{p}: not a recognised dataset (unreadable HDF5 file: {exc})") from None
    if {"columns", "num_episodes", "version"} <= keys:
        return "d3rlpy"
    if "observations" in keys:
        return "d4rl"
    if any(k.startswith("episode_") for k in keys):
        if (p.parent / "metadata.json").is_file():
            return "minari"
        raise DatasetError(f"{p}: not a recognised dataset (Minari-style episodes but no metadata.json beside it)")
    raise DatasetError(
        f"{p}: not a recognised dataset (an HDF5 file without observations, "
        "d3rlpy columns/num_episodes/version or Minari episode groups)"
    )


def _episodes(ds: TransitionDataset) -> list[tuple[int, int]]:
    """(start, stop) of each episode; a trailing run without an end is its own episode."""
    stops = (ds.episode_ends + 1).tolist()
    if stops[-1] < ds.n_transitions:
        stops.append(ds.n_transitions)
    return list(zip([0, *stops[:-1]], stops, strict=True))


def _check_chained(ds: TransitionDataset, fmt: str) -> None:
    """Episode formats store one observation sequence: next_obs[i] must equal obs[i+1]."""
    inner = np.flatnonzero(~(ds.terminals | ds.timeouts)[:-1])
    for start in range(0, inner.size, 1 << 18):
        idx = inner[start : start + (1 << 18)]
        diff = np.any(ds.next_observations[idx] != ds.observations[idx + 1], axis=1)
        if diff.any():
            raise DatasetError(
                f"next_observations: differs from the following observation at index "
                f"{int(idx[np.argmax(diff)])} inside an episode; format {fmt!r} cannot store it"
            )


def _create(group: h5py.Group, name: str, data: Any, compressed: bool, **kw: Any) -> None:
    arr = np.asarray(data)
    if compressed and arr.ndim:
        kw = {"compression": "gzip", **kw}
    group.create_dataset(name, data=arr, **kw)


# ----------------------------------------------------------------------------- D4RL

D4RL_PROPENSITIES = ("propensities", "action_probs")  # under infos/: the name we write, then an alias


def _d4rl_propensities(h5: h5py.File, budget: Budget) -> np.ndarray | None:
    """``infos/propensities`` or its alias ``infos/action_probs`` (budget charged); None if absent."""
    infos = _subgroup(h5, "infos")
    for name in D4RL_PROPENSITIES if infos is not None else ():
        obj = _dset(infos, name, f"infos/{name}", budget, required=False)
        if obj is not None:
            arr = _read(obj)
            check_column(f"infos/{name}", arr, "float")  # named as in the file (range checks follow)
            return arr
    return None


def load_d4rl(p: Path, budget: Budget, n_actions: int | None, *, max_actions: int = MAX_ACTIONS) -> TransitionDataset:
    with _open(p) as h5:
        objs = {name: _dset(h5, name, name, budget) for name in ("observations", "actions", "rewards", "terminals")}
        for name in ("timeouts", "next_observations", "episode_terminals"):
            objs[name] = _dset(h5, name, name, budget, required=False)
        fields = {name: _read(obj) for name, obj in objs.items() if obj is not None}
        fields["propensities"] = _d4rl_propensities(h5, budget)
        file_n = meta = None
        group = _get(h5, "metadata", "metadata", required=False, kind=h5py.Group)
        if group is not None:
            file_n = _int(group, "n_actions", "metadata/n_actions", required=False)
            text = _string(group, "merlion_meta", "metadata/merlion_meta")
            meta = DatasetMeta.from_dict(parse_json(text, "metadata/merlion_meta")) if text is not None else None
    episode_terminals = fields.pop("episode_terminals", None)
    if "timeouts" not in fields:  # d3rlpy v1 files: timeout = episode end that is not terminal
        term = check_column("terminals", fields["terminals"], "flag")
        ends = (
            np.zeros_like(term)
            if episode_terminals is None
            else check_column("episode_terminals", episode_terminals, "flag")
        )
        if ends.shape != term.shape:
            raise DatasetError(
                f"episode_terminals: length {ends.shape[0]} differs from terminals length {term.shape[0]}"
            )
        fields["timeouts"] = ends & ~term
    notes: dict[str, Any] = {}
    keep = None
    if "next_observations" not in fields:
        fields, keep, notes = derive_next_observations(fields)
    return from_arrays(
        fields,
        resolve_n_actions(file_n, n_actions),
        meta_with(meta, "d4rl", **notes),
        infer_n_actions=True,
        max_actions=max_actions,
        keep=keep,
    )


def save_d4rl(ds: TransitionDataset, p: Path, *, compressed: bool = False, **_: Any) -> None:
    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as h5:
            for name, arr in ds.arrays().items():
                _create(h5, name, arr, compressed)
            if ds.has_propensities:
                _create(h5.create_group("infos"), "propensities", ds.propensities, compressed)
            group = h5.create_group("metadata")
            group.create_dataset("n_actions", data=np.int64(ds.n_actions))
            group.create_dataset("merlion_meta", data=dump_json(ds.meta.to_dict()), dtype=h5py.string_dtype())

    atomic_write(p, write)


# ----------------------------------------------------------------------------- d3rlpy

D3RLPY_DROPPED = (
    "the final step of each of {k} episode(s) that did not terminate: it has no next observation, so no "
    "transition (d3rlpy counts T - 1 transitions in such an episode of T steps; the step's observation "
    "is kept as the previous transition's next observation, its action and reward are unused)"
)


def _d3rlpy_plan(h5: h5py.File, n_eps: int, budget: Budget) -> list[tuple[Any, Any, Any, bool]]:
    """Per episode: the observations/actions/rewards datasets (checked, budget charged) and its flag."""
    plan = []
    for i in range(n_eps):
        if f"observations_{i}" not in h5 and f"observations_{i}_0" in h5:
            raise DatasetError(f"observations_{i}: tuple observations are not supported")
        o, a, r = (_dset(h5, f"{k}_{i}", f"{k}_{i}", budget) for k in D3RLPY_COLUMNS[:3])
        flag = _get(h5, f"terminated_{i}", f"terminated_{i}")
        if flag.size != 1 or flag.dtype.kind not in "biuf":
            raise DatasetError(f"terminated_{i}: expected a boolean scalar")
        value = np.asarray(_read(flag)).reshape(-1)[0]
        if value not in (0, 1):
            raise DatasetError(f"terminated_{i}: {value.item()!r} is not a 0/1 flag")
        if (
            o.ndim != 2
            or a.shape[:1] != o.shape[:1]
            or r.shape[:1] != o.shape[:1]
            or a.shape[1:] not in ((), (1,))
            or r.shape[1:] not in ((), (1,))
        ):
            raise DatasetError(
                f"observations_{i}: shapes {o.shape}/{a.shape}/{r.shape} of observations/"
                "actions/rewards do not line up as [T, S]/[T(,1)]/[T(,1)]"
            )
        plan.append((o, a, r, bool(value)))
    return plan


def load_d3rlpy(p: Path, budget: Budget, n_actions: int | None, *, max_actions: int = MAX_ACTIONS) -> TransitionDataset:
    with _open(p) as h5:
        version = _string(h5, "version", "version", required=True)
        if version == "2.0" or not str(version).startswith("2."):
            raise DatasetError(f"version: d3rlpy dataset version {version!r} is not supported (expected 2.1)")
        cols = _get(h5, "columns", "columns")
        if cols.ndim != 1 or cols.shape[0] > 64 or h5py.check_string_dtype(cols.dtype) is None:
            raise DatasetError("columns: expected a short 1-D array of strings")
        columns = [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c) for c in _read(cols)]
        for col in D3RLPY_COLUMNS:
            if col not in columns:
                raise DatasetError(f"columns: {col!r} missing (columns are {columns})")
        n_eps = _int(h5, "num_episodes", "num_episodes")
        if not 0 < n_eps <= MAX_TRANSITIONS:
            raise DatasetError(f"num_episodes: {n_eps} outside [1, {MAX_TRANSITIONS}]")
        file_n, meta = meta_from_json(_string(h5, "merlion_meta", "merlion_meta"), "merlion_meta")
        ours = meta is not None  # then each unterminated episode ends in our appended successor step (action 0,
        #                          reward 0): no data, so not reported as dropped (still checked)
        n_known = resolve_n_actions(file_n, n_actions)
        check_n_actions_cap(n_known, max_actions)
        plan = _d3rlpy_plan(h5, n_eps, budget)
        dims = {o.shape[1] for o, *_ in plan}
        if len(dims) != 1:
            raise DatasetError(f"observations: episodes disagree on the observation dim ({sorted(dims)})")
        sizes = [o.shape[0] if term else o.shape[0] - 1 for o, _, _, term in plan]
        n, s = int(np.sum(np.maximum(sizes, 0))), dims.pop()
        n_term = sum(term for *_, term in plan)
        extra = _dset(
            h5, "merlion_terminal_next_observations", "merlion_terminal_next_observations", budget, required=False
        )
        if extra is not None and extra.shape != (n_term, s):
            raise DatasetError(
                f"merlion_terminal_next_observations: shape {extra.shape} does not match "
                f"{n_term} terminated episodes of dim {s}"
            )
        term_next = _read(extra) if extra is not None else None
        if term_next is not None:
            check_column("merlion_terminal_next_observations", term_next, "float")
        probs = _dset(h5, "merlion_propensities", "merlion_propensities", budget, required=False)
        if probs is not None and probs.shape != (n,):
            raise DatasetError(f"merlion_propensities: shape {probs.shape} does not match the {n} transitions read")
        dt = np.result_type(*[o.dtype for o, *_ in plan])
        f = {
            "observations": np.empty((n, s), dt),
            "next_observations": np.empty((n, s), dt),
            "actions": np.empty(n, np.result_type(*[a.dtype for _, a, _, _ in plan])),
            "rewards": np.empty(n, np.result_type(*[r.dtype for _, _, r, _ in plan])),
            "terminals": np.zeros(n, bool),
            "timeouts": np.zeros(n, bool),
        }
        k = j = dropped = 0
        top = -1
        for i, ((o, a, r, term), size) in enumerate(zip(plan, sizes, strict=True)):
            obs, act, rew = _read(o), _read(a).reshape(-1), _read(r).reshape(-1)
            check_column(f"observations_{i}", obs, "float")  # every step, the dropped one included
            top = max(top, check_column(f"actions_{i}", act, "actions", n_actions=n_known, max_actions=max_actions))
            check_column(f"rewards_{i}", rew, "float")
            if not term and obs.shape[0] and not (ours and act[-1] == 0 and rew[-1] == 0):
                dropped += 1
            if size <= 0:
                continue
            f["observations"][k : k + size] = obs[:size]
            f["next_observations"][k : k + size - 1] = obs[1:size]
            f["actions"][k : k + size] = act[:size]
            f["rewards"][k : k + size] = rew[:size]
            if term:
                f["next_observations"][k + size - 1] = term_next[j] if term_next is not None else obs[-1]
                f["terminals"][k + size - 1] = True
            else:
                f["next_observations"][k + size - 1] = obs[size]
                f["timeouts"][k + size - 1] = True
            j += term
            k += size
        if probs is not None:
            f["propensities"] = _read(probs)
            check_column("merlion_propensities", f["propensities"], "propensities")
    notes: dict[str, Any] = {}
    if n_known is None and n:  # inferred from every step read, the dropped ones included
        n_known, notes["n_actions_inferred"] = top + 1, True
    if dropped:
        notes.update(dropped_rows=dropped, dropped_reason=D3RLPY_DROPPED.format(k=dropped))
    return from_arrays(f, n_known, meta_with(meta, "d3rlpy", **notes), infer_n_actions=True, max_actions=max_actions)


def save_d3rlpy(ds: TransitionDataset, p: Path, *, compressed: bool = False, **_: Any) -> None:
    episodes = _episodes(ds)
    _check_chained(ds, "d3rlpy")

    def write(tmp: Path) -> None:
        term_next = []
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("columns", data=list(D3RLPY_COLUMNS), dtype=h5py.string_dtype())
            h5.create_dataset("num_episodes", data=len(episodes))
            for i, (a, b) in enumerate(episodes):
                obs, act, rew = ds.observations[a:b], ds.actions[a:b], ds.rewards[a:b]
                terminated = bool(ds.terminals[b - 1])
                if terminated:
                    term_next.append(ds.next_observations[b - 1])
                else:  # d3rlpy drops an unterminated episode's last step: append the successor
                    obs = np.concatenate([obs, ds.next_observations[b - 1 : b]])
                    act, rew = np.append(act, 0), np.append(rew, np.float32(0))
                _create(h5, f"observations_{i}", obs, compressed)
                _create(h5, f"actions_{i}", act.reshape(-1, 1), compressed)
                _create(h5, f"rewards_{i}", rew.reshape(-1, 1), compressed)
                h5.create_dataset(f"terminated_{i}", data=terminated)
            h5.create_dataset("version", data=D3RLPY_VERSION, dtype=h5py.string_dtype())
            h5.create_dataset("merlion_meta", data=merlion_json(ds), dtype=h5py.string_dtype())
            h5.create_dataset(
                "merlion_terminal_next_observations", data=np.asarray(term_next, np.float32).reshape(-1, ds.obs_dim)
            )
            if ds.has_propensities:  # flat, in our transition order; d3rlpy's load ignores it
                _create(h5, "merlion_propensities", ds.propensities, compressed)

    atomic_write(p, write)
