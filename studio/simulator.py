"""Datasets that name no simulator: what they allow, which registered environments could have
produced them, and naming one in the dataset itself (or taking it back) so that every job sees it.

Persistence: the dataset keeps its path and its format. Its metadata (env_id, env_config {},
expert_return / random_return from ``collect.env_normalisers``) is written through
``merlion_core.data.io`` (``save_dataset`` / ``load_dataset``: nothing is unpickled), and only for
datasets in the studio's data folder (uploads, files put there), never a job's output. The new
version is loaded back and checked (the same transitions by content digest, the intended env id)
before it replaces the old one by one atomic rename, so a reader (a running job, a memory map)
sees the old or the new dataset, never half of one:

- npz, D4RL and d3rlpy files: a full copy is written beside the file, checked, renamed over it
  (what MERLION does not read, e.g. D4RL ``infos/``, is not kept);
- the native directory: a copy is written beside it and checked; its ``meta.json`` (the only file
  that differs) is renamed into the dataset;
- a Minari folder: only the ``merlion`` block of its ``metadata.json`` changes (the rest of the
  file is kept), written atomically;
- both folders are checked again afterwards and get their old metadata file back if that fails.

The values replaced are kept in ``meta.extra[NAMED_KEY]``; ``clear_env`` restores them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from merlion_core.data.dataset import DatasetError, DatasetMeta, TransitionDataset
from merlion_core.data.io import (
    MAX_JSON_BYTES,
    atomic_write,
    detect_format,
    dump_json,
    load_dataset,
    merlion_json,
    read_json,
    save_dataset,
)
from studio import settings

NO_SIMULATOR_NOTE = (
    "This dataset names no simulator: agents trained on it are scored by off-policy "
    "evaluation on held-out episodes, not by running them"
)
NAMED_KEY = "studio_named_env"
"""meta.extra key of a simulator named in the app: {"env_id": ..., "previous": {the values replaced}}."""
RESTORED = ("env_config", "expert_return", "random_return")


class SimulatorError(ValueError):
    """Naming or clearing a dataset's simulator failed (one line; the dataset is left as it was)."""


@dataclass(frozen=True)
class EnvShape:
    """A registered environment (default config): its observation size and action count, or why
    its model cannot be built here (e.g. the dialogue env without its MultiWOZ files)."""

    env_id: str
    short_name: str
    description: str
    obs_dim: int | None
    n_actions: int | None
    problem: str | None = None

    @property
    def label(self) -> str:
        return f"{self.short_name} ({self.env_id}): {self.description}"


@functools.lru_cache(maxsize=1)
def env_shapes() -> tuple[EnvShape, ...]:
    """Every registered environment with its default config's obs_dim and n_actions."""
    from merlion_core.envs import ENV_SPECS, make_model

    out = []
    for env_id, spec in ENV_SPECS.items():
        try:
            model = make_model(env_id)
        except (ValueError, OSError, ImportError) as exc:
            problem = " ".join(str(exc).split())[:200]
            out.append(EnvShape(env_id, spec.short_name, spec.description, None, None, problem))
        else:
            out.append(EnvShape(env_id, spec.short_name, spec.description, int(model.obs_dim), int(model.n_actions)))
    return tuple(out)


def matching_envs(obs_dim: int, n_actions: int, shapes: tuple[EnvShape, ...] | None = None) -> list[EnvShape]:
    """The registered environments whose observation size and action count are the dataset's."""
    return [
        s
        for s in (env_shapes() if shapes is None else shapes)
        if s.obs_dim == int(obs_dim) and s.n_actions == int(n_actions)
    ]


def no_match_text(obs_dim: int, n_actions: int, inferred: bool = False) -> str:
    """Why no simulator is offered: the registered shapes, side by side with the dataset's."""
    known = ", ".join(f"{s.short_name} ({s.obs_dim}, {s.n_actions})" for s in env_shapes() if s.problem is None)
    text = (
        f"No registered environment has this dataset's observation size {obs_dim} and {n_actions} actions "
        f"(registered, as (observation size, actions): {known}), so none can be named."
    )
    missing = [s.short_name for s in env_shapes() if s.problem is not None]
    if missing:
        text += f" Not checked, as their models cannot be built here: {', '.join(missing)}."
    if inferred:
        text += (
            f" The action count {n_actions} was inferred from the largest action id in the file; a file "
            "that records its action count could match an environment with more actions."
        )
    return text


def named_in_studio(meta: DatasetMeta) -> bool:
    """Whether the dataset's simulator was named here (and so can be taken back)."""
    return isinstance(meta.extra.get(NAMED_KEY), dict)


def editable_problem(path: str | os.PathLike) -> str | None:
    """None when the app may rewrite this dataset's metadata; else why not (one line)."""
    p = Path(path)
    root = settings.data_dir().resolve()
    if p.is_symlink() or not p.exists():
        return f"{p.name}: not there or a link; its metadata is left alone"
    if not p.resolve().is_relative_to(root):
        return (
            f"{p.name}: only datasets in the data folder ({root}) are edited here; "
            "a job's output keeps what its job recorded"
        )
    return None


def name_env(path: str | os.PathLike, env_id: str) -> DatasetMeta:
    """Record ``env_id`` (a registered environment whose obs_dim and n_actions match, default config)
    as the simulator of the dataset at ``path``; returns the new meta."""
    from merlion_core.data.collect import env_normalisers
    from merlion_core.envs import resolve_env_id

    ds, fmt = _open(path)
    if ds.meta.env_id:
        raise SimulatorError(f"{Path(path).name}: already names the simulator {ds.meta.env_id}")
    try:
        env_id = resolve_env_id(env_id)
    except ValueError as exc:
        raise SimulatorError(str(exc)) from None
    if env_id not in {s.env_id for s in matching_envs(ds.obs_dim, ds.n_actions)}:
        raise SimulatorError(
            f"{env_id}: its observations or action count differ from this dataset's "
            f"({ds.obs_dim} values, {ds.n_actions} actions); not named"
        )
    try:
        expert, random = env_normalisers(env_id)
    except (ValueError, OSError) as exc:
        raise SimulatorError(f"{env_id}: cannot measure its expert and random returns here ({exc})") from None
    previous = {name: getattr(ds.meta, name) for name in RESTORED}
    meta = dataclasses.replace(
        ds.meta,
        env_id=env_id,
        env_config={},
        expert_return=float(expert),
        random_return=float(random),
        extra={**ds.meta.extra, NAMED_KEY: {"env_id": env_id, "previous": previous}},
    )
    return _rewrite(Path(path), ds, fmt, meta)


def clear_env(path: str | os.PathLike) -> DatasetMeta:
    """Undo ``name_env``: no simulator again, the replaced values back; returns the new meta."""
    ds, fmt = _open(path)
    named = ds.meta.extra.get(NAMED_KEY)
    if not isinstance(named, dict):
        raise SimulatorError(f"{Path(path).name}: its simulator was not named in the app; left as recorded")
    previous = named.get("previous")
    if not isinstance(previous, dict):
        previous = {}
    restored = {name: previous.get(name, getattr(DatasetMeta(), name)) for name in RESTORED}
    extra = {k: v for k, v in ds.meta.extra.items() if k != NAMED_KEY}
    try:
        meta = dataclasses.replace(ds.meta, env_id=None, extra=extra, **restored)
    except DatasetError as exc:
        raise SimulatorError(f"{Path(path).name}: {exc}") from None
    return _rewrite(Path(path), ds, fmt, meta)


# ---------------------------------------------------------------------------- writing
def _open(path: str | os.PathLike) -> tuple[TransitionDataset, str]:
    problem = editable_problem(path)
    if problem:
        raise SimulatorError(problem)
    try:
        fmt = detect_format(path)
        return load_dataset(path, format=fmt, mmap=False), fmt
    except DatasetError as exc:
        raise SimulatorError(str(exc)) from None


def _sibling(p: Path) -> Path:
    return p.with_name(f".{p.name}.naming-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _check(path: Path, fmt: str, digest: str, meta: DatasetMeta, shown: str) -> None:
    """Raise SimulatorError unless ``path`` loads with the same transitions and the new meta."""
    try:
        ds = load_dataset(path, format=fmt, mmap=False)
    except DatasetError as exc:
        raise SimulatorError(f"{shown}: the rewritten {fmt} dataset does not load ({exc}); left as it was") from None
    if ds.content_digest() != digest:
        raise SimulatorError(
            f"{shown}: its {fmt} format cannot record a simulator without changing its transitions; left as it was"
        )
    if ds.meta.env_id != meta.env_id or ds.meta.extra.get(NAMED_KEY) != meta.extra.get(NAMED_KEY):
        raise SimulatorError(f"{shown}: the rewritten {fmt} dataset does not read back its simulator; left as it was")


def _rewrite(p: Path, ds: TransitionDataset, fmt: str, meta: DatasetMeta) -> DatasetMeta:
    new = dataclasses.replace(ds, meta=meta)
    digest, shown = ds.content_digest(), p.name
    try:
        if fmt in ("native", "minari"):
            _swap_meta_file(p, fmt, new, digest, shown)
            return meta
        tmp = _sibling(p)
        try:  # a checked full copy, renamed over the file
            save_dataset(new, tmp, format=fmt)
            _check(tmp, fmt, digest, meta, shown)
            os.replace(tmp, p)
        finally:
            tmp.unlink(missing_ok=True)
    except DatasetError as exc:
        raise SimulatorError(f"{shown}: cannot write its metadata ({exc})") from None
    except OSError as exc:
        raise SimulatorError(f"{shown}: cannot write its metadata ({type(exc).__name__}: {exc})") from None
    return meta


def _swap_meta_file(p: Path, fmt: str, new: TransitionDataset, digest: str, shown: str) -> None:
    """Folder formats: replace only the file that holds the metadata (native: meta.json, from a checked
    native copy written beside the folder; Minari: metadata.json with its ``merlion`` block replaced and
    the rest kept), then check the folder and put the old file back if the check fails."""
    if fmt == "native":
        target, text = p / "meta.json", None
    else:
        target = (p / "data" / "metadata.json") if (p / "data" / "metadata.json").is_file() else p / "metadata.json"
        md = read_json(target, "metadata.json", MAX_JSON_BYTES)
        if not isinstance(md, dict):
            raise SimulatorError(f"{shown}: metadata.json is not a JSON object; left alone")
        text = dump_json({**md, "merlion": json.loads(merlion_json(new))}) + "\n"
    if target.is_symlink():
        raise SimulatorError(f"{shown}: its {target.name} is a link; left alone")
    old = target.read_bytes()
    if text is None:
        tmp = _sibling(p)
        try:
            save_dataset(new, tmp, format="native")
            _check(tmp, fmt, digest, new.meta, shown)
            os.replace(tmp / "meta.json", target)  # the arrays are the same bytes: only meta.json differs
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:

        def write_text(t: Path) -> None:
            t.write_text(text, encoding="utf-8")

        atomic_write(target, write_text)
    try:
        _check(p, fmt, digest, new.meta, shown)
    except SimulatorError:

        def write_old(t: Path) -> None:
            t.write_bytes(old)

        atomic_write(target, write_old)
        raise


def shape_of_encoder(path: str | os.PathLike) -> tuple[int, int, str | None] | None:
    """(obs_dim, n_actions, env id recorded at training) from an encoder's config.json, or None."""
    file = Path(path) / "config.json"
    try:
        if file.stat().st_size > 1 << 20:
            return None
        doc = json.loads(file.read_text(encoding="utf-8"))
        return int(doc["obs_dim"]), int(doc["n_actions"]), doc.get("env_id") or None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pairable(first: str | os.PathLike, others: list[str]) -> tuple[list[str], list[str]]:
    """(encoders that can be shown beside ``first``, those hidden): the same observation size and
    action count, and not two different recorded simulators (the same shapes can mean different
    actions, e.g. the maze and the multi-step maze)."""
    ref = shape_of_encoder(first)
    keep: list[str] = []
    hidden: list[str] = []
    for path in others:
        shape = shape_of_encoder(path)
        same = (
            ref is not None
            and shape is not None
            and shape[:2] == ref[:2]
            and (ref[2] is None or shape[2] is None or ref[2] == shape[2])
        )
        (keep if same else hidden).append(path)
    return keep, hidden


def needs_true_model_text(what: str) -> str:
    """The up-front note of a page whose encoder's dataset names no simulator."""
    return (
        f"This encoder's dataset names no simulator, so what needs a true model is not shown: {what}. "
        "Name the simulator on the Data page if the data came from a registered environment."
    )
