"""Agent artifacts on disk: weights.pt (state_dict), config.json, metrics.json (learning curve).

Loading never unpickles (``torch.load(weights_only=True)``); an agent trained on latent
actions records its encoder folder and is rebuilt with it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from merlion_core.algos.base import OfflineAlgorithm
from merlion_core.algos.registry import ALGORITHMS, make_algorithm
from merlion_core.config import ConfigError, from_dict, to_dict

FORMAT = "merlion-agent"
VERSION = 1
WEIGHTS, CONFIG, METRICS = "weights.pt", "config.json", "metrics.json"


class AgentArtifactError(ValueError):
    """An agent folder that cannot be loaded (one-line message naming the file)."""


@dataclass
class LoadedAgent:
    agent: OfflineAlgorithm
    algo: str
    config: Any
    info: dict[str, Any]
    metrics: dict[str, Any]


def save_agent(agent: OfflineAlgorithm, algo: str, out_dir: str | os.PathLike, *,
               metrics: dict[str, Any] | None = None, info: dict[str, Any] | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu().contiguous() for k, v in agent.state_dict().items()}, out / WEIGHTS)
    document = {"format": FORMAT, "version": VERSION, "algo": algo, "config": to_dict(agent.config),
                "n_actions": agent.n_actions, "obs_dim": agent.obs_dim, **(info or {})}
    (out / CONFIG).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    (out / METRICS).write_text(json.dumps(metrics or {}, indent=2, sort_keys=True) + "\n")
    return out


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise AgentArtifactError(f"{path}: missing (not an agent folder?)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AgentArtifactError(f"{path}: invalid JSON ({exc})") from None


def load_agent(path: str | os.PathLike, device: str = "cpu") -> LoadedAgent:
    folder = Path(path)
    document = _read_json(folder / CONFIG)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise AgentArtifactError(f"{folder / CONFIG}: not a {FORMAT} config")
    algo = document.get("algo")
    if algo not in ALGORITHMS:
        raise AgentArtifactError(f"{folder / CONFIG}: unknown algorithm {algo!r}")
    try:
        config = from_dict(ALGORITHMS[algo][0], document["config"])
        representation = None
        if document.get("encoder"):
            from merlion_core.representation.artifacts import load_representation

            representation = load_representation(document["encoder"], device=device).representation
        agent = make_algorithm(algo, int(document["n_actions"]), int(document["obs_dim"]), config, device,
                               representation=representation)
    except (KeyError, ConfigError, TypeError, ValueError) as exc:
        raise AgentArtifactError(f"{folder / CONFIG}: {str(exc).splitlines()[0]}") from None
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise AgentArtifactError(f"{weights}: missing")
    try:
        agent.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
    except Exception as exc:  # unreadable or mismatched weights: one line, no traceback
        raise AgentArtifactError(f"{weights}: cannot load ({str(exc).splitlines()[0][:200]})") from None
    metrics = _read_json(folder / METRICS) if (folder / METRICS).is_file() else {}
    return LoadedAgent(agent.eval(), algo, config, {k: v for k, v in document.items() if k != "config"}, metrics)
