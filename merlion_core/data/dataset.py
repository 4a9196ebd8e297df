"""Logged transition datasets: the core data contract of MERLION Studio.

A :class:`TransitionDataset` is a frozen bundle of flat, transition-aligned numpy arrays
(D4RL naming), optionally the behaviour policy's probability of each logged action
(``propensities``), plus the number of discrete actions and a :class:`DatasetMeta`. Building
one validates it: every problem raises :class:`DatasetError` with a one-line message
that starts with the offending field. Validation is vectorised (chunked for very large
arrays) and never copies valid data, so memory-mapped arrays stay memory-mapped.
:func:`from_arrays` is the lenient entry point used by the loaders: it coerces the safe
cases (dtype widening/narrowing, 0/1 flags, integral float action ids) first.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
MAX_TRANSITIONS = 50_000_000
MAX_OBS_DIM = 100_000
FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
OPTIONAL_FIELDS = ("propensities",)
DTYPES = {"observations": np.float32, "actions": np.int64, "rewards": np.float32,
          "next_observations": np.float32, "terminals": np.bool_, "timeouts": np.bool_,
          "propensities": np.float32}
_CHUNK = 1 << 22  # elements per block when scanning big arrays


class DatasetError(ValueError):
    """Any dataset validation or IO problem; ``str(err)`` is always one line."""

    def __init__(self, message: object = "") -> None:
        super().__init__(" ".join(str(message).split()))


_META_TYPES: dict[str, tuple[type, ...]] = {
    "env_id": (str, type(None)), "env_config": (dict,), "behaviour": (str, type(None)),
    "noise": (float, int, type(None)), "seed": (int, type(None)),
    "expert_return": (float, int, type(None)), "random_return": (float, int, type(None)),
    "schema_version": (int,), "source_format": (str,), "extra": (dict,),
}


@dataclass(frozen=True)
class DatasetMeta:
    """Provenance of a dataset: environment, behaviour policy and score normalisers."""

    env_id: str | None = None
    env_config: dict = field(default_factory=dict)
    behaviour: str | None = None
    noise: float | None = None
    seed: int | None = None
    expert_return: float | None = None
    random_return: float | None = None
    schema_version: int = SCHEMA_VERSION
    source_format: str = "native"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, types in _META_TYPES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, types):
                raise DatasetError(f"meta.{name}: expected {' or '.join(t.__name__ for t in types)}, "
                                   f"got {type(value).__name__} {value!r:.60}")
            if isinstance(value, float) and not np.isfinite(value):
                raise DatasetError(f"meta.{name}: must be finite, got {value!r}")
        if self.noise is not None and not 0.0 <= self.noise <= 1.0:
            raise DatasetError(f"meta.noise: must be in [0, 1], got {self.noise!r}")
        if self.schema_version > SCHEMA_VERSION:
            raise DatasetError(f"meta.schema_version: {self.schema_version} is newer than the "
                               f"supported schema {SCHEMA_VERSION}; upgrade MERLION Studio")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Any) -> DatasetMeta:
        if not isinstance(d, Mapping):
            raise DatasetError(f"meta: expected a JSON object, got {type(d).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise DatasetError(f"meta: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return cls(**dict(d))


def _first(mask: np.ndarray) -> tuple[int, int]:
    """(count, first index) of True entries of a 1-D mask."""
    idx = np.flatnonzero(mask)
    return int(idx.size), int(idx[0]) if idx.size else -1


def _scan_nonfinite(name: str, arr: np.ndarray) -> None:
    """Raise if ``arr`` holds NaN/inf; scans in row blocks so big memmaps stay cheap."""
    rows = max(1, _CHUNK // max(1, int(np.prod(arr.shape[1:], dtype=np.int64))))
    count, first = 0, -1
    for start in range(0, arr.shape[0], rows):
        block = arr[start:start + rows]
        bad = ~np.isfinite(block).reshape(block.shape[0], -1)
        n = int(np.count_nonzero(bad))
        if n and first < 0:
            first = start + int(np.flatnonzero(bad.any(axis=1))[0])
        count += n
    if count:
        raise DatasetError(f"{name}: {count} non-finite value(s) (NaN or inf), first at index {first}")


def _check_fields(f: Mapping[str, Any], n_actions: Any) -> None:
    """All validation rules on already-typed arrays (exact dtypes required)."""
    for name in FIELDS:
        if name not in f or f[name] is None:
            raise DatasetError(f"{name}: required field missing")
        if not isinstance(f[name], np.ndarray):
            raise DatasetError(f"{name}: expected a numpy array, got {type(f[name]).__name__}")
        if f[name].dtype.hasobject or f[name].dtype.kind in "OV":
            raise DatasetError(f"{name}: dtype {f[name].dtype} is not allowed (object/void data is never read)")
    obs, nxt = f["observations"], f["next_observations"]
    if obs.ndim != 2:
        raise DatasetError(f"observations: expected a 2-D array [N, S], got shape {obs.shape}")
    n, s = obs.shape
    if n == 0:
        raise DatasetError("observations: empty dataset (0 transitions)")
    if n > MAX_TRANSITIONS:
        raise DatasetError(f"observations: {n} transitions exceed the cap of {MAX_TRANSITIONS} (MAX_TRANSITIONS)")
    if s == 0 or s > MAX_OBS_DIM:
        raise DatasetError(f"observations: observation dim {s} outside [1, {MAX_OBS_DIM}] (MAX_OBS_DIM)")
    if nxt.shape != obs.shape:
        raise DatasetError(f"next_observations: shape {nxt.shape} differs from observations shape {obs.shape}")
    for name in ("actions", "rewards", "terminals", "timeouts"):
        if f[name].ndim != 1:
            raise DatasetError(f"{name}: expected a 1-D array [N], got shape {f[name].shape}")
        if f[name].shape[0] != n:
            raise DatasetError(f"{name}: length {f[name].shape[0]} differs from observations length {n}")
    for name in FIELDS:
        if f[name].dtype != DTYPES[name]:
            raise DatasetError(f"{name}: dtype {f[name].dtype}, expected {np.dtype(DTYPES[name])}")
    for name in ("observations", "next_observations", "rewards"):
        _scan_nonfinite(name, f[name])
    if isinstance(n_actions, (bool, np.bool_)) or not isinstance(n_actions, (int, np.integer)):
        raise DatasetError(f"n_actions: expected an int, got {type(n_actions).__name__} {n_actions!r:.40}")
    if n_actions < 2:
        raise DatasetError(f"n_actions: must be >= 2, got {n_actions}")
    act = f["actions"]
    lo, hi = int(act.min()), int(act.max())
    if lo < 0 or hi >= n_actions:
        count, first = _first((act < 0) | (act >= n_actions))
        raise DatasetError(f"actions: {count} ids out of range [0, {n_actions}) (first at index {first}: "
                           f"{int(act[first])}); n_actions must be >= max id + 1 = {hi + 1}"
                           if hi >= n_actions else
                           f"actions: {count} negative ids out of range [0, {n_actions}) "
                           f"(first at index {first}: {int(act[first])})")
    term, tout = f["terminals"], f["timeouts"]
    both = term & tout
    if both.any():
        count, first = _first(both)
        raise DatasetError(f"timeouts: {count} transition(s) both terminal and timeout (first at index {first})")
    if not (term.any() or tout.any()):
        raise DatasetError("terminals: no episode boundary (terminals and timeouts are all False)")
    if f.get("propensities") is not None:
        _check_propensities(f["propensities"], n)


def _check_propensities(p: Any, n: int) -> None:
    """The optional behaviour probabilities: float32 [N], finite, in (0, 1]."""
    if not isinstance(p, np.ndarray):
        raise DatasetError(f"propensities: expected a numpy array or None, got {type(p).__name__}")
    if p.ndim != 1:
        raise DatasetError(f"propensities: expected a 1-D array [N], got shape {p.shape}")
    if p.shape[0] != n:
        raise DatasetError(f"propensities: length {p.shape[0]} differs from observations length {n}")
    if p.dtype != DTYPES["propensities"]:
        raise DatasetError(f"propensities: dtype {p.dtype}, expected float32")
    _scan_nonfinite("propensities", p)
    lo, hi = float(p.min()), float(p.max())
    if lo < 0 or hi > 1:
        count, first = _first((p < 0) | (p > 1))
        raise DatasetError(f"propensities: {count} value(s) outside [0, 1] "
                           f"(first at index {first}: {float(p[first])!r})")
    if lo == 0:
        count, first = _first(p == 0)
        raise DatasetError(f"propensities: {count} value(s) are 0 (first at index {first}); "
                           "the logged action was taken, so its probability cannot be 0")


def validate(dataset: TransitionDataset) -> None:
    """Raise :class:`DatasetError` (one line, naming the field) unless ``dataset`` is valid."""
    _check_fields({name: getattr(dataset, name) for name in (*FIELDS, *OPTIONAL_FIELDS)}, dataset.n_actions)
    if not isinstance(dataset.meta, DatasetMeta):
        raise DatasetError(f"meta: expected DatasetMeta, got {type(dataset.meta).__name__}")


@dataclass(frozen=True, eq=False)
class TransitionDataset:
    """Flat transitions ``(s, a, r, s', terminal, timeout)`` over ``n_actions`` discrete actions.

    ``propensities`` (optional, float32 [N] in (0, 1]): the behaviour policy's probability of
    the logged action at each transition, or None when unknown."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    n_actions: int
    meta: DatasetMeta = DatasetMeta()
    propensities: np.ndarray | None = None

    def __post_init__(self) -> None:
        validate(self)
        object.__setattr__(self, "n_actions", int(self.n_actions))

    def __repr__(self) -> str:
        return (f"TransitionDataset(n_transitions={self.n_transitions}, obs_dim={self.obs_dim}, "
                f"n_actions={self.n_actions}, n_episodes={self.n_episodes}, "
                f"source_format={self.meta.source_format!r}"
                f"{', propensities' if self.has_propensities else ''})")

    @property
    def has_propensities(self) -> bool:
        """Whether the behaviour probability of each logged action is recorded."""
        return self.propensities is not None

    @property
    def n_transitions(self) -> int:
        return int(self.observations.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @cached_property
    def episode_ends(self) -> np.ndarray:
        """int64 indices of the last transition of each completed episode."""
        return np.flatnonzero(self.terminals | self.timeouts).astype(np.int64)

    @property
    def n_episodes(self) -> int:
        return int(self.episode_ends.size)

    def episode_lengths(self) -> np.ndarray:
        return np.diff(self.episode_ends, prepend=-1).astype(np.int64)

    def episode_returns(self) -> np.ndarray:
        """float64 undiscounted return of each completed episode (trailing partial excluded)."""
        ends = self.episode_ends
        starts = np.concatenate(([0], ends[:-1] + 1))
        return np.add.reduceat(self.rewards[: ends[-1] + 1], starts, dtype=np.float64)

    def mean_return(self) -> float:
        return float(self.episode_returns().mean())

    def content_digest(self) -> str:
        """sha256 (hex) of the transitions, ``n_actions`` and the propensities when present: the same
        data loaded from any path or format has the same digest (meta, such as the source format,
        is left out; a dataset without propensities digests exactly as before they existed)."""
        digest = hashlib.sha256(f"merlion-transitions/1 n_actions={self.n_actions}".encode())
        for name in (*FIELDS, *(k for k in OPTIONAL_FIELDS if getattr(self, k) is not None)):
            array = np.ascontiguousarray(getattr(self, name))
            digest.update(f"|{name}:{array.dtype.str}:{array.shape}|".encode())
            digest.update(memoryview(array).cast("B"))
        return digest.hexdigest()

    def distinct_actions(self) -> int:
        if self.n_actions <= 4 * self.n_transitions:
            return int(np.count_nonzero(np.bincount(self.actions, minlength=self.n_actions)))
        return int(np.unique(self.actions).size)

    def normalised_score(self, returns: Any) -> Any:
        """D4RL normalised score ``100 * (R - R_random) / (R_expert - R_random)``."""
        hi, lo = self.meta.expert_return, self.meta.random_return
        for name, value in (("expert_return", hi), ("random_return", lo)):
            if value is None:
                raise DatasetError(f"meta.{name}: missing normaliser; cannot compute a normalised score")
        if hi == lo:
            raise DatasetError(f"meta.expert_return: equals meta.random_return ({hi}); cannot normalise")
        score = 100.0 * (np.asarray(returns, dtype=np.float64) - lo) / (hi - lo)
        return float(score) if score.ndim == 0 else score

    def subset(self, indices: Any) -> TransitionDataset:
        """A new dataset of the selected transitions (copies; must still hold an episode end)."""
        idx = np.asarray(indices)
        return dataclasses.replace(self, **{name: np.ascontiguousarray(getattr(self, name)[idx])
                                            for name in self.arrays(optional=True)})

    def arrays(self, optional: bool = False) -> dict[str, np.ndarray]:
        """The six required arrays by name; ``optional=True`` adds the optional ones that are present."""
        names = (*FIELDS, *(k for k in OPTIONAL_FIELDS if optional and getattr(self, k) is not None))
        return {name: getattr(self, name) for name in names}

    def equals(self, other: Any) -> bool:
        """Exact equality of every array (dtype and shape included), n_actions and meta."""
        if not isinstance(other, TransitionDataset) or other.n_actions != self.n_actions:
            return False
        if other.meta != self.meta:
            return False
        if any((getattr(self, k) is None) != (getattr(other, k) is None) for k in OPTIONAL_FIELDS):
            return False
        return all(getattr(self, k).dtype == getattr(other, k).dtype
                   and np.array_equal(getattr(self, k), getattr(other, k)) for k in self.arrays(optional=True))


def _coerce_flag(name: str, arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind not in "iuf":
        raise DatasetError(f"{name}: dtype {arr.dtype} is not a flag type (bool or 0/1 numbers)")
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        count, first = _first(bad.reshape(-1))
        raise DatasetError(f"{name}: {count} value(s) not 0/1 (first at index {first}: {arr.reshape(-1)[first]!r})")
    return arr != 0


def _coerce_actions(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.int64:
        return arr
    if arr.dtype.kind in "iub":
        if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            count, first = _first(arr > np.iinfo(np.int64).max)
            raise DatasetError(f"actions: {count} ids out of range (first at index {first}: {int(arr[first])})")
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(arr) | (arr != np.round(arr)) | (np.abs(arr) > 2.0**62)
        if bad.any():
            count, first = _first(bad)
            raise DatasetError(f"actions: {count} non-integral value(s), action ids must be integers "
                               f"(first at index {first}: {arr[first]!r})")
        return arr.astype(np.int64)
    raise DatasetError(f"actions: dtype {arr.dtype} is not an integer type")


def _coerce_float(name: str, arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.float32:
        return arr
    if arr.dtype.kind not in "biuf":
        raise DatasetError(f"{name}: dtype {arr.dtype} is not numeric")
    if arr.dtype.kind == "f":
        _scan_nonfinite(name, arr)  # report NaN/inf before narrowing hides the origin
    with np.errstate(over="ignore"):
        return arr.astype(np.float32)  # overflow to inf is caught by validation


def _coerce_propensities(arr: Any, n: int) -> np.ndarray:
    """Any numeric [N] or [N, 1] array -> float32 [N] (range checks are validation's)."""
    arr = arr if isinstance(arr, np.ndarray) else np.asarray(arr)
    if arr.dtype.hasobject or arr.dtype.kind not in "biuf":
        raise DatasetError(f"propensities: dtype {arr.dtype} is not allowed (numeric probabilities only)")
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DatasetError(f"propensities: expected a 1-D array [N], got shape {arr.shape}")
    if arr.shape[0] != n:
        raise DatasetError(f"propensities: length {arr.shape[0]} differs from observations length {n}")
    return _coerce_float("propensities", arr)


def from_arrays(fields: Mapping[str, Any], n_actions: int | None = None,
                meta: DatasetMeta | Mapping | None = None, *,
                infer_n_actions: bool = False) -> TransitionDataset:
    """Coerce safe cases, then build (and so validate) a :class:`TransitionDataset`.

    Coercions: numeric observations/rewards -> float32 (float64 must be finite); integer
    actions -> int64, float actions whose values are all integral -> int64; bool/0/1
    flags -> bool; ``[N, 1]`` columns -> ``[N]``; optional numeric ``propensities`` -> float32
    (absent or None: no propensities). When ``n_actions`` is None and
    ``infer_n_actions`` is True it becomes ``max id + 1`` and ``meta.extra`` records
    ``"n_actions_inferred": True``. Arrays already of the right dtype are not copied.
    """
    if meta is None:
        meta = DatasetMeta()
    elif not isinstance(meta, DatasetMeta):
        meta = DatasetMeta.from_dict(meta)
    out: dict[str, np.ndarray] = {}
    for name in FIELDS:
        if name not in fields or fields[name] is None:
            raise DatasetError(f"{name}: required field missing")
        arr = fields[name]
        if not isinstance(arr, np.ndarray):
            arr = np.asarray(arr)
        if arr.dtype.hasobject or arr.dtype.kind in "OVUSMm":
            raise DatasetError(f"{name}: dtype {arr.dtype} is not allowed (object/void/string data is never read)")
        if name not in ("observations", "next_observations") and arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        out[name] = arr
    lengths = {name: a.shape[0] if a.ndim else None for name, a in out.items()}
    for name, length in lengths.items():
        if length is None:
            raise DatasetError(f"{name}: expected an array with a leading [N] axis, got a scalar")
        if length != lengths["observations"] and name != "observations":
            raise DatasetError(f"{name}: length {length} differs from observations length {lengths['observations']}")
    for name in ("observations", "next_observations", "rewards"):
        out[name] = _coerce_float(name, out[name])
    out["actions"] = _coerce_actions(out["actions"])
    for name in ("terminals", "timeouts"):
        out[name] = _coerce_flag(name, out[name])
    if fields.get("propensities") is not None:
        out["propensities"] = _coerce_propensities(fields["propensities"], lengths["observations"])
    if n_actions is None:
        if not infer_n_actions:
            raise DatasetError("n_actions: not given (pass n_actions, or allow inference from the action ids)")
        if out["actions"].size == 0:
            raise DatasetError("observations: empty dataset (0 transitions)")
        n_actions = int(out["actions"].max()) + 1
        meta = dataclasses.replace(meta, extra={**meta.extra, "n_actions_inferred": True})
    return TransitionDataset(**out, n_actions=n_actions, meta=meta)
