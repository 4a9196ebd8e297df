"""The value rules of transition datasets: caps, dtypes, finiteness, action ids, flags, propensities.

The lowest layer of :mod:`merlion_core.data`: :class:`DatasetError`, the caps and the array
checks that :mod:`merlion_core.data.dataset` (which re-exports all of it) and the file readers
apply. Every check is vectorised (chunked for very large arrays), never copies valid data and
raises :class:`DatasetError` with a one-line message that starts with the offending field.
:func:`check_column` applies the value rules to one array exactly as a file stores it, so
that a reader can check every row before it drops or regroups any, and name the array and
index the way the file does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

MAX_TRANSITIONS = 50_000_000
MAX_OBS_DIM = 100_000
MAX_ACTIONS = 10_000_000  # default cap on n_actions (given or inferred); load_dataset(max_actions=...) raises it
FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
OPTIONAL_FIELDS = ("propensities",)
DTYPES = {
    "observations": np.float32,
    "actions": np.int64,
    "rewards": np.float32,
    "next_observations": np.float32,
    "terminals": np.bool_,
    "timeouts": np.bool_,
    "propensities": np.float32,
}
_CHUNK = 1 << 22  # elements per block when scanning big arrays
_F32_MAX = float(np.finfo(np.float32).max)


class DatasetError(ValueError):
    """Any dataset validation or IO problem; ``str(err)`` is always one line."""

    def __init__(self, message: object = "") -> None:
        super().__init__(" ".join(str(message).split()))


def _first(mask: np.ndarray) -> tuple[int, int]:
    """(count, first index) of True entries of a 1-D mask."""
    idx = np.flatnonzero(mask)
    return int(idx.size), int(idx[0]) if idx.size else -1


def _scan_nonfinite(name: str, arr: np.ndarray, *, base: int = 0, f32: bool = False) -> None:
    """Raise if ``arr`` holds NaN/inf (or, with ``f32``, values float32 cannot hold); scans in row
    blocks so big memmaps stay cheap. Indices are rows of ``arr`` plus ``base``."""
    if arr.dtype.kind != "f" or arr.size == 0:
        return
    f32 = f32 and arr.dtype.itemsize > 4
    rows = max(1, _CHUNK // max(1, int(np.prod(arr.shape[1:], dtype=np.int64))))
    counts, firsts = [0, 0], [-1, -1]
    for start in range(0, arr.shape[0], rows):
        block = arr[start : start + rows].reshape(min(rows, arr.shape[0] - start), -1)
        finite = np.isfinite(block)
        masks = [~finite]
        if f32:
            with np.errstate(invalid="ignore"):
                masks.append(finite & (np.abs(block) > _F32_MAX))
        for k, bad in enumerate(masks):
            n = int(np.count_nonzero(bad))
            if n and firsts[k] < 0:
                firsts[k] = start + int(np.flatnonzero(bad.any(axis=1))[0])
            counts[k] += n
    if counts[0]:
        raise DatasetError(f"{name}: {counts[0]} non-finite value(s) (NaN or inf), first at index {base + firsts[0]}")
    if counts[1]:
        raise DatasetError(
            f"{name}: {counts[1]} value(s) beyond the float32 range (|x| > {_F32_MAX:.4g}), "
            f"first at index {base + firsts[1]}"
        )


def cap_text(max_actions: int) -> str:
    return f"the action-count cap max_actions={max_actions}{' (MAX_ACTIONS)' if max_actions == MAX_ACTIONS else ''}"


def check_max_actions(max_actions: Any) -> int:
    if isinstance(max_actions, (bool, np.bool_)) or not isinstance(max_actions, (int, np.integer)) or max_actions < 2:
        raise DatasetError(f"max_actions: expected an int >= 2, got {max_actions!r:.40}")
    return int(max_actions)


def check_n_actions_cap(n_actions: Any, max_actions: int) -> None:
    """Refuse a given (stored or requested) ``n_actions`` above the cap; type checks are validation's."""
    if (
        isinstance(n_actions, (int, np.integer))
        and not isinstance(n_actions, (bool, np.bool_))
        and n_actions > max_actions
    ):
        raise DatasetError(
            f"n_actions: {int(n_actions)} exceeds {cap_text(max_actions)}; pass "
            f"max_actions={int(n_actions)} (or more: load_dataset(max_actions=...), --max-actions on the command line) "
            "if that many actions is intended"
        )


def check_action_ids(name: str, act: np.ndarray, n_actions: Any, max_actions: int | None, *, base: int = 0) -> int:
    """int64 ids: none negative, none >= ``n_actions`` (when an int) and none >= the cap. Returns max id."""
    if act.size == 0:
        return -1
    lo, hi = int(act.min()), int(act.max())
    known = isinstance(n_actions, (int, np.integer)) and not isinstance(n_actions, (bool, np.bool_))
    if lo < 0:
        count, first = _first(act < 0)
        raise DatasetError(
            f"{name}: {count} negative ids{f' out of range [0, {n_actions})' if known else ''} "
            f"(first at index {base + first}: {int(act[first])})"
        )
    if known and hi >= n_actions:
        count, first = _first(act >= n_actions)
        raise DatasetError(
            f"{name}: {count} ids out of range [0, {n_actions}) (first at index {base + first}: "
            f"{int(act[first])}); n_actions must be >= max id + 1 = {hi + 1}"
        )
    if max_actions is not None and hi >= max_actions:
        _, first = _first(act >= max_actions)
        raise DatasetError(
            f"{name}: id {int(act[first])} at index {base + first} implies n_actions >= "
            f"{int(act[first]) + 1}, which exceeds {cap_text(max_actions)}; pass max_actions="
            f"{hi + 1} (or more: load_dataset(max_actions=...), --max-actions on the command line) "
            "if that many actions is intended"
        )
    return hi


def check_column(
    name: str, arr: Any, kind: str, *, n_actions: Any = None, max_actions: int | None = MAX_ACTIONS, base: int = 0
) -> Any:
    """The value rules of one array as a file stores it (every row, before any is dropped).

    ``kind``: ``"float"`` (numeric; floats finite and within float32), ``"actions"``
    (integral ids in range; returns the max id), ``"flag"`` (0/1; returns the bool array) or
    ``"propensities"`` (a float column in [0, 1], never 0). ``[N, 1]`` columns count as [N].
    """
    arr = arr if isinstance(arr, np.ndarray) else np.asarray(arr)
    if arr.dtype.hasobject or arr.dtype.kind not in "biuf":
        raise DatasetError(f"{name}: dtype {arr.dtype} is not numeric")
    if kind != "float":
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise DatasetError(f"{name}: expected a 1-D array [N] or a column [N, 1], got shape {arr.shape}")
    if kind == "actions":
        return check_action_ids(name, _coerce_actions(arr, name, base=base), n_actions, max_actions, base=base)
    if kind == "flag":
        return _coerce_flag(name, arr, base=base)
    _scan_nonfinite(name, arr, base=base, f32=True)
    if kind == "propensities" and arr.size:
        bad = (arr <= 0) | (arr > 1)
        if bad.any():
            count, first = _first(bad)
            raise DatasetError(
                f"{name}: {count} value(s) outside (0, 1] (first at index {base + first}: "
                f"{float(arr[first])!r}); a probability of a logged action is in (0, 1]"
            )
    return None


def _check_fields(f: Mapping[str, Any], n_actions: Any, max_actions: int | None = None) -> None:
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
    if max_actions is not None:
        check_n_actions_cap(n_actions, max_actions)
    check_action_ids("actions", f["actions"], n_actions, None)
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
        raise DatasetError(
            f"propensities: {count} value(s) outside [0, 1] (first at index {first}: {float(p[first])!r})"
        )
    if lo == 0:
        count, first = _first(p == 0)
        raise DatasetError(
            f"propensities: {count} value(s) are 0 (first at index {first}); "
            "the logged action was taken, so its probability cannot be 0"
        )


# ----------------------------------------------------------------------------- coercions (from_arrays)


def _coerce_flag(name: str, arr: np.ndarray, *, base: int = 0) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind not in "iuf":
        raise DatasetError(f"{name}: dtype {arr.dtype} is not a flag type (bool or 0/1 numbers)")
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        count, first = _first(bad.reshape(-1))
        raise DatasetError(
            f"{name}: {count} value(s) not 0/1 (first at index {base + first}: {arr.reshape(-1)[first]!r})"
        )
    return arr != 0


def _coerce_actions(arr: np.ndarray, name: str = "actions", *, base: int = 0) -> np.ndarray:
    if arr.dtype == np.int64:
        return arr
    if arr.dtype.kind in "iub":
        if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            count, first = _first(arr > np.iinfo(np.int64).max)
            raise DatasetError(f"{name}: {count} ids out of range (first at index {base + first}: {int(arr[first])})")
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        with np.errstate(invalid="ignore", over="ignore"):  # float16: 2**62 is inf there, and so harmless
            bad = ~np.isfinite(arr) | (arr != np.round(arr)) | (np.abs(arr) > 2.0**62)
        if bad.any():
            count, first = _first(bad)
            raise DatasetError(
                f"{name}: {count} non-integral value(s), action ids must be integers "
                f"(first at index {base + first}: {arr[first]!r})"
            )
        return arr.astype(np.int64)
    raise DatasetError(f"{name}: dtype {arr.dtype} is not an integer type")


def _coerce_float(name: str, arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.float32:
        return arr
    if arr.dtype.kind not in "biuf":
        raise DatasetError(f"{name}: dtype {arr.dtype} is not numeric")
    _scan_nonfinite(name, arr, f32=True)  # report NaN/inf and overflow before narrowing hides the origin
    return arr.astype(np.float32)


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
