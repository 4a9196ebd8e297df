"""Dataset file formats: round trips, detection, hostile inputs, Minari and d3rlpy interop."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import struct
import time
import tracemalloc
import zipfile
from pathlib import Path

import h5py
import numpy as np
import numpy.lib.format as npformat
import pytest
from dataset_factory import N_ACTIONS, make_fields

from merlion_core.data import validation as vmod  # the caps live (and are patched) there
from merlion_core.data.dataset import DatasetError, DatasetMeta, TransitionDataset
from merlion_core.data.io import FORMATS, convert, detect_format, load_dataset, save_dataset

META = DatasetMeta(
    env_id="merlion/Maze-v0",
    env_config={"size": 7},
    behaviour="medium",
    noise=0.25,
    seed=11,
    expert_return=10.0,
    random_return=-1.0,
    extra={"note": "test"},
)


@pytest.fixture
def ds() -> TransitionDataset:
    return TransitionDataset(**make_fields(), n_actions=N_ACTIONS, meta=META)


def as_read(ds: TransitionDataset, fmt: str) -> TransitionDataset:
    return dataclasses.replace(ds, meta=dataclasses.replace(ds.meta, source_format=fmt))


MISLEADING = {
    "native": "data.npz",
    "npz": "data.hdf5",
    "d4rl": "data.npz",
    "d3rlpy": "data.json",
    "minari": "merlion/data-v0",
}


def _load_raises(path, match, **kw):
    """load_dataset must raise DatasetError (nothing else), message naming the path and the problem."""
    with pytest.raises(DatasetError, match=match) as info:
        load_dataset(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    return msg


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_is_exact_and_detected_from_content(ds, fmt, tmp_path):
    path = tmp_path / MISLEADING[fmt]
    assert save_dataset(ds, path, format=fmt) == path
    assert detect_format(path) == fmt
    back = load_dataset(path)
    assert back.equals(as_read(ds, fmt)), fmt
    for name, arr in ds.arrays().items():
        got = getattr(back, name)
        assert got.dtype == arr.dtype and np.array_equal(got, arr), name
    assert back.n_actions == N_ACTIONS and back.meta.source_format == fmt
    # and back again to native from the loaded copy
    again = load_dataset(save_dataset(back, tmp_path / "again", format="native"))
    assert again.equals(as_read(ds, "native"))


@pytest.mark.parametrize("fmt", ["npz", "d4rl", "d3rlpy", "minari"])
def test_compressed_round_trip(ds, fmt, tmp_path):
    path = save_dataset(ds, tmp_path / "c", format=fmt, compressed=True)
    assert load_dataset(path).equals(as_read(ds, fmt))


def test_minari_file_and_data_dir_paths_are_accepted(ds, tmp_path):
    root = save_dataset(ds, tmp_path / "ns" / "name-v1", format="minari")
    for p in (root, root / "data", root / "data" / "main_data.hdf5"):
        assert detect_format(p) == "minari"
        assert load_dataset(p).equals(as_read(ds, "minari"))


def test_native_save_is_byte_identical_and_mmapped(ds, tmp_path):
    a = save_dataset(ds, tmp_path / "a")
    b = save_dataset(ds, tmp_path / "b")
    names = sorted(os.listdir(a))
    assert names == sorted(os.listdir(b)) == sorted([f"{k}.npy" for k in ds.arrays()] + ["meta.json"])
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    meta = json.loads((a / "meta.json").read_text())
    assert meta["format"] == "merlion-dataset" and meta["schema_version"] == 1 and meta["n_actions"] == 16
    loaded = load_dataset(a)
    for name in ds.arrays():
        assert isinstance(getattr(loaded, name), np.memmap), name
    assert not any(isinstance(getattr(load_dataset(a, mmap=False), k), np.memmap) for k in ds.arrays())
    # re-saving a memmapped dataset over its own directory is safe and still identical
    save_dataset(loaded, a)
    save_dataset(ds, a)
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_npz_save_is_deterministic_and_numpy_readable(ds, tmp_path):
    a, b = save_dataset(ds, tmp_path / "a.npz", format="npz"), save_dataset(ds, tmp_path / "b.npz", format="npz")
    assert a.read_bytes() == b.read_bytes()
    with np.load(a, allow_pickle=False) as z:
        assert int(z["n_actions"]) == 16 and z["meta_json"].dtype.kind == "U"
        np.testing.assert_array_equal(z["observations"], ds.observations)


def test_convert(ds, tmp_path):
    src = save_dataset(ds, tmp_path / "in.npz", format="npz")
    out = convert(src, tmp_path / "out.h5", "d3rlpy", compressed=True, max_bytes=10**6)
    assert detect_format(out) == "d3rlpy"
    assert load_dataset(out).equals(as_read(ds, "d3rlpy"))


def test_save_rejects_bad_arguments(ds, tmp_path):
    with pytest.raises(DatasetError, match="format: unknown format"):
        save_dataset(ds, tmp_path / "x", format="parquet")
    with pytest.raises(DatasetError, match="dataset_id"):
        save_dataset(ds, tmp_path / "x", format="minari", dataset_id="bad id!")
    chain = dict(make_fields())
    chain["next_observations"] = chain["next_observations"].copy()
    chain["next_observations"][1] += 1  # no longer obs[2]: episode formats cannot store this
    broken = TransitionDataset(**chain, n_actions=16)
    for fmt in ("minari", "d3rlpy"):
        with pytest.raises(DatasetError, match="next_observations: differs .* index 1"):
            save_dataset(broken, tmp_path / fmt, format=fmt)


# ----------------------------------------------------------------------------- validation via the npz loader


def write_npz(path: Path, **arrays) -> Path:
    with open(path, "wb") as f:  # a plain numpy npz, as a user would write it
        np.savez(f, **arrays)
    return path


def _mut(**changes):
    def apply(f):
        f = dict(f)
        for k, v in changes.items():
            if v is None:
                f.pop(k)
            else:
                f[k] = v(f) if callable(v) else v
        return f

    return apply


def _with_nan(name, row):
    def set_nan(f):
        arr = f[name].copy()
        arr[row] = np.nan
        return arr

    return set_nan


CASES = {
    "missing": (_mut(rewards=None), r"rewards: required field missing"),
    "empty": (lambda f: {k: v[:0] for k, v in f.items()}, r"observations: empty dataset"),
    "obs_not_2d": (_mut(observations=lambda f: f["observations"][:, 0]), r"observations: expected a 2-D"),
    "next_shape": (_mut(next_observations=lambda f: f["next_observations"][:, :2]), r"next_observations: shape"),
    "lengths": (_mut(rewards=lambda f: f["rewards"][:10]), r"rewards: length 10 differs from observations length 15"),
    "nan_obs": (_mut(observations=_with_nan("observations", 6)), r"observations: 3 non-finite.*index 6"),
    "nan_next": (
        _mut(next_observations=_with_nan("next_observations", 2)),
        r"next_observations: 3 non-finite.*index 2",
    ),
    "nan_reward": (_mut(rewards=_with_nan("rewards", 12)), r"rewards: 1 non-finite.*index 12"),
    "non_integral": (_mut(actions=lambda f: f["actions"] + 0.5), r"actions: 15 non-integral"),
    "negative": (
        _mut(actions=lambda f: np.where(np.arange(15) == 9, -3, f["actions"])),
        r"actions: 1 negative ids.*index 9: -3",
    ),
    "too_big": (
        _mut(actions=lambda f: np.where(np.arange(15) == 4, 99, f["actions"]), n_actions=np.int64(16)),
        r"actions: 1 ids out of range \[0, 16\) \(first at index 4: 99\)",
    ),
    "n_actions_small": (
        _mut(n_actions=np.int64(1), actions=lambda f: np.zeros(15, np.int64)),
        r"n_actions: must be >= 2",
    ),
    "n_actions_float": (_mut(n_actions=np.float64(16.0)), r"n_actions: dtype float64 is not allowed"),
    "no_boundary": (_mut(terminals=np.zeros(15, bool), timeouts=np.zeros(15, bool)), r"terminals: no episode boundary"),
    "both": (
        _mut(timeouts=lambda f: f["timeouts"] | f["terminals"]),
        r"timeouts: 2 transition\(s\) both terminal and timeout",
    ),
    "bad_flag": (_mut(terminals=lambda f: f["terminals"].astype(np.int8) * 3), r"terminals: 2 value\(s\) not 0/1"),
    "string": (_mut(actions=np.array(["a"] * 15)), r"actions: dtype <U1 is not allowed"),
    "complex": (_mut(rewards=lambda f: f["rewards"].astype(np.complex64)), r"rewards: dtype complex64 is not allowed"),
    "structured": (_mut(rewards=np.zeros(15, dtype=[("a", "f4"), ("b", "f4")])), r"rewards: dtype .* is not allowed"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_npz_loader_reports_each_validation_error(case, tmp_path):
    mutate, match = CASES[case]
    path = write_npz(tmp_path / "bad.npz", **mutate(make_fields()))
    _load_raises(path, match)


def test_npz_loader_size_caps(monkeypatch, tmp_path):
    path = write_npz(tmp_path / "ok.npz", **make_fields())
    monkeypatch.setattr(vmod, "MAX_TRANSITIONS", 10)
    _load_raises(path, r"observations: 15 transitions exceed the cap of 10")
    monkeypatch.setattr(vmod, "MAX_TRANSITIONS", 100)
    monkeypatch.setattr(vmod, "MAX_OBS_DIM", 2)
    _load_raises(path, r"observations: observation dim 3 outside \[1, 2\]")


def test_npz_without_n_actions_infers_it(tmp_path):
    f = make_fields()
    ds = load_dataset(write_npz(tmp_path / "x.npz", **f))
    assert ds.n_actions == int(f["actions"].max()) + 1 and ds.meta.extra["n_actions_inferred"] is True
    assert load_dataset(tmp_path / "x.npz", n_actions=40).n_actions == 40
    write_npz(tmp_path / "y.npz", **f, n_actions=np.int64(16))
    _load_raises(tmp_path / "y.npz", r"n_actions: the file says 16 but n_actions=20 was requested", n_actions=20)


def test_npz_next_observations_are_derived_d4rl_style(tmp_path):
    obs = np.arange(8, dtype=np.float32).reshape(8, 1) * np.ones((1, 2), np.float32)
    term = np.array([0, 0, 1, 0, 0, 0, 0, 0], bool)  # episode A: 0..2 terminal
    tout = np.array([0, 0, 0, 0, 1, 1, 0, 0], bool)  # B: 3..4 timeout; C: 5 (timeout, length 1); D: 6..7 trailing
    path = write_npz(
        tmp_path / "d4rl_style.npz",
        observations=obs,
        actions=np.arange(8) % 4,
        rewards=np.arange(8, dtype=np.float32),
        terminals=term,
        timeouts=tout,
    )
    ds = load_dataset(path, n_actions=4)
    # kept: 0,1,2 (terminal, next = itself), 3 (now the timeout), 6 (now the timeout); dropped: 4, 5, 7
    np.testing.assert_array_equal(ds.observations[:, 0], [0, 1, 2, 3, 6])
    np.testing.assert_array_equal(ds.next_observations[:, 0], [1, 2, 2, 4, 7])
    np.testing.assert_array_equal(ds.rewards, [0, 1, 2, 3, 6])
    np.testing.assert_array_equal(ds.terminals, [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(ds.timeouts, [0, 0, 0, 1, 1])
    assert ds.meta.extra == {
        "next_observations_derived": True,
        "dropped_rows": 3,
        "dropped_reason": "the last row of each of 2 episode(s) ending in a timeout (the next row starts a new "
        "episode) and the file's final row (it ends no episode): no next observation in the "
        "file (next_observations derived from observations)",
    }


# ----------------------------------------------------------------------------- hostile npz files

calls: list[str] = []


def _side_effect():
    calls.append("unpickled!")
    return "boom"


class Evil:
    def __reduce__(self):
        return (_side_effect, ())


def test_object_array_is_refused_never_unpickled(tmp_path):
    f = make_fields()
    obj = np.empty(15, dtype=object)
    obj[:] = [Evil()] * 15
    path = tmp_path / "evil.npz"
    with open(path, "wb") as fh:
        np.savez(fh, **dict(f, actions=obj))  # numpy pickles object arrays into the member
    _load_raises(path, r"actions: dtype object is not allowed")
    obj_meta = tmp_path / "evil_meta.npz"
    with open(obj_meta, "wb") as fh:
        np.savez(fh, **f, meta_json=np.array([Evil()], dtype=object))
    _load_raises(obj_meta, r"meta_json: dtype object is not allowed")
    assert calls == []


def test_non_dataset_and_truncated_files(ds, tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("hello, not a dataset\n")
    _load_raises(text, r"not a recognised dataset")
    with pytest.raises(DatasetError, match="not a recognised dataset"):
        detect_format(text)
    single = tmp_path / "arr.npz"
    np.save(open(single, "wb"), np.zeros(3))
    _load_raises(single, r"a single \.npy array")
    _load_raises(tmp_path / "missing", r"no such file")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    _load_raises(empty_dir, r"not a recognised dataset")
    other_zip = tmp_path / "other.npz"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("readme.txt", "x")
    _load_raises(other_zip, r"zip archive without observations\.npy")
    full = save_dataset(ds, tmp_path / "full.npz", format="npz", compressed=True).read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(full[: len(full) // 2])
    _load_raises(cut, r"cut\.npz")
    _load_raises(cut, r"not a valid zip archive", format="npz")


def test_member_larger_than_max_bytes_is_refused_before_reading(ds, tmp_path):
    path = save_dataset(ds, tmp_path / "x.npz", format="npz")
    _load_raises(path, r"observations: 180 bytes of array data exceed the cap max_bytes=100", max_bytes=100)
    _load_raises(path, r"exceed the cap max_bytes=400", max_bytes=400)  # the fields together
    for fmt in ("native", "d4rl", "d3rlpy", "minari"):
        p = save_dataset(ds, tmp_path / f"x_{fmt}", format=fmt)
        _load_raises(p, r"exceed the cap max_bytes=300", max_bytes=300)


def _forge_sizes(path: Path, member: str, size: int) -> None:
    """Overwrite the uncompressed size of ``member`` in its local header and central directory."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        offset = zf.getinfo(member).header_offset
    struct.pack_into("<I", data, offset + 22, size)
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        (name_len,) = struct.unpack_from("<H", data, pos + 28)
        if data[pos + 46 : pos + 46 + name_len] == member.encode():
            struct.pack_into("<I", data, pos + 24, size)
        pos = data.find(b"PK\x01\x02", pos + 4)
    path.write_bytes(bytes(data))


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def test_zip_bomb_with_forged_size_is_refused_while_streaming(tmp_path):
    f = make_fields()
    path = tmp_path / "bomb.npz"
    header = _npy_bytes(f["rewards"])  # a valid 15-float32 .npy (header + 60 data bytes)
    bomb_size = 256 << 20  # 256 MiB of zeros after a 60-byte array
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in f.items():
            if name == "rewards":
                with zf.open(zipfile.ZipInfo("rewards.npy"), "w") as out:
                    out.write(header)
                    zeros = bytes(1 << 20)
                    for _ in range(bomb_size >> 20):
                        out.write(zeros)
            else:
                zf.writestr(f"{name}.npy", _npy_bytes(arr))
    assert zipfile.ZipFile(path).getinfo("rewards.npy").file_size == len(header) + bomb_size
    _forge_sizes(path, "rewards.npy", len(header))  # the entry now claims to hold just the small array
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        _load_raises(path, r"rewards: zip member inflates past its declared size of \d+ bytes")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak  # never more than a few inflate blocks in memory
    assert time.perf_counter() - t0 < 5


def test_member_whose_npy_header_disagrees_with_zip_entry(tmp_path):
    f = make_fields()
    path = write_npz(tmp_path / "lie.npz", **f)
    with zipfile.ZipFile(path) as zf:
        true_size = zf.getinfo("observations.npy").file_size
    _forge_sizes(path, "observations.npy", true_size + 64)
    _load_raises(path, r"observations: \.npy header declares 180 data bytes but the zip entry holds 244")
    _forge_sizes(path, "observations.npy", true_size - 64)
    _load_raises(path, r"observations: zip member inflates past its declared size of 244 bytes")
    path = write_npz(tmp_path / "lie2.npz", **f)
    _forge_sizes(path, "actions.npy", 10**9)  # claims 1 GB: refused from the directory alone
    _load_raises(path, r"actions: declared uncompressed size 1000000000 bytes exceeds the cap", max_bytes=10**6)


def test_corrupted_member_bytes_fail_crc(ds, tmp_path):
    path = save_dataset(ds, tmp_path / "x.npz", format="npz")
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        zi = zf.getinfo("rewards.npy")
    data[zi.header_offset + 30 + len("rewards.npy") + 20 + 130] ^= 0xFF  # inside the array data (stored)
    path.write_bytes(bytes(data))
    _load_raises(path, r"rewards: zip member is corrupt \(size or CRC mismatch\)")


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_and_garbled_files_only_raise_dataset_error(ds, fmt, tmp_path):
    root = save_dataset(ds, tmp_path / "src", format=fmt)
    files = sorted(p for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file())
    rng = np.random.default_rng(1)
    for victim in files:
        original = victim.read_bytes()
        for trial in range(6):
            data = bytearray(original)
            if trial < 3:
                data = data[: int(len(data) * (0.2 + 0.3 * trial))]
            else:
                for idx in rng.integers(0, len(data), size=8):
                    data[idx] = int(rng.integers(0, 256))
            victim.write_bytes(bytes(data))
            try:
                load_dataset(root)
            except DatasetError as exc:
                assert "\n" not in str(exc) and str(exc).startswith(str(root))
        victim.write_bytes(original)
    assert load_dataset(root).equals(as_read(ds, fmt))


# ----------------------------------------------------------------------------- native directory checks


def test_native_directory_problems(ds, tmp_path):
    root = save_dataset(ds, tmp_path / "n")
    meta = json.loads((root / "meta.json").read_text())
    (root / "meta.json").write_text(json.dumps({**meta, "schema_version": 2}))
    _load_raises(root, r"schema_version: 2 is not supported")
    (root / "meta.json").write_text(json.dumps({**meta, "colour": 1}))
    _load_raises(root, r"meta\.json: unknown key\(s\) colour")
    (root / "meta.json").write_text(json.dumps({**meta, "meta": {**meta["meta"], "colour": 1}}))
    _load_raises(root, r"meta: unknown key\(s\) colour")
    (root / "meta.json").write_text(json.dumps(meta))
    (root / "rewards.npy").write_bytes((root / "rewards.npy").read_bytes()[:-8])
    _load_raises(root, r"rewards: file is truncated")
    (root / "rewards.npy").unlink()
    _load_raises(root, r"rewards: required field missing")
    (root / "rewards.npy").symlink_to(root / "actions.npy")
    _load_raises(root, r"rewards: required field missing")  # symlinks are not followed
    (root / "rewards.npy").unlink()
    with open(root / "rewards.npy", "wb") as f:  # an object-dtype header followed by pickle-like bytes
        npformat.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": (15,)})
        f.write(b"\x80\x04not really a pickle" * 8)
    _load_raises(root, r"rewards: dtype object is not allowed")


# ----------------------------------------------------------------------------- D4RL HDF5


def write_h5(path: Path, **arrays) -> Path:
    with h5py.File(path, "w") as h5:
        for name, arr in arrays.items():
            h5.create_dataset(name, data=arr)
    return path


def test_d4rl_float_column_actions_and_external_files(tmp_path):
    f = make_fields()
    raw = dict(
        f, actions=f["actions"].astype(np.float32).reshape(-1, 1), observations=f["observations"].astype(np.float64)
    )
    path = write_h5(tmp_path / "d4rl.hdf5", **raw)
    with h5py.File(path, "a") as h5:
        h5.create_group("infos").create_dataset("qpos", data=np.zeros((15, 2)))
    ds = load_dataset(path, n_actions=N_ACTIONS)
    assert ds.equals(TransitionDataset(**f, n_actions=N_ACTIONS, meta=DatasetMeta(source_format="d4rl")))
    bad = write_h5(tmp_path / "bad.hdf5", **dict(raw, actions=raw["actions"] + 0.25))
    _load_raises(bad, r"actions: 15 non-integral", n_actions=N_ACTIONS)
    missing = write_h5(tmp_path / "missing.hdf5", **{k: v for k, v in raw.items() if k != "terminals"})
    _load_raises(missing, r"terminals: required field missing")


def test_d4rl_without_next_observations_and_d3rlpy_v1_flags(tmp_path):
    f = make_fields()
    term = f["terminals"]
    episode_terminals = f["terminals"] | f["timeouts"]
    path = write_h5(
        tmp_path / "v1.h5",
        observations=f["observations"],
        actions=f["actions"],
        rewards=f["rewards"],
        terminals=term.astype(np.float32),
        episode_terminals=episode_terminals.astype(np.float32),
    )
    ds = load_dataset(path)
    assert ds.meta.extra["dropped_rows"] == 1 and ds.n_transitions == 14
    assert ds.meta.extra["dropped_reason"].startswith("the last row of each of 1 episode(s) ending in a timeout")
    np.testing.assert_array_equal(ds.timeouts.nonzero()[0], [7])
    np.testing.assert_array_equal(ds.next_observations[:4], f["observations"][1:5])


def test_hdf5_links_strings_and_objects_are_refused(tmp_path):
    f = make_fields()
    other = write_h5(tmp_path / "other.h5", secret=f["rewards"])
    path = write_h5(tmp_path / "ext.h5", **{k: v for k, v in f.items() if k != "rewards"})
    with h5py.File(path, "a") as h5:
        h5["rewards"] = h5py.ExternalLink(str(other), "/secret")
    _load_raises(path, r"rewards: ExternalLink links are not followed")
    path = write_h5(tmp_path / "str.h5", **{k: v for k, v in f.items() if k != "actions"})
    with h5py.File(path, "a") as h5:
        h5.create_dataset("actions", data=["1"] * 15, dtype=h5py.string_dtype())
    _load_raises(path, r"actions: dtype object is not allowed")
    path = write_h5(tmp_path / "meta.h5", **f)
    with h5py.File(path, "a") as h5:
        h5.create_group("metadata").create_dataset("merlion_meta", data='{"colour": 1}', dtype=h5py.string_dtype())
    _load_raises(path, r"meta: unknown key\(s\) colour", n_actions=N_ACTIONS)


def test_hdf5_without_known_keys_is_not_a_dataset(tmp_path):
    path = write_h5(tmp_path / "x.h5", foo=np.zeros(3))
    _load_raises(path, r"not a recognised dataset \(an HDF5 file without")


# ----------------------------------------------------------------------------- d3rlpy


def d3rlpy_dump(episodes: list[dict], path: Path) -> None:
    """Transcription of d3rlpy 2.x ``d3rlpy/dataset/io.py::dump`` (DATASET_VERSION 2.1)."""
    with h5py.File(path, "w") as h5:
        keys = list(episodes[0].keys())
        h5.create_dataset("columns", data=keys)
        h5.create_dataset("num_episodes", data=len(episodes))
        for i, episode in enumerate(episodes):
            for key in keys:
                h5.create_dataset(f"{key}_{i}", data=episode[key])
        h5.create_dataset("version", data="2.1")
        h5.flush()


def d3rlpy_load(path: Path) -> list[dict]:
    """Transcription of d3rlpy 2.x ``d3rlpy/dataset/io.py::load`` (without tuple observations)."""
    episodes = []
    with h5py.File(path, "r") as h5:
        version = h5["version"][()]
        assert version != "2.0"
        keys = list(map(lambda s: s.decode("utf-8"), h5["columns"][()]))
        num_episodes = h5["num_episodes"][()]
        for i in range(num_episodes):
            episodes.append({key: h5[f"{key}_{i}"][()] for key in keys})
    return episodes


def test_our_d3rlpy_file_reads_with_d3rlpy_logic(ds, tmp_path):
    path = save_dataset(ds, tmp_path / "d3.h5", format="d3rlpy")
    eps = d3rlpy_load(path)
    assert [e["terminated"] for e in eps] == [True, False, True]
    assert all(set(e) == {"observations", "actions", "rewards", "terminated"} for e in eps)
    np.testing.assert_array_equal(eps[0]["observations"], ds.observations[:5])
    assert eps[0]["actions"].shape == (5, 1) and eps[0]["rewards"].shape == (5, 1)
    np.testing.assert_array_equal(eps[0]["actions"][:, 0], ds.actions[:5])
    # an unterminated episode keeps its successor observation as an extra (unused) final step,
    # so d3rlpy's transition_count (size - 1) covers exactly our 4 transitions
    np.testing.assert_array_equal(
        eps[1]["observations"], np.concatenate([ds.observations[5:9], ds.next_observations[8:9]])
    )
    assert len(eps[1]["actions"]) - 1 == 4


def test_d3rlpy_written_file_is_read(tmp_path):
    f = make_fields()
    eps = []
    for a, b in ((0, 5), (5, 9), (9, 15)):  # as d3rlpy's EpisodeGenerator slices D4RL arrays
        eps.append(
            {
                "observations": f["observations"][a:b],
                "actions": f["actions"][a:b].astype(np.int32).reshape(-1, 1),
                "rewards": f["rewards"][a:b].reshape(-1, 1),
                "terminated": bool(f["terminals"][b - 1]),
            }
        )
    path = tmp_path / "from_d3rlpy.h5"
    d3rlpy_dump(eps, path)
    assert detect_format(path) == "d3rlpy"
    ds = load_dataset(path, n_actions=N_ACTIONS)
    keep = np.r_[0:8, 9:15]  # the timeout episode's last step has no successor: dropped
    for name in ("observations", "actions", "rewards", "terminals"):
        np.testing.assert_array_equal(getattr(ds, name), f[name][keep], err_msg=name)
    np.testing.assert_array_equal(ds.timeouts.nonzero()[0], [7])
    np.testing.assert_array_equal(ds.next_observations[[0, 1, 5]], f["next_observations"][[0, 1, 5]])
    np.testing.assert_array_equal(ds.next_observations[[4, 13]], ds.observations[[4, 13]])  # terminal: itself
    np.testing.assert_array_equal(ds.next_observations[7], f["observations"][8])
    assert ds.meta == DatasetMeta(
        source_format="d3rlpy",
        extra={
            "dropped_rows": 1,
            "dropped_reason": (
                "the final step of each of 1 episode(s) that did not terminate: it has no next observation, "
                "so no transition "
                "(d3rlpy counts T - 1 transitions in such an episode of T steps; the step's observation is kept as the "
                "previous transition's next observation, its action and reward are unused)"
            ),
        },
    )


def test_d3rlpy_problems(tmp_path):
    f = make_fields()
    ep = {
        "observations": f["observations"][:5],
        "actions": f["actions"][:5].reshape(-1, 1),
        "rewards": f["rewards"][:5].reshape(-1, 1),
        "terminated": True,
    }
    path = tmp_path / "a.h5"
    d3rlpy_dump([ep, dict(ep, actions=ep["actions"][:3])], path)
    _load_raises(path, r"observations_1: shapes .* do not line up")
    d3rlpy_dump([dict(ep, rewards=np.full((5, 1), np.nan, np.float32))], path)
    _load_raises(path, r"rewards_0: 5 non-finite.*first at index 0")
    d3rlpy_dump([ep], path)
    with h5py.File(path, "a") as h5:
        del h5["version"]
        h5.create_dataset("version", data="2.0")
    _load_raises(path, r"version: d3rlpy dataset version '2.0' is not supported")


# ----------------------------------------------------------------------------- Minari interop


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    global minari
    minari = pytest.importorskip("minari")
    root = tmp_path / "minari_datasets"
    root.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def test_minari_reads_our_minari_dataset(ds, minari_root):
    save_dataset(ds, minari_root / "merlion" / "maze-v0", format="minari", dataset_id="merlion/maze-v0")
    mds = minari.load_dataset("merlion/maze-v0")
    assert mds.total_episodes == 3 and mds.total_steps == 15
    assert mds.action_space == minari_space_discrete(16)
    assert mds.observation_space.shape == (3,) and mds.observation_space.dtype == np.float32
    episodes = list(mds.iterate_episodes())
    for ep, (a, b) in zip(episodes, ((0, 5), (5, 9), (9, 15)), strict=True):
        np.testing.assert_array_equal(
            ep.observations, np.concatenate([ds.observations[a:b], ds.next_observations[b - 1 : b]])
        )
        for ours, theirs in (
            (ds.actions, ep.actions),
            (ds.rewards, ep.rewards),
            (ds.terminals, ep.terminations),
            (ds.timeouts, ep.truncations),
        ):
            assert theirs.dtype == ours.dtype and np.array_equal(theirs, ours[a:b])
    assert minari.get_normalized_score(mds, np.array([10.0, -1.0])).tolist() == [1.0, 0.0]


def minari_space_discrete(n):
    import gymnasium as gym

    return gym.spaces.Discrete(n)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_we_read_a_dataset_created_by_minari(minari_root):
    import gymnasium as gym
    from minari.data_collector import EpisodeBuffer

    f = make_fields()
    buffers = []
    for a, b in ((0, 5), (5, 9), (9, 15)):
        obs = np.concatenate([f["observations"][a:b], f["next_observations"][b - 1 : b]])
        buffers.append(
            EpisodeBuffer(
                observations=obs,
                actions=f["actions"][a:b],
                rewards=f["rewards"][a:b].astype(np.float64),
                terminations=f["terminals"][a:b],
                truncations=f["timeouts"][a:b],
            )
        )
    minari.create_dataset_from_buffers(
        "tests/made-v0",
        buffers,
        action_space=gym.spaces.Discrete(N_ACTIONS),
        observation_space=gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
    )
    path = minari_root / "tests" / "made-v0"
    assert detect_format(path) == "minari"
    ds = load_dataset(path)
    assert ds.n_actions == N_ACTIONS
    for name, arr in f.items():
        assert np.array_equal(getattr(ds, name), arr), name
    assert ds.meta == DatasetMeta(source_format="minari", extra={"minari_dataset_id": "tests/made-v0"})
    # minari's ref_min/max_score (written with an eval env) become our normalisers
    md_path = path / "data" / "metadata.json"
    md = json.loads(md_path.read_text())
    md_path.write_text(json.dumps({**md, "ref_min_score": -1.0, "ref_max_score": 10.0}))
    ds = load_dataset(path)
    assert ds.meta.expert_return == 10.0 and ds.meta.random_return == -1.0
    assert ds.normalised_score(4.5) == 50.0


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_minari_unsupported_spaces(minari_root):
    import gymnasium as gym
    from minari.data_collector import EpisodeBuffer

    buf = EpisodeBuffer(
        observations=np.zeros((3, 2), np.float32),
        actions=np.zeros((2, 2), np.float32),
        rewards=np.zeros(2),
        terminations=np.array([False, True]),
        truncations=np.zeros(2, bool),
    )
    minari.create_dataset_from_buffers(
        "tests/box-v0",
        [buf],
        action_space=gym.spaces.Box(-1, 1, (2,)),
        observation_space=gym.spaces.Box(-1, 1, (2,), np.float32),
    )
    _load_raises(minari_root / "tests" / "box-v0", r"action_space: only Discrete\(n\) with start 0")


# ----------------------------------------------------------------------------- propensities

PROBS = np.linspace(0.05, 1.0, 15).astype(np.float32)


@pytest.fixture
def pds(ds) -> TransitionDataset:
    return dataclasses.replace(ds, propensities=PROBS.copy())


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("fmt", FORMATS)
def test_propensities_round_trip_in_every_format(pds, fmt, compressed, tmp_path):
    path = save_dataset(pds, tmp_path / MISLEADING[fmt], format=fmt, compressed=compressed)
    back = load_dataset(path)
    assert back.propensities.dtype == np.float32 and np.array_equal(back.propensities, PROBS)
    assert back.equals(as_read(pds, fmt)) and back.content_digest() == pds.content_digest()
    # and a dataset without them reads back without them, in the same place
    without = dataclasses.replace(pds, propensities=None)
    plain = load_dataset(save_dataset(without, path, format=fmt))
    assert plain.propensities is None and plain.content_digest() == without.content_digest()


def test_propensity_files_in_each_layout(pds, tmp_path):
    native = save_dataset(pds, tmp_path / "n")
    assert isinstance(load_dataset(native).propensities, np.memmap)
    np.testing.assert_array_equal(np.load(native / "propensities.npy"), PROBS)
    with zipfile.ZipFile(save_dataset(pds, tmp_path / "p.npz", format="npz")) as zf:
        assert "propensities.npy" in zf.namelist()
    with h5py.File(save_dataset(pds, tmp_path / "d4rl.h5", format="d4rl")) as h5:
        np.testing.assert_array_equal(h5["infos/propensities"][()], PROBS)
    with h5py.File(save_dataset(pds, tmp_path / "d3.h5", format="d3rlpy")) as h5:
        np.testing.assert_array_equal(h5["merlion_propensities"][()], PROBS)
        assert [c.decode() for c in h5["columns"][()]] == ["observations", "actions", "rewards", "terminated"]
    root = save_dataset(pds, tmp_path / "m", format="minari")
    with h5py.File(root / "data" / "main_data.hdf5") as h5:
        for i, (a, b) in enumerate(((0, 5), (5, 9), (9, 15))):
            np.testing.assert_array_equal(h5[f"episode_{i}/infos/propensities"][()], PROBS[a:b])
    # d3rlpy's own reader still sees exactly its four columns
    assert all(set(e) == {"observations", "actions", "rewards", "terminated"} for e in d3rlpy_load(tmp_path / "d3.h5"))


def test_native_resave_without_propensities_drops_the_file(pds, tmp_path):
    path = save_dataset(pds, tmp_path / "n")
    save_dataset(dataclasses.replace(pds, propensities=None), path)
    assert not (path / "propensities.npy").exists() and load_dataset(path).propensities is None
    save_dataset(pds, path)
    (path / "propensities.npy").rename(tmp_path / "elsewhere.npy")
    (path / "propensities.npy").symlink_to(tmp_path / "elsewhere.npy")
    _load_raises(path, r"propensities: propensities.npy is a symlink")
    (path / "propensities.npy").unlink()
    np.save(path / "propensities.npy", PROBS[:10])
    _load_raises(path, r"propensities: length 10 differs from observations length 15")


def test_propensity_problems_are_reported_per_format(tmp_path):
    f = make_fields()
    bad = PROBS.copy()
    bad[6] = 0.0
    _load_raises(
        write_npz(tmp_path / "zero.npz", **f, propensities=bad),
        r"propensities: 1 value\(s\) are 0 \(first at index 6\)",
    )
    _load_raises(
        write_npz(tmp_path / "big.npz", **f, propensities=PROBS * 2), r"propensities: 8 value\(s\) outside \[0, 1\]"
    )
    _load_raises(
        write_npz(tmp_path / "str.npz", **f, propensities=np.array(["x"] * 15)),
        r"propensities: dtype <U1 is not allowed",
    )
    _load_raises(
        write_npz(tmp_path / "obj.npz", **f, propensities=np.array([None] * 15, dtype=object)),
        r"propensities: dtype object is not allowed",
    )
    path = write_h5(tmp_path / "nan.h5", **f)
    with h5py.File(path, "a") as h5:
        h5.create_group("infos").create_dataset("propensities", data=np.where(np.arange(15) == 2, np.nan, 0.5))
    _load_raises(path, r"propensities: 1 non-finite value\(s\) \(NaN or inf\), first at index 2", n_actions=N_ACTIONS)
    path = write_h5(tmp_path / "str.h5", **f)
    with h5py.File(path, "a") as h5:
        h5.create_group("infos").create_dataset("propensities", data=["0.5"] * 15, dtype=h5py.string_dtype())
    _load_raises(path, r"infos/propensities: dtype object is not allowed", n_actions=N_ACTIONS)


def test_propensities_count_against_max_bytes(pds, tmp_path):
    for fmt in FORMATS:
        path = save_dataset(pds, tmp_path / f"{fmt}-data", format=fmt)
        plain = save_dataset(dataclasses.replace(pds, propensities=None), tmp_path / f"{fmt}-plain", format=fmt)
        need = next(n for n in range(0, 10**5, 4) if _loads(plain, n))  # what the six fields take
        assert not _loads(path, need) and _loads(path, need + PROBS.nbytes), fmt


def _loads(path: Path, max_bytes: int) -> bool:
    try:
        load_dataset(path, max_bytes=max_bytes)
        return True
    except DatasetError as exc:
        assert "max_bytes" in str(exc) or "exceeds the cap" in str(exc), str(exc)
        return False


def test_d4rl_propensity_alias_and_derived_next_observations(tmp_path):
    f = make_fields()
    path = write_h5(tmp_path / "alias.h5", **f)
    with h5py.File(path, "a") as h5:
        h5.create_group("infos").create_dataset("action_probs", data=PROBS.astype(np.float64).reshape(-1, 1))
    np.testing.assert_array_equal(load_dataset(path, n_actions=N_ACTIONS).propensities, PROBS)
    with h5py.File(path, "a") as h5:
        h5["infos"].create_dataset("propensities", data=np.full(15, 0.5))  # the own name wins
    np.testing.assert_array_equal(load_dataset(path, n_actions=N_ACTIONS).propensities, np.full(15, 0.5, np.float32))
    # without next_observations, the dropped timeout transition takes its propensity with it
    path = write_h5(tmp_path / "derived.h5", **{k: v for k, v in f.items() if k != "next_observations"})
    with h5py.File(path, "a") as h5:
        h5.create_group("infos").create_dataset("propensities", data=PROBS)
    ds = load_dataset(path)
    assert ds.n_transitions == 14
    np.testing.assert_array_equal(ds.propensities, np.delete(PROBS, 8))
    # an infos that is not a plain group is ignored, as before
    path = write_h5(tmp_path / "soft.h5", **f, other=PROBS)
    with h5py.File(path, "a") as h5:
        h5["infos"] = h5py.SoftLink("/other")
    assert load_dataset(path, n_actions=N_ACTIONS).propensities is None


def test_d3rlpy_propensities_must_match_the_transitions(pds, tmp_path):
    path = save_dataset(pds, tmp_path / "d3.h5", format="d3rlpy")
    with h5py.File(path, "a") as h5:
        del h5["merlion_propensities"]
        h5.create_dataset("merlion_propensities", data=PROBS[:12])
    _load_raises(path, r"merlion_propensities: shape \(12,\) does not match the 15 transitions read")


def test_minari_propensity_lengths_and_gaps(pds, tmp_path):
    root = save_dataset(pds, tmp_path / "m", format="minari")
    main = root / "data" / "main_data.hdf5"
    with h5py.File(main, "a") as h5:  # Minari's DataCollector layout: the reset's info first, [T + 1]
        del h5["episode_1/infos/propensities"]
        h5["episode_1/infos"].create_dataset("propensities", data=np.concatenate([[1.0], PROBS[5:9]]))
    np.testing.assert_array_equal(load_dataset(root).propensities, PROBS)
    with h5py.File(main, "a") as h5:
        del h5["episode_2/infos/propensities"]
        h5["episode_2/infos"].create_dataset("other", data=np.zeros(6))
    _load_raises(root, r"episode_2/infos/propensities: missing, but other episodes have it")
    with h5py.File(main, "a") as h5:
        h5["episode_2/infos"].create_dataset("propensities", data=np.full(3, 0.5))
    _load_raises(root, r"episode_2/infos/propensities: shape \(3,\) must be \[T\] or \[T\+1\] for an episode of T=6")


def test_minari_reads_our_propensities(pds, minari_root):
    save_dataset(pds, minari_root / "merlion" / "probs-v0", format="minari", dataset_id="merlion/probs-v0")
    episodes = list(minari.load_dataset("merlion/probs-v0").iterate_episodes())
    for ep, (a, b) in zip(episodes, ((0, 5), (5, 9), (9, 15)), strict=True):
        np.testing.assert_array_equal(ep.infos["propensities"], PROBS[a:b])


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_we_read_propensities_recorded_by_minari(minari_root):
    import gymnasium as gym
    from minari.data_collector import EpisodeBuffer

    f = make_fields()
    buffers = []
    for a, b in ((0, 5), (5, 9), (9, 15)):  # infos as its DataCollector records them: reset first, T + 1
        obs = np.concatenate([f["observations"][a:b], f["next_observations"][b - 1 : b]])
        buffers.append(
            EpisodeBuffer(
                observations=obs,
                actions=f["actions"][a:b],
                rewards=f["rewards"][a:b].astype(np.float64),
                terminations=f["terminals"][a:b],
                truncations=f["timeouts"][a:b],
                infos={"propensities": np.concatenate([[1.0], PROBS[a:b]])},
            )
        )
    minari.create_dataset_from_buffers(
        "tests/probs-v0",
        buffers,
        action_space=gym.spaces.Discrete(N_ACTIONS),
        observation_space=gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
    )
    ds = load_dataset(minari_root / "tests" / "probs-v0")
    np.testing.assert_array_equal(ds.propensities, PROBS)


# ------------------------------------------------------------------ action-count cap, every row, dropped rows

BIG = 10**12


def _h5_replace(path: Path, name: str, data) -> None:
    with h5py.File(path, "a") as h5:
        del h5[name]
        h5.create_dataset(name, data=data)


def _store_n_actions(path: Path, fmt: str, n: int) -> None:
    """Make a file we wrote claim ``n`` actions, where its format stores the count."""
    if fmt == "native":
        doc = json.loads((path / "meta.json").read_text())
        (path / "meta.json").write_text(json.dumps({**doc, "n_actions": n}))
    elif fmt == "npz":
        with np.load(path, allow_pickle=False) as z:
            members = {k: z[k] for k in z.files}
        write_npz(path, **dict(members, n_actions=np.int64(n)))
    elif fmt == "d4rl":
        _h5_replace(path, "metadata/n_actions", np.int64(n))
    elif fmt == "d3rlpy":
        with h5py.File(path, "a") as h5:
            doc = json.loads(h5["merlion_meta"][()])
            del h5["merlion_meta"]
            h5.create_dataset("merlion_meta", data=json.dumps({**doc, "n_actions": n}), dtype=h5py.string_dtype())
    else:
        md_path = path / "data" / "metadata.json"
        md = json.loads(md_path.read_text())
        md["action_space"] = json.dumps({**json.loads(md["action_space"]), "n": n})
        md["merlion"]["n_actions"] = n
        md_path.write_text(json.dumps(md))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_stored_action_count_above_the_cap_is_refused_in_every_format(ds, fmt, tmp_path):
    path = save_dataset(ds, tmp_path / MISLEADING[fmt], format=fmt)
    _store_n_actions(path, fmt, BIG + 1)
    msg = _load_raises(
        path,
        r"n_actions: 1000000000001 exceeds the action-count cap max_actions=10000000 "
        r"\(MAX_ACTIONS\); pass max_actions=1000000000001 \(or more: load_dataset",
    )
    assert msg.startswith(f"{path}: n_actions: ")
    assert load_dataset(path, max_actions=BIG + 1).n_actions == BIG + 1  # the argument raises the cap
    _load_raises(path, r"n_actions: 1000000000001 exceeds the action-count cap max_actions=50; pass", max_actions=50)
    _load_raises(path, r"max_actions: expected an int >= 2, got 1", max_actions=1)


def test_an_inferred_action_count_above_the_cap_is_refused_in_every_reader(tmp_path):
    """One id of 10^12 in a file that stores no action count: today 'valid' with 10^12 + 1 actions."""
    f = make_fields()
    acts = f["actions"].copy()
    acts[6] = BIG
    expect = (
        r"actions{}: id 1000000000000 at index {} implies n_actions >= 1000000000001, which exceeds the "
        r"action-count cap max_actions=10000000 \(MAX_ACTIONS\); pass max_actions=1000000000001"
    )
    npz = write_npz(tmp_path / "x.npz", **dict(f, actions=acts))
    d4rl = write_h5(tmp_path / "x.h5", **dict(f, actions=acts))
    for path in (npz, d4rl):
        _load_raises(path, expect.format("", 6))
        assert load_dataset(path, max_actions=BIG + 1).n_actions == BIG + 1
    eps = [
        {
            "observations": f["observations"][a:b],
            "actions": acts[a:b].reshape(-1, 1),
            "rewards": f["rewards"][a:b].reshape(-1, 1),
            "terminated": bool(f["terminals"][b - 1]),
        }
        for a, b in ((0, 5), (5, 9), (9, 15))
    ]
    d3rlpy_dump(eps, tmp_path / "d3.h5")
    _load_raises(tmp_path / "d3.h5", expect.format("_1", 1))
    root = save_dataset(TransitionDataset(**f, n_actions=N_ACTIONS), tmp_path / "m", format="minari")
    md_path = root / "data" / "metadata.json"
    md = json.loads(md_path.read_text())
    md_path.write_text(json.dumps({k: v for k, v in md.items() if k not in ("action_space", "merlion")}))
    _h5_replace(root / "data" / "main_data.hdf5", "episode_1/actions", acts[5:9])
    _load_raises(root, expect.format("", 1).replace("actions", "episode_1/actions", 1))


def _open_ended(f: dict) -> dict:
    """make_fields without next_observations and with an open final episode: a reader deriving
    next_observations drops row 8 (a timeout) and row 14 (the file's final row, no episode end)."""
    f = {k: v.copy() for k, v in f.items() if k != "next_observations"}
    f["terminals"][14] = False
    return f


@pytest.mark.parametrize("fmt", ["npz", "d4rl"])
def test_bad_values_in_rows_a_reader_drops_are_refused_npz_d4rl(fmt, tmp_path):
    base = _open_ended(make_fields())
    write = (lambda p, **a: write_npz(p.with_suffix(".npz"), **a)) if fmt == "npz" else write_h5
    ok = load_dataset(write(tmp_path / "ok", **base))
    assert ok.n_transitions == 13 and ok.meta.extra["dropped_rows"] == 2
    cases = [
        ("observations", (14, 2), np.nan, r"observations: 1 non-finite value\(s\) \(NaN or inf\), first at index 14"),
        ("observations", (8, 0), -np.inf, r"observations: 1 non-finite value\(s\) \(NaN or inf\), first at index 8"),
        ("rewards", 8, np.nan, r"rewards: 1 non-finite value\(s\) \(NaN or inf\), first at index 8"),
        ("rewards", 14, 1e300, r"rewards: 1 value\(s\) beyond the float32 range .*first at index 14"),
        ("actions", 14, np.nan, r"actions: 1 non-integral value\(s\).*first at index 14"),
        ("actions", 8, -3, r"actions: 1 negative ids.*first at index 8: -3"),
        ("propensities", 14, np.inf, r"propensities: 1 non-finite value\(s\) \(NaN or inf\), first at index 14"),
        ("propensities", 8, 0.0, r"propensities: 1 value\(s\) outside \(0, 1\] \(first at index 8: 0.0\)"),
    ]
    for i, (name, where, value, match) in enumerate(cases):
        fields = dict(base, propensities=np.full(15, 0.5))
        arr = fields[name].astype(np.float64)
        arr[where] = value
        fields[name] = arr
        path = write(tmp_path / f"bad{i}", **fields)
        if fmt == "d4rl" and name == "propensities":
            with h5py.File(path, "a") as h5:
                h5.create_group("infos").create_dataset("propensities", data=h5["propensities"][()])
                del h5["propensities"]
            match = match.replace("propensities", "infos/propensities") if "non-finite" in match else match
        _load_raises(path, match, n_actions=N_ACTIONS)


def test_bad_values_in_steps_d3rlpy_and_minari_drop_are_refused(ds, pds, tmp_path):
    f = make_fields()
    eps = [
        {
            "observations": f["observations"][a:b],
            "actions": f["actions"][a:b].reshape(-1, 1),
            "rewards": f["rewards"][a:b].reshape(-1, 1),
            "terminated": bool(f["terminals"][b - 1]),
        }
        for a, b in ((0, 5), (5, 9), (9, 15))
    ]
    path = tmp_path / "theirs.h5"
    d3rlpy_dump(eps, path)  # episode 1 (4 steps) did not terminate: its step 3 is no transition
    assert load_dataset(path).meta.extra["dropped_rows"] == 1
    for name, value, match in (
        ("rewards_1", np.nan, r"rewards_1: 1 non-finite value\(s\) \(NaN or inf\), first at index 3"),
        ("actions_1", -1, r"actions_1: 1 negative ids.*first at index 3: -1"),
        ("observations_1", np.inf, r"observations_1: 3 non-finite.*first at index 3"),
    ):
        d3rlpy_dump(eps, path)
        with h5py.File(path, "a") as h5:
            data = h5[name][()].astype(np.int64 if isinstance(value, int) else np.float64)
            data[3] = value
        _h5_replace(path, name, data)
        _load_raises(path, match)
    ours = save_dataset(ds, tmp_path / "ours.h5", format="d3rlpy")  # our own appended successor step
    assert "dropped_rows" not in load_dataset(ours).meta.extra  # it is ours, not data: nothing reported
    with h5py.File(ours, "a") as h5:
        rewards = h5["rewards_1"][()]
    rewards[-1] = np.nan
    _h5_replace(ours, "rewards_1", rewards)
    _load_raises(ours, r"rewards_1: 1 non-finite value\(s\) \(NaN or inf\), first at index 4")
    # Minari: the [T + 1] propensities' first entry (the reset's info) is not used, but is read and checked
    root = save_dataset(pds, tmp_path / "m", format="minari")
    main = root / "data" / "main_data.hdf5"
    _h5_replace(main, "episode_1/infos/propensities", np.concatenate([[np.nan], PROBS[5:9]]))
    _load_raises(root, r"episode_1/infos/propensities: 1 non-finite value\(s\) \(NaN or inf\), first at index 0")
    _h5_replace(main, "episode_1/infos/propensities", np.concatenate([[0.0], PROBS[5:9]]))  # a reset placeholder
    assert np.array_equal(load_dataset(root).propensities, PROBS)
    _h5_replace(main, "episode_1/infos/propensities", np.concatenate([[1.0], PROBS[5:8], [1.5]]))
    _load_raises(root, r"episode_1/infos/propensities: 1 value\(s\) outside \(0, 1\] \(first at index 4: 1.5\)")


def test_flags_not_0_1_and_wide_columns_are_refused_by_every_reader(ds, tmp_path):
    root = save_dataset(ds, tmp_path / "m", format="minari")
    main = root / "data" / "main_data.hdf5"
    _h5_replace(main, "episode_0/terminations", np.array([0, 2, 0, 0, 1], np.int8))
    _load_raises(
        root,
        r"episode_0/terminations: 1 value\(s\) not 0/1 \(first at index 1: np.int8\(2\)\)|"
        r"episode_0/terminations: 1 value\(s\) not 0/1 \(first at index 1: 2\)",
    )
    _h5_replace(main, "episode_0/terminations", ds.terminals[:5])
    _h5_replace(main, "episode_2/truncations", np.full(6, np.nan))
    _load_raises(root, r"episode_2/truncations: 6 value\(s\) not 0/1 \(first at index 0")
    _h5_replace(main, "episode_2/truncations", ds.timeouts[9:])
    _h5_replace(main, "episode_2/actions", np.stack([ds.actions[9:], ds.actions[9:]], axis=1))
    _load_raises(root, r"episode_2/observations: shape \(7, 3\) must be \[T\+1, S\] with actions/rewards/")
    d3 = save_dataset(ds, tmp_path / "d3.h5", format="d3rlpy")
    _h5_replace(d3, "terminated_2", 2.0)
    _load_raises(d3, r"terminated_2: 2.0 is not a 0/1 flag")
    _h5_replace(d3, "terminated_2", np.nan)
    _load_raises(d3, r"terminated_2: nan is not a 0/1 flag")
    _h5_replace(d3, "terminated_2", True)
    _h5_replace(d3, "actions_0", np.zeros((5, 2), np.int64))
    _load_raises(
        d3, r"observations_0: shapes \(5, 3\)/\(5, 2\)/\(5, 1\) of observations/actions/rewards do not line up"
    )
    f = make_fields()
    v1 = write_h5(
        tmp_path / "v1.h5",
        **{k: v for k, v in f.items() if k not in ("timeouts", "next_observations")},
        episode_terminals=np.where(f["terminals"] | f["timeouts"], 0.5, 0.0),
    )
    _load_raises(
        v1,
        r"episode_terminals: 3 value\(s\) not 0/1 \(first at index 4: np.float64\(0.5\)\)|"
        r"episode_terminals: 3 value\(s\) not 0/1 \(first at index 4: 0.5\)",
    )


def _timeout_episodes(n_eps: int, length: int) -> dict:
    """``n_eps`` episodes of ``length`` rows, each cut off by a timeout, without next_observations."""
    rng = np.random.default_rng(3)
    n = n_eps * length
    tout = np.zeros(n, bool)
    tout[length - 1 :: length] = True
    return {
        "observations": rng.normal(size=(n, 2)).astype(np.float32),
        "actions": rng.integers(0, 4, n),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": tout,
    }


def test_dropped_rows_are_recorded_and_summarised(ds, tmp_path, capsys):
    import argparse

    from merlion_core.cli.data import cmd_dataset_validate
    from merlion_core.data.summary import dataset_summary

    path = write_h5(tmp_path / "d4rl.hdf5", **_timeout_episodes(10, 100))
    loaded = load_dataset(path)
    reason = (
        "the last row of each of 10 episode(s) ending in a timeout (the next row starts a new episode): "
        "no next observation in the file (next_observations derived from observations)"
    )
    assert loaded.n_transitions == 990
    assert loaded.meta.extra["dropped_rows"] == 10 and loaded.meta.extra["dropped_reason"] == reason
    summary = dataset_summary(loaded, "d4rl")
    assert summary["n_transitions"] == 990 and summary["dropped_rows"] == 10 and summary["dropped_reason"] == reason
    assert cmd_dataset_validate(argparse.Namespace(path=str(path))) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        f"valid: {path}: d4rl, 990 transitions, 10 episodes, 4 actions, obs_dim 2, "
        f"propensities no, 10 rows dropped: {reason}; names no simulator"
    ), out
    assert len(out.splitlines()) == 1
    # nothing dropped: nothing said
    plain = save_dataset(ds, tmp_path / "plain")
    assert dataset_summary(load_dataset(plain), "native")["dropped_rows"] == 0
    assert cmd_dataset_validate(argparse.Namespace(path=str(plain))) == 0
    assert "rows dropped" not in capsys.readouterr().out
    # a Minari episode without steps has an observation and no transition
    root = save_dataset(ds, tmp_path / "m", format="minari")
    with h5py.File(root / "data" / "main_data.hdf5", "a") as h5:
        g = h5.create_group("episode_3")
        g.create_dataset("observations", data=np.zeros((1, 3), np.float32))
        for name, dtype in (
            ("actions", np.int64),
            ("rewards", np.float32),
            ("terminations", bool),
            ("truncations", bool),
        ):
            g.create_dataset(name, data=np.zeros(0, dtype))
    md = json.loads((root / "data" / "metadata.json").read_text())
    (root / "data" / "metadata.json").write_text(json.dumps({**md, "total_episodes": 4}))
    extra = load_dataset(root).meta.extra
    assert extra["dropped_rows"] == 1
    assert extra["dropped_reason"] == "1 episode(s) of 0 steps (a single observation, no action): no transition"


def test_hdf5_data_declared_but_not_stored_is_refused_before_reading(ds, tmp_path):
    """A tiny file whose dataspace declares 10^7 rows (fill value, never written) must not make the
    reader allocate them: unfiltered data must be stored in full, compressed data within deflate's ratio."""
    for fmt, name in (("d4rl", "observations"), ("d3rlpy", "rewards_1"), ("minari", "episode_2/actions")):
        root = save_dataset(ds, tmp_path / fmt, format=fmt)
        h5_path = root / "data" / "main_data.hdf5" if fmt == "minari" else root
        for kw in ({}, {"compression": "gzip", "chunks": (1 << 16,)}):
            with h5py.File(h5_path, "a") as h5:
                dtype = h5[name].dtype
                del h5[name]
                h5.create_dataset(name, shape=(10**7,), dtype=dtype, **kw)
            tracemalloc.start()
            try:
                msg = _load_raises(root, rf"{name}: declares {10**7 * dtype.itemsize} bytes")
            finally:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            assert peak < 4 << 20, peak
            assert ("unallocated or truncated" in msg) != bool(kw) and ("compression bomb" in msg) == bool(kw)
