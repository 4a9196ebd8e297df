"""The ``npz`` format: a zip archive of ``.npy`` members (``numpy.savez`` layout).

Zip members are inflated by a bounded streaming reader (:class:`_MemberStream`) that
counts bytes and stops as soon as a member outgrows its declared size; nothing is ever
unpickled. Public entry points are in :mod:`merlion_core.data.io`.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.lib.format as npformat

from .dataset import FIELDS, MAX_ACTIONS, OPTIONAL_FIELDS, DatasetError, DatasetMeta, TransitionDataset, from_arrays
from .io_common import (
    MAX_META_BYTES,
    MAX_NPY_HEADER,
    Budget,
    _npy_header,
    atomic_write,
    check_dtype,
    derive_next_observations,
    dump_json,
    meta_with,
    parse_json,
    resolve_n_actions,
)

MAX_ZIP_MEMBERS = 256
_NPZ_KEYS = (*FIELDS, *OPTIONAL_FIELDS, "n_actions", "meta_json")
_READ_BLOCK = 1 << 20


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
                raise DatasetError(
                    f"{self.what}: zip member inflates past its declared size of "
                    f"{self.zi.file_size} bytes (zip bomb or corrupt archive); refused"
                )
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
            buf[pos : pos + take] = chunk[:take]
            self.pending, pos = chunk[take:], pos + take

    def finish(self) -> None:
        if self.pending or self._produce():
            raise DatasetError(f"{self.what}: zip member has data beyond its .npy array")
        if self.produced != self.zi.file_size or self.crc != self.zi.CRC:
            raise DatasetError(f"{self.what}: zip member is corrupt (size or CRC mismatch)")


def _read_member(raw: BinaryIO, zi: zipfile.ZipInfo, what: str, budget: Budget, kinds: str) -> np.ndarray:
    if zi.file_size > budget.left + MAX_NPY_HEADER + 16:
        raise DatasetError(
            f"{what}: declared uncompressed size {zi.file_size} bytes exceeds the cap max_bytes={budget.max_bytes}"
        )
    stream = _MemberStream(raw, zi, what)
    shape, fortran, dtype = _npy_header(stream, what)
    check_dtype(dtype, what, kinds)
    count = int(np.prod(shape, dtype=np.int64))
    nbytes = count * dtype.itemsize
    budget.take(nbytes, what)
    if stream.produced - len(stream.pending) + nbytes != zi.file_size:
        raise DatasetError(
            f"{what}: .npy header declares {nbytes} data bytes but the zip entry holds "
            f"{zi.file_size - (stream.produced - len(stream.pending))}"
        )
    arr = np.empty(count, dtype=dtype)
    stream.readinto(arr.view(np.uint8).data)  # ndarray.data is memoryview(array)
    stream.finish()
    return arr.reshape(shape, order="F" if fortran else "C")


def _open_zip(p: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(p)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise DatasetError(f"not a valid zip archive ({exc})") from None


def _load_npz(
    p: Path, budget: Budget, n_actions: int | None, *, max_actions: int = MAX_ACTIONS, **_: Any
) -> TransitionDataset:
    with _open_zip(p) as zf, open(p, "rb") as raw:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            raise DatasetError(f"zip archive has {len(infos)} members (cap {MAX_ZIP_MEMBERS})")
        members = {zi.filename[:-4]: zi for zi in infos if zi.filename.endswith(".npy")}
        for zi in infos:  # every declared size, before reading anything
            if zi.filename[:-4] in _NPZ_KEYS and zi.file_size > budget.left + MAX_NPY_HEADER + 16:
                raise DatasetError(
                    f"{zi.filename[:-4]}: declared uncompressed size {zi.file_size} bytes "
                    f"exceeds the cap max_bytes={budget.max_bytes}"
                )
        fields: dict[str, Any] = {}
        for name in ("observations", "actions", "rewards", "terminals"):
            if name not in members:
                raise DatasetError(f"{name}: required field missing ({name}.npy not in the archive)")
        for name in (*FIELDS, *OPTIONAL_FIELDS):
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
    keep = None
    if "timeouts" not in fields:
        fields["timeouts"] = np.zeros(np.shape(fields["terminals"])[:1], dtype=bool)
    if "next_observations" not in fields:
        fields, keep, notes = derive_next_observations(fields)
    return from_arrays(
        fields,
        resolve_n_actions(file_n, n_actions),
        meta_with(meta, "npz", **notes),
        infer_n_actions=True,
        max_actions=max_actions,
        keep=keep,
    )


def _save_npz(ds: TransitionDataset, p: Path, *, compressed: bool = False, **_: Any) -> None:
    members = dict(ds.arrays(optional=True))
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
