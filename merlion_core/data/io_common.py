"""Shared low-level primitives of the dataset readers and writers.

Used by :mod:`merlion_core.data.io` (detection, native format, entry points),
:mod:`merlion_core.data.io_npz` and :mod:`merlion_core.data.io_hdf5`: the byte
:class:`Budget`, dtype checks, bounded JSON reading, ``.npy`` header parsing, the
merlion metadata block, atomic writes and the derivation of ``next_observations``.
This module imports nothing from the format modules.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.lib.format as npformat

from .dataset import DatasetError, DatasetMeta, TransitionDataset, _coerce_flag

MAX_META_BYTES = 1 << 20  # meta.json / meta_json / merlion_meta text
MAX_JSON_BYTES = 64 << 20  # Minari metadata.json (spaces may list per-dim bounds)
MAX_NPY_HEADER = 10_000


class Budget:
    """Bytes of array data still allowed from one file or directory."""

    def __init__(self, max_bytes: Any) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 0:
            raise DatasetError(f"max_bytes: expected a non-negative int, got {max_bytes!r:.40}")
        self.max_bytes, self.used = int(max_bytes), 0

    def take(self, nbytes: int, what: str) -> None:
        if self.used + nbytes > self.max_bytes:
            raise DatasetError(
                f"{what}: {nbytes} bytes of array data exceed the cap max_bytes={self.max_bytes}"
                f" ({self.used} bytes already taken by other fields)"
            )
        self.used += nbytes

    @property
    def left(self) -> int:
        return self.max_bytes - self.used


def check_dtype(dtype: np.dtype, what: str, kinds: str = "biuf") -> None:
    """Refuse object, void/structured, string and other non-numeric dtypes."""
    if dtype.hasobject or dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None:
        raise DatasetError(f"{what}: dtype {dtype} is not allowed (numeric arrays only; objects are never unpickled)")


def read_json(path: Path, what: str, cap: int = MAX_META_BYTES) -> Any:
    if path.is_symlink() or not path.is_file():
        raise DatasetError(f"{what}: missing or not a regular file")
    if path.stat().st_size > cap:
        raise DatasetError(f"{what}: {path.stat().st_size} bytes exceed the {cap}-byte cap for metadata")
    return parse_json(path.read_bytes(), what)


def parse_json(raw: bytes | str, what: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise DatasetError(f"{what}: invalid JSON ({exc})") from None


def resolve_n_actions(in_file: Any, requested: int | None) -> Any:
    """The caller's n_actions wins only if the file is silent; a disagreement is an error."""
    if in_file is not None and requested is not None and in_file != requested:
        raise DatasetError(f"n_actions: the file says {in_file} but n_actions={requested} was requested")
    return requested if requested is not None else in_file


def meta_with(meta: DatasetMeta | None, source_format: str, **extra: Any) -> DatasetMeta:
    meta = meta or DatasetMeta()
    return dataclasses.replace(meta, source_format=source_format, extra={**meta.extra, **extra})


def meta_from_json(text: str | None, what: str) -> tuple[Any, DatasetMeta | None]:
    """Parse a ``{"n_actions": int, "meta": {...}}`` document (the merlion metadata block)."""
    if text is None:
        return None, None
    doc = parse_json(text, what) if isinstance(text, (str, bytes)) else text
    if not isinstance(doc, dict) or set(doc) - {"n_actions", "meta"}:
        raise DatasetError(f"{what}: expected an object with keys n_actions and meta")
    return doc.get("n_actions"), DatasetMeta.from_dict(doc.get("meta", {}))


def merlion_json(ds: TransitionDataset) -> str:
    return dump_json({"n_actions": ds.n_actions, "meta": ds.meta.to_dict()})


def dump_json(doc: Any) -> str:
    try:
        return json.dumps(doc, sort_keys=True, indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"meta: not JSON-serialisable ({exc})") from None


def atomic_write(path: Path, writer: Callable[[Path], object]) -> None:
    """Write via a sibling temp file then rename, so readers (and memmaps) never see a half file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def derive_next_observations(fields: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray, dict[str, Any]]:
    """Fill in ``next_observations`` for files that lack it (D4RL convention).

    Within an episode ``next_obs[i] = obs[i + 1]``. A terminal step keeps its own
    observation as next observation (absorbing convention; masked by the terminal flag).
    A timeout step, and a final step of the file that is not an episode end, has no
    successor in the file: it is dropped, and its predecessor in the same episode becomes
    the timeout. Nothing is dropped here: returns every row (fields with next_observations
    and the new timeouts), the bool mask of the rows to keep, for ``from_arrays(keep=...)``
    which checks every row first, and the notes for ``meta.extra`` (``dropped_rows`` and
    ``dropped_reason`` when rows are dropped).
    """
    obs = np.asarray(fields["observations"])
    if obs.ndim != 2:
        raise DatasetError(f"observations: expected a 2-D array [N, S], got shape {obs.shape}")
    n = obs.shape[0]
    if n == 0:
        raise DatasetError("observations: empty dataset (0 transitions)")
    flags = {}
    for name in ("terminals", "timeouts"):
        arr = np.asarray(fields[name])
        arr = arr[:, 0] if arr.ndim == 2 and arr.shape[1] == 1 else arr
        if arr.ndim != 1 or arr.shape[0] != n:
            raise DatasetError(f"{name}: shape {arr.shape} does not match observations length {n}")
        flags[name] = _coerce_flag(name, arr)
    term, tout = flags["terminals"], flags["timeouts"]
    ends = term | tout
    drop = tout.copy()
    drop[-1] |= not term[-1]
    prev = np.flatnonzero(drop) - 1
    prev = prev[prev >= 0]
    prev = prev[~ends[prev]]
    new_tout = tout.copy()
    new_tout[prev] = True
    nxt = np.empty_like(obs)
    nxt[:-1] = obs[1:]
    nxt[-1] = obs[-1]  # dropped unless terminal (then it is its own next observation, as below)
    nxt[term] = obs[term]
    out = dict(fields, next_observations=nxt, terminals=term, timeouts=new_tout)
    notes: dict[str, Any] = {"next_observations_derived": True}
    n_drop = int(np.count_nonzero(drop))
    if n_drop:
        n_tout, open_end = int(np.count_nonzero(tout)), not ends[-1]
        parts = (
            [f"the last row of each of {n_tout} episode(s) ending in a timeout (the next row starts a new episode)"]
            if n_tout
            else []
        ) + (["the file's final row (it ends no episode)"] if open_end else [])
        notes.update(
            dropped_rows=n_drop,
            dropped_reason=f"{' and '.join(parts)}: no next observation in the file "
            "(next_observations derived from observations)",
        )
    return out, ~drop, notes


def _npy_header(fp: Any, what: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = npformat.read_magic(fp)
        if version == (1, 0):
            return npformat.read_array_header_1_0(fp, max_header_size=MAX_NPY_HEADER)
        if version == (2, 0):
            return npformat.read_array_header_2_0(fp, max_header_size=MAX_NPY_HEADER)
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - numpy raises ValueError, SyntaxError, TokenError...
        raise DatasetError(f"{what}: not a valid .npy array ({type(exc).__name__}: {exc})") from None
    raise DatasetError(f"{what}: unsupported .npy format version {version}")
