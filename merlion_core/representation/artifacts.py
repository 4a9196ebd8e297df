"""Representation artifacts on disk: weights (state_dict), config.json and metrics.json.

A folder holds ``weights.pt`` (a plain tensor state_dict, loaded with
``torch.load(weights_only=True)``: never unpickled objects), ``config.json`` (method, its
config, shapes, env and dataset facts) and ``metrics.json``. Loading rebuilds the method's
network from config.json and loads the weights into it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from merlion_core.artifact_folder import CONFIG, load_weights, read_json, read_metrics, write_folder
from merlion_core.config import ConfigError, from_dict, to_dict
from merlion_core.representation.base import Representation
from merlion_core.representation.registry import get_method

FORMAT = "merlion-representation"
VERSION = 1


class ArtifactError(ValueError):
    """A representation folder that cannot be loaded (one-line message naming the file)."""


@dataclass
class LoadedRepresentation:
    representation: Representation
    method: str
    config: Any
    info: dict[str, Any]
    metrics: dict[str, Any]


def save_representation(
    rep: Representation,
    method: str,
    config: Any,
    out_dir: str | os.PathLike,
    *,
    metrics: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write weights, config and metrics to ``out_dir`` (created if needed)."""
    document = {
        "format": FORMAT,
        "version": VERSION,
        "method": method,
        "config": to_dict(config),
        "n_actions": rep.n_actions,
        "obs_dim": rep.obs_dim,
        "dim": rep.dim,
        **(info or {}),
    }
    return write_folder(out_dir, rep, document, metrics)


def load_representation(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedRepresentation:
    """Rebuild a saved representation; every failure is an ArtifactError naming the file."""
    folder = Path(path)
    document = read_json(folder / CONFIG, ArtifactError)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ArtifactError(f"{folder / CONFIG}: not a {FORMAT} config")
    if document.get("version", 0) > VERSION:
        raise ArtifactError(f"{folder / CONFIG}: version {document['version']} is newer than this MERLION Studio")
    try:
        spec = get_method(document["method"])
        config: object = from_dict(spec.config_cls, document["config"])
        rep = spec.build(config, int(document["n_actions"]), int(document["obs_dim"]))
    except (KeyError, ConfigError, ValueError, TypeError) as exc:
        raise ArtifactError(f"{folder / CONFIG}: {exc}") from None
    load_weights(rep, folder, ArtifactError)
    info = {k: v for k, v in document.items() if k not in ("config",)}
    return LoadedRepresentation(
        rep.to(device).eval(), document["method"], config, info, read_metrics(folder, ArtifactError)
    )


# ---------------------------------------------------------------------------- warm-start frames
FRAME_GLOB = "step-*.npy"
"""Frames of a warm start: FOLDER/step-<N>.npy, f32[A, D] (every action's embedding at one state)."""


def write_frame(folder: str | os.PathLike, step: int, embeddings_AD: np.ndarray) -> Path:
    """Atomically write one frame (a reader never sees half a file)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"step-{int(step):06d}.npy"
    tmp = out / f".tmp-{int(step):06d}.npy"
    np.save(tmp, np.asarray(embeddings_AD, dtype=np.float32), allow_pickle=False)
    os.replace(tmp, path)
    return path


def latest_frame(folder: str | os.PathLike) -> tuple[int, np.ndarray] | None:
    """(step, f32[A, D]) of the newest frame in ``folder``, or None before the first."""
    files = sorted(Path(folder).glob(FRAME_GLOB))
    if not files:
        return None
    return int(files[-1].stem.split("-")[1]), np.load(files[-1], allow_pickle=False)
