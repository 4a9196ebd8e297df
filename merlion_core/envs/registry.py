"""Environment registry: ids, short names, configs and idempotent Gymnasium registration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from merlion_core.config import from_dict, to_dict
from merlion_core.envs.dialogue.model import DialogueConfig, DialogueEnv, DialogueModel
from merlion_core.envs.maze import MazeConfig, MazeEnv, MazeModel
from merlion_core.envs.multistep_maze import (
    MultiStepMazeConfig,
    MultiStepMazeEnv,
    MultiStepMazeModel,
)
from merlion_core.envs.recommender.twin import RecommenderConfig, RecommenderModel


@dataclass(frozen=True)
class EnvSpec:
    """How to build one environment, its true model and its config."""

    env_id: str
    short_name: str
    config_cls: type
    model_cls: Callable[..., Any]
    env_cls: Callable[..., gym.Env] | str
    """The Gymnasium env class, or its "module:Class" entry point when importing it is costly."""
    description: str


ENV_SPECS: dict[str, EnvSpec] = {
    "merlion/Maze-v0": EnvSpec(
        "merlion/Maze-v0",
        "maze",
        MazeConfig,
        MazeModel,
        MazeEnv,
        "2^12 actuator combinations moving a point round an L-shaped wall",
    ),
    "merlion/MultiStepMaze-v0": EnvSpec(
        "merlion/MultiStepMaze-v0",
        "multistep-maze",
        MultiStepMazeConfig,
        MultiStepMazeModel,
        MultiStepMazeEnv,
        "4^6 six-move plans in the same maze",
    ),
    "merlion/Dialogue-v0": EnvSpec(
        "merlion/Dialogue-v0",
        "dialogue",
        DialogueConfig,
        DialogueModel,
        DialogueEnv,
        "1500 composite system acts answering an agenda-based user on MultiWOZ (needs the MultiWOZ files)",
    ),
    "merlion/Recommender-v0": EnvSpec(
        "merlion/Recommender-v0",
        "recommender",
        RecommenderConfig,
        RecommenderModel,
        "merlion_core.envs.recommender.recsim_env:RecSimRecommenderEnv",
        "1000 videos recommended to RecSim interest_evolution users (batch model: a numpy twin)",
    ),
}
SHORT_NAMES = {spec.short_name: env_id for env_id, spec in ENV_SPECS.items()}


class UnknownEnvError(ValueError):
    """An environment name that is neither a registered id nor a short name."""


def resolve_env_id(name: str) -> str:
    """Map a short name (``maze``) or a full id (``merlion/Maze-v0``) to the full id."""
    if name in ENV_SPECS:
        return name
    key = name.strip().lower().replace("_", "-")
    if key in SHORT_NAMES:
        return SHORT_NAMES[key]
    known = ", ".join(sorted(SHORT_NAMES) + sorted(ENV_SPECS))
    raise UnknownEnvError(f"unknown environment {name!r}; known: {known}")


def get_spec(name: str) -> EnvSpec:
    return ENV_SPECS[resolve_env_id(name)]


def make_config(name: str, overrides: dict[str, Any] | None = None) -> Any:
    """The env's frozen config with JSON-style overrides applied (unknown keys rejected)."""
    spec = get_spec(name)
    base = spec.config_cls()
    return from_dict(spec.config_cls, {**to_dict(base), **(overrides or {})}) if overrides else base


def make_model(name: str, overrides: dict[str, Any] | None = None) -> Any:
    """The env's vectorised true model."""
    return get_spec(name).model_cls(make_config(name, overrides))


def register_envs() -> None:
    """Register every MERLION env with Gymnasium; safe to call any number of times."""
    for env_id, spec in ENV_SPECS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=spec.env_cls)


def make_env(name: str, **overrides: Any) -> gym.Env:
    """``gymnasium.make`` for a short name or an id (registers first)."""
    register_envs()
    return gym.make(resolve_env_id(name), **overrides)
