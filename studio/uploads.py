"""Uploaded datasets: safe names, a size cap, Minari zips unpacked with limits, validation by the
core (its one-line DatasetError, with the user's file name instead of our path)."""

from __future__ import annotations

import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from merlion_core.data.dataset import DatasetError
from merlion_core.data.io import detect_format, load_dataset
from merlion_core.data.summary import dataset_summary
from studio import settings

ALLOWED_SUFFIXES = (".npz", ".h5", ".hdf5", ".zip")


class UploadError(ValueError):
    """An upload the app refuses (one-line message starting with the file's name)."""


def safe_name(name: str) -> str:
    """A file name made of [A-Za-z0-9._-] only, no leading dots, at most 80 characters (its end kept)."""
    base = PurePosixPath(name.replace("\\", "/")).name
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip(".")[-80:]
    stem, dot, suffix = cleaned.rpartition(".")
    if not dot:
        stem, suffix = cleaned, ""
    if not stem.strip("_-"):
        stem = "dataset"
    return f"{stem}.{suffix}" if suffix else stem


def unique_path(folder: Path, name: str) -> Path:
    """folder/name, or folder/stem-2.suffix, -3, ... when taken (uploads never overwrite)."""
    path = folder / name
    stem, suffix = Path(name).stem, "".join(Path(name).suffixes[-1:])
    k = 2
    while path.exists():
        path = folder / f"{stem}-{k}{suffix}"
        k += 1
    return path


def extract_minari_zip(archive: Path, dest: Path, max_bytes: int) -> Path:
    """Unpack a zipped Minari dataset (its folder with data/metadata.json and main_data.hdf5)
    into ``dest``: regular files only, no absolute or parent paths, at most MAX_ZIP_MEMBERS
    members and ``max_bytes`` in all. Returns the folder to load."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise UploadError("not a zip archive") from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if len(members) > settings.MAX_ZIP_MEMBERS:
            raise UploadError(f"zip holds {len(members)} files; at most {settings.MAX_ZIP_MEMBERS}")
        if sum(m.file_size for m in members) > max_bytes:
            raise UploadError(f"zip unpacks to more than {max_bytes // 1024**2} MB")
        for m in members:
            parts = PurePosixPath(m.filename).parts
            if m.filename.startswith("/") or ".." in parts or (m.external_attr >> 16) & 0o170000 == 0o120000:
                raise UploadError(f"zip member {m.filename!r}: absolute, parent or link paths are refused")
        metadata = [m for m in members if PurePosixPath(m.filename).name == "metadata.json"]
        if not metadata:
            raise UploadError("zip holds no metadata.json: not a Minari dataset")
        dest.mkdir(parents=True)
        for m in members:
            target = dest.joinpath(*PurePosixPath(m.filename).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        return dest.joinpath(*PurePosixPath(metadata[0].filename).parts[:-1])


@dataclass(frozen=True)
class SavedUpload:
    path: Path  # what load_dataset opens (the unpacked folder for a zip)
    format: str
    summary: dict[str, Any]


def save_and_check(name: str, data: bytes, folder: Path | None = None) -> SavedUpload:
    """Save an upload under data/uploads with a safe, unique name, validate it with the core and
    summarise it; an invalid upload is removed again. Errors: UploadError / DatasetError, one line,
    naming the user's file."""
    max_bytes = settings.MAX_UPLOAD_MB * 1024**2
    shown = PurePosixPath(name.replace("\\", "/")).name or "upload"
    if len(data) > max_bytes:
        raise UploadError(f"{shown}: {len(data) / 1024**2:.0f} MB is larger than the {settings.MAX_UPLOAD_MB} MB cap")
    cleaned = safe_name(shown)
    if not cleaned.lower().endswith(ALLOWED_SUFFIXES):
        raise UploadError(f"{shown}: expected one of {', '.join(ALLOWED_SUFFIXES)}")
    folder = folder or settings.data_dir() / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    path = unique_path(folder, cleaned)
    path.write_bytes(data)
    target, cleanup = path, [path]
    try:
        if path.suffix.lower() == ".zip":
            unpacked = unique_path(folder, path.stem)
            cleanup.append(unpacked)
            target = extract_minari_zip(path, unpacked, max_bytes)
            path.unlink()
            cleanup.remove(path)
        fmt = detect_format(target)
        summary = dataset_summary(load_dataset(target, format=fmt, mmap=False, max_bytes=max_bytes), fmt)
    except (UploadError, DatasetError) as exc:
        for p in cleanup:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        message = str(exc).replace(str(target), shown).replace(str(path), shown)
        raise type(exc)(message if message.startswith(shown) else f"{shown}: {message}") from None
    return SavedUpload(target, fmt, summary)
