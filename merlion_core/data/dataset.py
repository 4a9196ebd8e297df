"""Logged transition datasets: the core data contract of MERLION Studio.

A :class:`TransitionDataset` is a frozen bundle of flat, transition-aligned numpy arrays
(D4RL naming), optionally the behaviour policy's probability of each logged action
(``propensities``), plus the number of discrete actions and a :class:`DatasetMeta`. Building
one validates it: every problem raises :class:`DatasetError` with a one-line message
that starts with the offending field. Validation is vectorised (chunked for very large
arrays) and never copies valid data, so memory-mapped arrays stay memory-mapped; its rules
live in :mod:`merlion_core.data.validation` (re-exported here).
:func:`from_arrays` is the lenient entry point used by the loaders: it coerces the safe
cases (dtype widening/narrowing, 0/1 flags, integral float action ids) first, applies the
action-count cap (``MAX_ACTIONS``) and can check every row of a file before dropping some.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

# The value rules live in .validation (the lowest layer); their names are re-exported here.
from .validation import (  # noqa: F401
    _CHUNK,
    DTYPES,
    FIELDS,
    MAX_ACTIONS,
    MAX_OBS_DIM,
    MAX_TRANSITIONS,
    OPTIONAL_FIELDS,
    DatasetError,
    _check_fields,
    _check_propensities,
    _coerce_actions,
    _coerce_flag,
    _coerce_float,
    _coerce_propensities,
    _first,
    _scan_nonfinite,
    check_action_ids,
    check_column,
    check_max_actions,
    check_n_actions_cap,
)

SCHEMA_VERSION = 1


_META_TYPES: dict[str, tuple[type, ...]] = {
    "env_id": (str, type(None)),
    "env_config": (dict,),
    "behaviour": (str, type(None)),
    "noise": (float, int, type(None)),
    "seed": (int, type(None)),
    "expert_return": (float, int, type(None)),
    "random_return": (float, int, type(None)),
    "schema_version": (int,),
    "source_format": (str,),
    "extra": (dict,),
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
                raise DatasetError(
                    f"meta.{name}: expected {' or '.join(t.__name__ for t in types)}, "
                    f"got {type(value).__name__} {value!r:.60}"
                )
            if isinstance(value, float) and not np.isfinite(value):
                raise DatasetError(f"meta.{name}: must be finite, got {value!r}")
        if self.noise is not None and not 0.0 <= self.noise <= 1.0:
            raise DatasetError(f"meta.noise: must be in [0, 1], got {self.noise!r}")
        if self.schema_version > SCHEMA_VERSION:
            raise DatasetError(
                f"meta.schema_version: {self.schema_version} is newer than the "
                f"supported schema {SCHEMA_VERSION}; upgrade MERLION Studio"
            )

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


def validate(dataset: TransitionDataset, *, max_actions: int | None = MAX_ACTIONS) -> None:
    """Raise :class:`DatasetError` (one line, naming the field) unless ``dataset`` is valid.

    ``max_actions`` caps ``n_actions`` (None: no cap; building a dataset does not apply it, the
    loaders and :func:`from_arrays` do)."""
    if max_actions is not None:
        max_actions = check_max_actions(max_actions)
    _check_fields(
        {name: getattr(dataset, name) for name in (*FIELDS, *OPTIONAL_FIELDS)}, dataset.n_actions, max_actions
    )
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
        validate(self, max_actions=None)
        object.__setattr__(self, "n_actions", int(self.n_actions))

    def __repr__(self) -> str:
        return (
            f"TransitionDataset(n_transitions={self.n_transitions}, obs_dim={self.obs_dim}, "
            f"n_actions={self.n_actions}, n_episodes={self.n_episodes}, "
            f"source_format={self.meta.source_format!r}"
            f"{', propensities' if self.has_propensities else ''})"
        )

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
        """sha256 (hex) of the transitions and ``n_actions``: the same data loaded from any path or format
        has the same digest. Meta (such as the source format) and the logged propensities are left out:
        they change nothing an agent or encoder trains on, so data collected again with the same settings
        keeps the digest (and the benchmark's records) it had before propensities were recorded."""
        digest = hashlib.sha256(f"merlion-transitions/1 n_actions={self.n_actions}".encode())
        for name in FIELDS:
            array = np.ascontiguousarray(getattr(self, name))
            digest.update(f"|{name}:{array.dtype.str}:{array.shape}|".encode())
            digest.update(array.data.cast("B"))  # ndarray.data is memoryview(array)
        return digest.hexdigest()

    def distinct_actions(self) -> int:
        if self.n_actions <= 4 * self.n_transitions:
            return int(np.count_nonzero(np.bincount(self.actions, minlength=self.n_actions)))
        return int(np.unique(self.actions).size)

    def normalised_score(self, returns: Any) -> Any:
        """D4RL normalised score ``100 * (R - R_random) / (R_expert - R_random)``."""
        hi, lo = self.meta.expert_return, self.meta.random_return
        if hi is None:
            raise DatasetError("meta.expert_return: missing normaliser; cannot compute a normalised score")
        if lo is None:
            raise DatasetError("meta.random_return: missing normaliser; cannot compute a normalised score")
        if hi == lo:
            raise DatasetError(f"meta.expert_return: equals meta.random_return ({hi}); cannot normalise")
        score = 100.0 * (np.asarray(returns, dtype=np.float64) - lo) / (hi - lo)
        return float(score) if score.ndim == 0 else score

    def subset(self, indices: Any) -> TransitionDataset:
        """A new dataset of the selected transitions (copies; must still hold an episode end)."""
        idx = np.asarray(indices)
        # only array fields change; dict[str, Any] lets them through replace()'s per-field signature
        changes: dict[str, Any] = {
            name: np.ascontiguousarray(getattr(self, name)[idx]) for name in self.arrays(optional=True)
        }
        return dataclasses.replace(self, **changes)

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
        return all(
            getattr(self, k).dtype == getattr(other, k).dtype and np.array_equal(getattr(self, k), getattr(other, k))
            for k in self.arrays(optional=True)
        )


def from_arrays(
    fields: Mapping[str, Any],
    n_actions: int | None = None,
    meta: DatasetMeta | Mapping | None = None,
    *,
    infer_n_actions: bool = False,
    max_actions: int = MAX_ACTIONS,
    keep: np.ndarray | None = None,
) -> TransitionDataset:
    """Coerce safe cases, then build (and so validate) a :class:`TransitionDataset`.

    Coercions: numeric observations/rewards -> float32 (float64 must be finite and within
    float32); integer actions -> int64, float actions whose values are all integral -> int64;
    bool/0/1 flags -> bool; ``[N, 1]`` columns -> ``[N]``; optional numeric ``propensities`` ->
    float32 (absent or None: no propensities). When ``n_actions`` is None and
    ``infer_n_actions`` is True it becomes ``max id + 1`` and ``meta.extra`` records
    ``"n_actions_inferred": True``. ``n_actions``, given or inferred, above ``max_actions``
    (default ``MAX_ACTIONS``) is refused. ``keep`` (bool [N]) selects the rows that become
    transitions: every row is checked first (finite values, action ids, propensities; errors
    index the rows given) and ``n_actions`` is inferred from all of them. Arrays already of
    the right dtype are not copied (unless ``keep`` drops rows).
    """
    max_actions = check_max_actions(max_actions)
    check_n_actions_cap(n_actions, max_actions)
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
    n_rows = lengths["observations"]
    assert n_rows is not None  # the loop above raised for a scalar observations array
    for name in ("observations", "next_observations", "rewards"):
        out[name] = _coerce_float(name, out[name])
    out["actions"] = _coerce_actions(out["actions"])
    for name in ("terminals", "timeouts"):
        out[name] = _coerce_flag(name, out[name])
    if fields.get("propensities") is not None:
        out["propensities"] = _coerce_propensities(fields["propensities"], n_rows)
    ids = out["actions"]  # every row's: n_actions is inferred from them, dropped or not
    if keep is not None:
        out = _keep_rows(out, keep, n_actions, max_actions, meta)
    if n_actions is None:
        if not infer_n_actions:
            raise DatasetError("n_actions: not given (pass n_actions, or allow inference from the action ids)")
        if out["actions"].size == 0:
            raise DatasetError("observations: empty dataset (0 transitions)")
        n_actions = max(check_action_ids("actions", ids, None, max_actions), 0) + 1
        meta = dataclasses.replace(meta, extra={**meta.extra, "n_actions_inferred": True})
    return TransitionDataset(**out, n_actions=n_actions, meta=meta)


def _keep_rows(
    out: dict[str, np.ndarray], keep: Any, n_actions: Any, max_actions: int, meta: DatasetMeta
) -> dict[str, np.ndarray]:
    """Check every row (value rules, file indexing), then keep the selected ones."""
    n = out["observations"].shape[0]
    keep = np.asarray(keep)
    if keep.dtype != np.bool_ or keep.shape != (n,):
        raise DatasetError(f"keep: expected a bool mask of shape ({n},), got {keep.dtype} {keep.shape}")
    for name in ("observations", "next_observations", "rewards"):
        _scan_nonfinite(name, out[name])
    check_action_ids("actions", out["actions"], n_actions, max_actions)
    if out.get("propensities") is not None:
        check_column("propensities", out["propensities"], "propensities")
    if not keep.any():
        reason = meta.extra.get("dropped_reason")
        raise DatasetError(
            f"observations: empty dataset: all {n} rows were dropped"
            + (f" ({reason})" if isinstance(reason, str) else "")
        )
    return out if keep.all() else {name: np.ascontiguousarray(arr[keep]) for name, arr in out.items()}
