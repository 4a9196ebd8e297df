"""Reading and writing transition datasets: detection, native format and entry points.

Entry points: :func:`detect_format`, :func:`load_dataset`, :func:`save_dataset`,
:func:`convert`. The npz format lives in :mod:`merlion_core.data.io_npz`, the HDF5-based
formats in :mod:`merlion_core.data.io_hdf5` (D4RL, d3rlpy) and :mod:`merlion_core.data.io_minari`,
and the primitives they share in :mod:`merlion_core.data.io_common`. See ``docs/formats.md``
for every layout.

Safety rules applied to every input: nothing is ever unpickled (``allow_pickle=False``;
object/void/string arrays are refused before their data is read); the declared size of
every array is checked against ``max_bytes`` before it is read; zip members are inflated
by a bounded streaming reader that counts bytes and stops as soon as a member outgrows its
declared size; HDF5 datasets must store what they declare; symlinks inside dataset
directories are not followed. Every row of every array read is checked, also the rows a
reader drops (recorded in ``meta.extra["dropped_rows"]``/``["dropped_reason"]``), and
``n_actions`` is capped (``max_actions``, default ``MAX_ACTIONS``). Any problem raises
:class:`DatasetError` whose one-line message starts with the path.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.lib.format as npformat

from .dataset import (
    FIELDS,
    MAX_ACTIONS,
    OPTIONAL_FIELDS,
    SCHEMA_VERSION,
    DatasetError,
    DatasetMeta,
    TransitionDataset,
    check_max_actions,
    check_n_actions_cap,
    from_arrays,
)

# Re-exported: these names lived in this module before the split; existing imports from io keep working.
from .io_common import (  # noqa: F401
    MAX_JSON_BYTES,
    MAX_META_BYTES,
    MAX_NPY_HEADER,
    Budget,
    _npy_header,
    atomic_write,
    check_dtype,
    derive_next_observations,
    dump_json,
    merlion_json,
    meta_from_json,
    meta_with,
    parse_json,
    read_json,
    resolve_n_actions,
)
from .io_npz import (  # noqa: F401
    _NPZ_KEYS,
    _READ_BLOCK,
    MAX_ZIP_MEMBERS,
    _load_npz,
    _MemberStream,
    _open_zip,
    _read_member,
    _save_npz,
)

DEFAULT_MAX_BYTES = 4 * 1024**3
FORMATS = ("native", "npz", "d4rl", "minari", "d3rlpy")
NATIVE_TAG = "merlion-dataset"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


# ----------------------------------------------------------------------------- detection


def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as f:
        for offset in (0, 512, 1024, 2048):
            f.seek(offset)
            if f.read(8) == HDF5_MAGIC:
                return True
    return False


def _detect(p: Path) -> str:
    if not p.exists():
        raise DatasetError(f"{p}: not a recognised dataset (no such file or directory)")
    if p.is_dir():
        meta = p / "meta.json"
        if meta.is_file() and not meta.is_symlink():
            doc = read_json(meta, f"{p}/meta.json")
            if isinstance(doc, dict) and doc.get("format") == NATIVE_TAG:
                return "native"
        for d in (p / "data", p):
            if (d / "metadata.json").is_file() and (d / "main_data.hdf5").is_file():
                return "minari"
        raise DatasetError(
            f"{p}: not a recognised dataset (a directory with neither a MERLION meta.json "
            "nor a Minari data/metadata.json + main_data.hdf5)"
        )
    with open(p, "rb") as f:
        head = f.read(8)
    if head[:4] in ZIP_MAGICS:
        with _open_zip(p) as zf:
            if "observations.npy" in zf.namelist():
                return "npz"
        raise DatasetError(f"{p}: not a recognised dataset (a zip archive without observations.npy)")
    if _is_hdf5(p):
        from .io_hdf5 import detect_hdf5

        return detect_hdf5(p)
    if head[:6] == b"\x93NUMPY":
        raise DatasetError(f"{p}: not a recognised dataset (a single .npy array; use a native directory or .npz)")
    raise DatasetError(
        f"{p}: not a recognised dataset (unknown content; expected a native directory, "
        ".npz, D4RL/d3rlpy HDF5 or a Minari dataset)"
    )


def _prefixed(path: Path, exc: BaseException) -> DatasetError:
    msg = str(exc)
    if isinstance(exc, DatasetError):
        return exc if msg.startswith(str(path)) else DatasetError(f"{path}: {msg}")
    return DatasetError(f"{path}: {type(exc).__name__}: {msg}")


def detect_format(path: str | os.PathLike) -> str:
    """Name the format of ``path`` from its content (never its extension)."""
    p = Path(path)
    try:
        return _detect(p)
    except DatasetError as exc:
        raise _prefixed(p, exc) from None
    except Exception as exc:  # noqa: BLE001 - any input problem becomes a DatasetError
        raise DatasetError(f"{p}: not a recognised dataset ({type(exc).__name__}: {exc})") from None


# ----------------------------------------------------------------------------- native


def _load_npy_file(path: Path, what: str, budget: Budget, mmap: bool, required: bool = True) -> np.ndarray | None:
    if not required and path.is_symlink():
        raise DatasetError(f"{what}: {path.name} is a symlink (symlinks are not followed)")
    if not required and not path.exists():
        return None
    if path.is_symlink() or not path.is_file():
        raise DatasetError(f"{what}: required field missing ({path.name})")
    with open(path, "rb") as f:
        shape, _, dtype = _npy_header(f, what)
        check_dtype(dtype, what)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        budget.take(nbytes, what)
        if f.tell() + nbytes > path.stat().st_size:
            raise DatasetError(f"{what}: file is truncated ({path.stat().st_size - f.tell()} of {nbytes} bytes)")
    return np.load(path, mmap_mode="r" if mmap and nbytes else None, allow_pickle=False)


def _load_native(
    p: Path, budget: Budget, n_actions: int | None, mmap: bool, max_actions: int = MAX_ACTIONS
) -> TransitionDataset:
    doc = read_json(p / "meta.json", "meta.json")
    if not isinstance(doc, dict) or doc.get("format") != NATIVE_TAG:
        raise DatasetError(f"meta.json: not a MERLION dataset (format must be {NATIVE_TAG!r})")
    unknown = sorted(set(doc) - {"format", "schema_version", "n_actions", "meta"})
    if unknown:
        raise DatasetError(f"meta.json: unknown key(s) {', '.join(unknown)}")
    version = doc.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version > SCHEMA_VERSION:
        raise DatasetError(f"schema_version: {version!r} is not supported (this build reads <= {SCHEMA_VERSION})")
    meta = DatasetMeta.from_dict(doc.get("meta", {}))
    arrays = {name: _load_npy_file(p / f"{name}.npy", name, budget, mmap) for name in FIELDS}
    for name in OPTIONAL_FIELDS:
        arrays[name] = _load_npy_file(p / f"{name}.npy", name, budget, mmap, required=False)
    return from_arrays(
        arrays, resolve_n_actions(doc.get("n_actions"), n_actions), meta_with(meta, "native"), max_actions=max_actions
    )


def _write_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:  # a handle: np.save on a path would append ".npy"
        npformat.write_array(f, np.asarray(arr), allow_pickle=False)


def _save_native(ds: TransitionDataset, p: Path, **_: Any) -> None:
    if p.exists() and not p.is_dir():
        raise DatasetError("exists and is not a directory (the native format is a directory)")
    p.mkdir(parents=True, exist_ok=True)
    arrays = ds.arrays(optional=True)
    for name, arr in arrays.items():
        atomic_write(p / f"{name}.npy", functools.partial(_write_npy, arr=arr))
    for name in OPTIONAL_FIELDS:  # a dataset saved over one that had the field must not inherit it
        stale = p / f"{name}.npy"
        if name not in arrays and (stale.is_symlink() or stale.exists()):
            stale.unlink()
    doc = {"format": NATIVE_TAG, "schema_version": SCHEMA_VERSION, "n_actions": ds.n_actions, "meta": ds.meta.to_dict()}
    text = dump_json(doc) + "\n"
    atomic_write(p / "meta.json", lambda t: t.write_text(text, encoding="utf-8"))


# ----------------------------------------------------------------------------- entry points


def _hdf5(name: str) -> Callable[..., Any]:
    from . import io_hdf5, io_minari

    return getattr(io_minari if name.endswith("_minari") else io_hdf5, name)


def load_dataset(
    path: str | os.PathLike,
    *,
    format: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    n_actions: int | None = None,
    mmap: bool = True,
    max_actions: int = MAX_ACTIONS,
) -> TransitionDataset:
    """Load a dataset of any supported format (detected from content when ``format`` is None).

    ``n_actions`` supplies the action count for formats that do not store it (otherwise it
    is inferred as max id + 1 and ``meta.extra["n_actions_inferred"]`` is set); it must
    agree with the file when the file stores one. ``max_actions`` (default ``MAX_ACTIONS``)
    caps ``n_actions``, given, stored or inferred. Every row of every array read is checked,
    also rows a reader drops (which ``meta.extra["dropped_rows"]`` / ``["dropped_reason"]``
    then record). ``mmap`` applies to the native format.
    """
    p = Path(path)
    try:
        if format is not None and format not in FORMATS:
            raise DatasetError(f"format: unknown format {format!r}; expected one of {', '.join(FORMATS)}")
        if n_actions is not None and (isinstance(n_actions, bool) or not isinstance(n_actions, int)):
            raise DatasetError(f"n_actions: expected an int, got {n_actions!r:.40}")
        max_actions = check_max_actions(max_actions)
        check_n_actions_cap(n_actions, max_actions)
        budget = Budget(max_bytes)
        fmt = format or _detect(p)
        if fmt == "native":
            return _load_native(p, budget, n_actions, mmap, max_actions)
        if fmt == "npz":
            return _load_npz(p, budget, n_actions, max_actions=max_actions)
        return _hdf5(f"load_{fmt}")(p, budget, n_actions, max_actions=max_actions)
    except Exception as exc:  # noqa: BLE001 - every input problem is reported as DatasetError
        raise _prefixed(p, exc) from None


def save_dataset(
    dataset: TransitionDataset,
    path: str | os.PathLike,
    *,
    format: str = "native",
    compressed: bool = False,
    dataset_id: str | None = None,
) -> Path:
    """Write ``dataset`` as ``format`` at ``path`` (exactly that path; no suffix is added).

    ``compressed`` deflates npz members / gzips HDF5 datasets; ``dataset_id`` names a
    Minari dataset (default: the directory name, with ``-v0`` appended if unversioned).
    """
    p = Path(path)
    try:
        if not isinstance(dataset, TransitionDataset):
            raise DatasetError(f"dataset: expected a TransitionDataset, got {type(dataset).__name__}")
        if format not in FORMATS:
            raise DatasetError(f"format: unknown format {format!r}; expected one of {', '.join(FORMATS)}")
        if format != "native" and format != "minari":
            p.parent.mkdir(parents=True, exist_ok=True)
        writer = {"native": _save_native, "npz": _save_npz}.get(format) or _hdf5(f"save_{format}")
        writer(dataset, p, compressed=compressed, dataset_id=dataset_id)
        return p
    except DatasetError as exc:
        raise _prefixed(p, exc) from None
    except OSError as exc:
        raise DatasetError(f"{p}: cannot write ({exc})") from None


_LOAD_KEYS = ("from_format", "max_bytes", "n_actions", "mmap", "max_actions")


def convert(in_path: str | os.PathLike, out_path: str | os.PathLike, to: str, **kw: Any) -> Path:
    """Load ``in_path`` and save it as ``to`` at ``out_path``.

    Keyword arguments ``from_format``, ``max_bytes``, ``n_actions``, ``mmap`` and ``max_actions`` go to
    :func:`load_dataset`; the rest (``compressed``, ``dataset_id``) to :func:`save_dataset`.
    """
    load_kw = {k: kw.pop(k) for k in _LOAD_KEYS if k in kw}
    if "from_format" in load_kw:
        load_kw["format"] = load_kw.pop("from_format")
    return save_dataset(load_dataset(in_path, **load_kw), out_path, format=to, **kw)
