"""Agent artifacts on disk: weights.pt (state_dict), config.json, metrics.json (learning curve).

Loading never unpickles (``torch.load(weights_only=True)``); an agent trained on latent
actions records its encoder folder and is rebuilt with it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from merlion_core.algos.base import OfflineAlgorithm
from merlion_core.algos.registry import ALGORITHMS, make_algorithm
from merlion_core.artifact_folder import CONFIG, load_weights, read_json, read_metrics, write_folder
from merlion_core.config import ConfigError, from_dict, to_dict

FORMAT = "merlion-agent"
VERSION = 2
"""2: every network starts with the observation features (models/obs_features.py); 1 had none."""


class AgentArtifactError(ValueError):
    """An agent folder that cannot be loaded (one-line message naming the file)."""


@dataclass
class LoadedAgent:
    agent: OfflineAlgorithm
    algo: str
    config: Any
    info: dict[str, Any]
    metrics: dict[str, Any]


def save_agent(
    agent: OfflineAlgorithm,
    algo: str,
    out_dir: str | os.PathLike,
    *,
    metrics: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
) -> Path:
    document = {
        "format": FORMAT,
        "version": VERSION,
        "algo": algo,
        "config": to_dict(agent.config),
        "n_actions": agent.n_actions,
        "obs_dim": agent.obs_dim,
        **(info or {}),
    }
    return write_folder(out_dir, agent, document, metrics)


def load_agent(path: str | os.PathLike, device: str = "cpu") -> LoadedAgent:
    folder = Path(path)
    document = read_json(folder / CONFIG, AgentArtifactError)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise AgentArtifactError(f"{folder / CONFIG}: not a {FORMAT} config")
    if document.get("version") != VERSION:
        raise AgentArtifactError(
            f"{folder / CONFIG}: agent format version {document.get('version')!r} is not "
            f"{VERSION} (written by an older MERLION Studio, whose networks had no "
            "observation features); train the agent again"
        )
    algo = document.get("algo")
    if algo not in ALGORITHMS:
        raise AgentArtifactError(f"{folder / CONFIG}: unknown algorithm {algo!r}")
    try:
        config: object = from_dict(ALGORITHMS[algo][0], document["config"])
        representation = None
        if document.get("encoder"):
            from merlion_core.representation.artifacts import load_representation

            representation = load_representation(document["encoder"], device=device).representation
        agent = make_algorithm(
            algo, int(document["n_actions"]), int(document["obs_dim"]), config, device, representation=representation
        )
    except (KeyError, ConfigError, TypeError, ValueError) as exc:
        raise AgentArtifactError(f"{folder / CONFIG}: {str(exc).splitlines()[0]}") from None
    load_weights(agent, folder, AgentArtifactError, device)
    metrics = read_metrics(folder, AgentArtifactError)
    return LoadedAgent(agent.eval(), algo, config, {k: v for k, v in document.items() if k != "config"}, metrics)
