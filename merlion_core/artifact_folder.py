"""The folder layout every trained artifact shares (representations, agents): weights.pt (a plain
tensor state_dict, loaded with ``weights_only=True``), config.json and metrics.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

WEIGHTS, CONFIG, METRICS = "weights.pt", "config.json", "metrics.json"
MAX_JSON_BYTES = 16 * 1024**2


def write_folder(
    out_dir: str | os.PathLike[str], module: nn.Module, document: dict[str, Any], metrics: dict[str, Any] | None
) -> Path:
    """Write the module's state_dict, ``document`` as config.json and ``metrics``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, out / WEIGHTS)
    (out / CONFIG).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    (out / METRICS).write_text(json.dumps(metrics or {}, indent=2, sort_keys=True) + "\n")
    return out


def read_json(path: Path, error: type[Exception]) -> Any:
    """A capped JSON file; every failure is ``error`` with a one-line message naming the file."""
    if not path.is_file():
        raise error(f"{path}: missing (not an artifact folder?)")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise error(f"{path}: larger than {MAX_JSON_BYTES // 1024**2} MiB")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: invalid JSON ({exc})") from None


def load_weights(module: nn.Module, folder: Path, error: type[Exception], device: Any = "cpu") -> None:
    """Load weights.pt into ``module`` without unpickling objects."""
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise error(f"{weights}: missing")
    try:
        module.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
    except Exception as exc:  # any unreadable or mismatched weights file: one line, no traceback
        raise error(f"{weights}: cannot load ({str(exc).splitlines()[0][:200]})") from None


def read_metrics(folder: Path, error: type[Exception]) -> dict[str, Any]:
    return read_json(folder / METRICS, error) if (folder / METRICS).is_file() else {}
