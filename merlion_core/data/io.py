"""Reading and writing transition datasets: detection, native and npz formats.

Entry points: :func:`detect_format`, :func:`load_dataset`, :func:`save_dataset`,
:func:`convert`. The HDF5-based formats (D4RL, Minari, d3rlpy) live in
:mod:`merlion_core.data.io_hdf5`. See ``docs/formats.md`` for every layout.

Safety rules applied to every input: nothing is ever unpickled (``allow_pickle=False``;
object/void/string arrays are refused before their data is read); the declared size of
every array is checked against ``max_bytes`` before it is read; zip members are inflated
by a bounded streaming reader that counts bytes and stops as soon as a member outgrows its
declared size; symlinks inside dataset directories are not followed. Any problem raises
:class:`DatasetError` whose one-line message starts with the path.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.lib.format as npformat

from .dataset import (FIELDS, SCHEMA_VERSION, DatasetError, DatasetMeta, TransitionDataset,
                      _coerce_flag, from_arrays)

DEFAULT_MAX_BYTES = 4 * 1024**3
FORMATS = ("native", "npz", "d4rl", "minari", "d3rlpy")
NATIVE_TAG = "merlion-dataset"
MAX_META_BYTES = 1 << 20        # meta.json / meta_json / merlion_meta text
MAX_JSON_BYTES = 64 << 20       # Minari metadata.json (spaces may list per-dim bounds)
MAX_ZIP_MEMBERS = 256
MAX_NPY_HEADER = 10_000
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_NPZ_KEYS = (*FIELDS, "n_actions", "meta_json")
_READ_BLOCK = 1 << 20


class Budget:
    """Bytes of array data still allowed from one file or directory."""

    def __init__(self, max_bytes: Any) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 0:
            raise DatasetError(f"max_bytes: expected a non-negative int, got {max_bytes!r:.40}")
        self.max_bytes, self.used = int(max_bytes), 0

    def take(self, nbytes: int, what: str) -> None:
        if self.used + nbytes > self.max_bytes:
            raise DatasetError(f"{what}: {nbytes} bytes of array data exceed the cap max_bytes={self.max_bytes}"
                               f" ({self.used} bytes already taken by other fields)")
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


def atomic_write(path: Path, writer: Callable[[Path], None]) -> None:
    """Write via a sibling temp file then rename, so readers (and memmaps) never see a half file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def derive_next_observations(fields: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fill in ``next_observations`` for files that lack it (D4RL convention).

    Within an episode ``next_obs[i] = obs[i + 1]``. A terminal step keeps its own
    observation as next observation (absorbing convention; masked by the terminal flag).
    A timeout step, and a final step of the file that is not an episode end, has no
    successor and is dropped; its predecessor in the same episode becomes the timeout.
    Returns the new fields and notes for ``meta.extra``.
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
    nxt[term] = obs[term]
    out = dict(fields, next_observations=nxt, terminals=term, timeouts=new_tout)
    n_drop = int(np.count_nonzero(drop))
    if n_drop:
        keep = ~drop
        for name in FIELDS:
            out[name] = np.asarray(out[name])[keep]
    return out, {"next_observations_derived": True, "dropped_transitions": n_drop}


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
        raise DatasetError(f"{p}: not a recognised dataset (a directory with neither a MERLION meta.json "
                           "nor a Minari data/metadata.json + main_data.hdf5)")
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
    raise DatasetError(f"{p}: not a recognised dataset (unknown content; expected a native directory, "
                       ".npz, D4RL/d3rlpy HDF5 or a Minari dataset)")


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


def _load_npy_file(path: Path, what: str, budget: Budget, mmap: bool) -> np.ndarray:
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


def _load_native(p: Path, budget: Budget, n_actions: int | None, mmap: bool) -> TransitionDataset:
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
    return from_arrays(arrays, resolve_n_actions(doc.get("n_actions"), n_actions), meta_with(meta, "native"))


def _write_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:  # a handle: np.save on a path would append ".npy"
        npformat.write_array(f, np.asarray(arr), allow_pickle=False)


def _save_native(ds: TransitionDataset, p: Path, **_: Any) -> None:
    if p.exists() and not p.is_dir():
        raise DatasetError("exists and is not a directory (the native format is a directory)")
    p.mkdir(parents=True, exist_ok=True)
    for name, arr in ds.arrays().items():
        atomic_write(p / f"{name}.npy", lambda t, a=arr: _write_npy(t, a))
    doc = {"format": NATIVE_TAG, "schema_version": SCHEMA_VERSION, "n_actions": ds.n_actions,
           "meta": ds.meta.to_dict()}
    text = dump_json(doc) + "\n"
    atomic_write(p / "meta.json", lambda t: t.write_text(text, encoding="utf-8"))


# ----------------------------------------------------------------------------- npz

class _MemberStream:
    """Bounded streaming reader of one zip member, independent of zipfile's own checks.

    Reads the raw (stored or deflated) bytes from the local header, inflates at most
    ``_READ_BLOCK`` bytes per step and refuses as soon as the output passes the member's
    declared ``file_size`` - so a member whose size fields lie never fills memory.
    """

    def __init__(self, raw: BinaryIO, zi: zipfile.ZipInfo, what: str) -> None:
        self.raw, self.zi, self.what = raw, zi, what
        if zi.flag_bits & 0x1:
            raise DatasetError(f"{what}: encrypted zip members are not supported")
        if zi.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise DatasetError(f"{what}: zip compression method {zi.compress_type} is not supported")
        raw.seek(zi.header_offset)
        head = raw.read(30)
        if len(head) != 30 or head[:4] != b"PK\x03\x04":
            raise DatasetError(f"{what}: corrupt zip (bad local header)")
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        raw.seek(zi.header_offset + 30 + name_len + extra_len)
        self.left_in = zi.compress_size
        self.inflate = zlib.decompressobj(-15) if zi.compress_type == zipfile.ZIP_DEFLATED else None
        self.produced, self.crc, self.pending = 0, 0, b""

    def _produce(self) -> bytes:
        while True:
            if self.inflate is None:
                chunk = self.raw.read(min(self.left_in, _READ_BLOCK))
                self.left_in -= len(chunk)
                if not chunk and self.left_in > 0:
                    raise DatasetError(f"{self.what}: zip member is truncated")
            elif self.inflate.eof:
                chunk = b""
            else:
                data = self.inflate.unconsumed_tail
                if not data:
                    data = self.raw.read(min(self.left_in, 1 << 16))
                    self.left_in -= len(data)
                    if not data:
                        raise DatasetError(f"{self.what}: zip member is truncated (compressed data ends early)")
                try:
                    chunk = self.inflate.decompress(data, _READ_BLOCK)
                except zlib.error as exc:
                    raise DatasetError(f"{self.what}: corrupt compressed data ({exc})") from None
                if not chunk and not self.inflate.eof:
                    continue
            self.produced += len(chunk)
            if self.produced > self.zi.file_size:
                raise DatasetError(f"{self.what}: zip member inflates past its declared size of "
                                   f"{self.zi.file_size} bytes (zip bomb or corrupt archive); refused")
            self.crc = zlib.crc32(chunk, self.crc)
            return chunk

    def read(self, n: int) -> bytes:
        while len(self.pending) < n:
            chunk = self._produce()
            if not chunk:
                break
            self.pending += chunk
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def readinto(self, buf: memoryview) -> None:
        pos = len(self.pending)
        buf[:pos] = self.pending
        self.pending = b""
        while pos < len(buf):
            chunk = self._produce()
            if not chunk:
                raise DatasetError(f"{self.what}: zip member is shorter than its .npy header declares")
            take = min(len(chunk), len(buf) - pos)
            buf[pos:pos + take] = chunk[:take]
            self.pending, pos = chunk[take:], pos + take

    def finish(self) -> None:
        if self.pending or self._produce():
            raise DatasetError(f"{self.what}: zip member has data beyond its .npy array")
        if self.produced != self.zi.file_size or self.crc != self.zi.CRC:
            raise DatasetError(f"{self.what}: zip member is corrupt (size or CRC mismatch)")


def _read_member(raw: BinaryIO, zi: zipfile.ZipInfo, what: str, budget: Budget, kinds: str) -> np.ndarray:
    if zi.file_size > budget.left + MAX_NPY_HEADER + 16:
        raise DatasetError(f"{what}: declared uncompressed size {zi.file_size} bytes exceeds the cap "
                           f"max_bytes={budget.max_bytes}")
    stream = _MemberStream(raw, zi, what)
    shape, fortran, dtype = _npy_header(stream, what)
    check_dtype(dtype, what, kinds)
    count = int(np.prod(shape, dtype=np.int64))
    nbytes = count * dtype.itemsize
    budget.take(nbytes, what)
    if stream.produced - len(stream.pending) + nbytes != zi.file_size:
        raise DatasetError(f"{what}: .npy header declares {nbytes} data bytes but the zip entry holds "
                           f"{zi.file_size - (stream.produced - len(stream.pending))}")
    arr = np.empty(count, dtype=dtype)
    stream.readinto(memoryview(arr.view(np.uint8)))
    stream.finish()
    return arr.reshape(shape, order="F" if fortran else "C")


def _open_zip(p: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(p)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise DatasetError(f"not a valid zip archive ({exc})") from None


def _load_npz(p: Path, budget: Budget, n_actions: int | None, **_: Any) -> TransitionDataset:
    with _open_zip(p) as zf, open(p, "rb") as raw:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            raise DatasetError(f"zip archive has {len(infos)} members (cap {MAX_ZIP_MEMBERS})")
        members = {zi.filename[:-4]: zi for zi in infos if zi.filename.endswith(".npy")}
        for zi in infos:  # every declared size, before reading anything
            if zi.filename[:-4] in _NPZ_KEYS and zi.file_size > budget.left + MAX_NPY_HEADER + 16:
                raise DatasetError(f"{zi.filename[:-4]}: declared uncompressed size {zi.file_size} bytes "
                                   f"exceeds the cap max_bytes={budget.max_bytes}")
        fields: dict[str, Any] = {}
        for name in ("observations", "actions", "rewards", "terminals"):
            if name not in members:
                raise DatasetError(f"{name}: required field missing ({name}.npy not in the archive)")
        for name in FIELDS:
            if name in members:
                fields[name] = _read_member(raw, members[name], name, budget, "biuf")
        file_n = meta_text = None
        if "n_actions" in members:
            arr = _read_member(raw, members["n_actions"], "n_actions", budget, "iu")
            if arr.size != 1:
                raise DatasetError(f"n_actions: expected a scalar, got shape {arr.shape}")
            file_n = int(arr.reshape(-1)[0])
        if "meta_json" in members:
            if members["meta_json"].file_size > MAX_META_BYTES:
                raise DatasetError(f"meta_json: larger than the {MAX_META_BYTES}-byte metadata cap")
            arr = _read_member(raw, members["meta_json"], "meta_json", Budget(MAX_META_BYTES), "U")
            if arr.shape != ():
                raise DatasetError(f"meta_json: expected a 0-d unicode array, got shape {arr.shape}")
            meta_text = str(arr[()])
    meta = DatasetMeta.from_dict(parse_json(meta_text, "meta_json")) if meta_text is not None else None
    notes: dict[str, Any] = {}
    if "timeouts" not in fields:
        fields["timeouts"] = np.zeros(np.shape(fields["terminals"])[:1], dtype=bool)
    if "next_observations" not in fields:
        fields, notes = derive_next_observations(fields)
    return from_arrays(fields, resolve_n_actions(file_n, n_actions), meta_with(meta, "npz", **notes),
                       infer_n_actions=True)


def _save_npz(ds: TransitionDataset, p: Path, *, compressed: bool = False, **_: Any) -> None:
    members = dict(ds.arrays())
    members["n_actions"] = np.array(ds.n_actions, dtype=np.int64)
    members["meta_json"] = np.array(dump_json(ds.meta.to_dict()))
    method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=method, allowZip64=True) as zf:
            for name, arr in members.items():
                zi = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                zi.compress_type, zi.external_attr = method, 0o644 << 16
                with zf.open(zi, "w", force_zip64=True) as out:
                    npformat.write_array(out, np.asarray(arr), allow_pickle=False)

    atomic_write(p, write)


# ----------------------------------------------------------------------------- entry points

def _hdf5(name: str) -> Callable[..., Any]:
    from . import io_hdf5
    return getattr(io_hdf5, name)


def load_dataset(path: str | os.PathLike, *, format: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 n_actions: int | None = None, mmap: bool = True) -> TransitionDataset:
    """Load a dataset of any supported format (detected from content when ``format`` is None).

    ``n_actions`` supplies the action count for formats that do not store it (otherwise it
    is inferred as max id + 1 and ``meta.extra["n_actions_inferred"]`` is set); it must
    agree with the file when the file stores one. ``mmap`` applies to the native format.
    """
    p = Path(path)
    try:
        if format is not None and format not in FORMATS:
            raise DatasetError(f"format: unknown format {format!r}; expected one of {', '.join(FORMATS)}")
        if n_actions is not None and (isinstance(n_actions, bool) or not isinstance(n_actions, int)):
            raise DatasetError(f"n_actions: expected an int, got {n_actions!r:.40}")
        budget = Budget(max_bytes)
        fmt = format or _detect(p)
        if fmt == "native":
            return _load_native(p, budget, n_actions, mmap)
        if fmt == "npz":
            return _load_npz(p, budget, n_actions)
        return _hdf5(f"load_{fmt}")(p, budget, n_actions)
    except Exception as exc:  # noqa: BLE001 - every input problem is reported as DatasetError
        raise _prefixed(p, exc) from None


def save_dataset(dataset: TransitionDataset, path: str | os.PathLike, *, format: str = "native",
                 compressed: bool = False, dataset_id: str | None = None) -> Path:
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


_LOAD_KEYS = ("from_format", "max_bytes", "n_actions", "mmap")


def convert(in_path: str | os.PathLike, out_path: str | os.PathLike, to: str, **kw: Any) -> Path:
    """Load ``in_path`` and save it as ``to`` at ``out_path``.

    Keyword arguments ``from_format``, ``max_bytes``, ``n_actions`` and ``mmap`` go to
    :func:`load_dataset`; the rest (``compressed``, ``dataset_id``) to :func:`save_dataset`.
    """
    load_kw = {k: kw.pop(k) for k in _LOAD_KEYS if k in kw}
    if "from_format" in load_kw:
        load_kw["format"] = load_kw.pop("from_format")
    return save_dataset(load_dataset(in_path, **load_kw), out_path, format=to, **kw)
