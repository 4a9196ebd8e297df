"""Representation artifacts on disk: weights (state_dict), config.json and metrics.json.

A folder holds ``weights.pt`` (a plain tensor state_dict, loaded with
``torch.load(weights_only=True)``: never unpickled objects), ``config.json`` (method, its
config, shapes, env and dataset facts) and ``metrics.json``. Loading rebuilds the method's
network from config.json and loads the weights into it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from merlion_core.config import ConfigError, from_dict, to_dict
from merlion_core.representation.base import Representation
from merlion_core.representation.registry import get_method

FORMAT = "merlion-representation"
VERSION = 1
WEIGHTS, CONFIG, METRICS = "weights.pt", "config.json", "metrics.json"


class ArtifactError(ValueError):
    """A representation folder that cannot be loaded (one-line message naming the file)."""


@dataclass
class LoadedRepresentation:
    representation: Representation
    method: str
    config: Any
    info: dict[str, Any]
    metrics: dict[str, Any]


def save_representation(rep: Representation, method: str, config: Any, out_dir: str | os.PathLike, *,
                        metrics: dict[str, Any] | None = None, info: dict[str, Any] | None = None) -> Path:
    """Write weights, config and metrics to ``out_dir`` (created if needed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in rep.state_dict().items()}
    torch.save(state, out / WEIGHTS)
    document = {"format": FORMAT, "version": VERSION, "method": method, "config": to_dict(config),
                "n_actions": rep.n_actions, "obs_dim": rep.obs_dim, "dim": rep.dim, **(info or {})}
    (out / CONFIG).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    (out / METRICS).write_text(json.dumps(metrics or {}, indent=2, sort_keys=True) + "\n")
    return out


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ArtifactError(f"{path}: missing (not a representation folder?)")
    if path.stat().st_size > 16 * 1024**2:
        raise ArtifactError(f"{path}: larger than 16 MiB")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: invalid JSON ({exc})") from None


def load_representation(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedRepresentation:
    """Rebuild a saved representation; every failure is an ArtifactError naming the file."""
    folder = Path(path)
    document = _read_json(folder / CONFIG)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ArtifactError(f"{folder / CONFIG}: not a {FORMAT} config")
    if document.get("version", 0) > VERSION:
        raise ArtifactError(f"{folder / CONFIG}: version {document['version']} is newer than this MERLION Studio")
    try:
        spec = get_method(document["method"])
        config = from_dict(spec.config_cls, document["config"])
        rep = spec.build(config, int(document["n_actions"]), int(document["obs_dim"]))
    except (KeyError, ConfigError, ValueError, TypeError) as exc:
        raise ArtifactError(f"{folder / CONFIG}: {exc}") from None
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise ArtifactError(f"{weights}: missing")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        rep.load_state_dict(state)
    except Exception as exc:  # any unreadable or mismatched weights file: one line, no traceback
        raise ArtifactError(f"{weights}: cannot load ({str(exc).splitlines()[0][:200]})") from None
    metrics = _read_json(folder / METRICS) if (folder / METRICS).is_file() else {}
    info = {k: v for k, v in document.items() if k not in ("config",)}
    return LoadedRepresentation(rep.to(device).eval(), document["method"], config, info, metrics)
