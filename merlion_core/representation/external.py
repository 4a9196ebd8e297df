"""External (hand-made) action representations (Lee et al. 2018), a baseline of paper section 5.1.

- Maze: the action's movement vector, the true displacement table (2 dims); actions of one
  equivalence class (equal displacement) get bit-identical rows.
- Multi-step maze: the concatenation of the plan's base moves, each as its 2-D unit vector
  (down (0, -1), right (1, 0), up (0, 1), left (-1, 0)): 2 * m dims, 12 for 6-move plans.
- Any other env whose batch model has ``action_features()`` (the recommender: each video's
  one-hot type, quality and length, 22 dims): that table, for the env config the dataset was
  collected with (``fit``) or the default config (``build`` when loading saved weights, whose
  stored table then replaces it).
- Anything else (the dialogue task has no proper external information): ValueError.

The feature size comes from the environment, not from ``config.dim``: the module's ``config``
attribute records the resolved environment and the actual dim. The action set's size fixes the
environment's size parameter (maze: n_actuators = log2 |A|; multi-step maze: plan_length =
log4 |A|), so ``build(config, n_actions, obs_dim)`` rebuilds the same table for saved weights.
With ``normalise`` every column is divided by its largest absolute value, so features lie in
[-1, 1], zero stays zero and actions with equal features keep equal embeddings.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from merlion_core.envs import make_model, resolve_env_id
from merlion_core.envs.multistep_maze import BASE_MOVES
from merlion_core.models.mlp import resolve_device
from merlion_core.representation.base import ProgressFn, Representation

MAZE, MULTISTEP = "merlion/Maze-v0", "merlion/MultiStepMaze-v0"


@dataclass(frozen=True)
class ExternalConfig:
    """Hand-made action features from the environment's definition."""

    env: str = ""
    """Environment id or short name whose features to use; empty: take it from dataset.meta.env_id."""
    normalise: bool = True
    """Scale every feature column by its largest absolute value, into [-1, 1]."""
    dim: int = 2
    """|E|: recorded only: the environment fixes it (maze 2, multi-step maze 2 * plan_length, recommender 22)."""
    steps: int = 0
    """Training steps: unused (nothing is trained); kept for the common interface."""
    batch_size: int = 256
    """Minibatch size: unused; kept for the common interface."""
    lr: float = 0.0
    """Learning rate: unused; kept for the common interface."""
    seed: int = 0
    """Seed: unused (the features are deterministic); kept for the common interface."""


class ExternalRepresentation(Representation):
    """A state-independent feature table e[A, dim] held as a buffer."""

    method = "external"
    table: torch.Tensor

    def __init__(self, features_AD: torch.Tensor, obs_dim: int, config: ExternalConfig) -> None:
        super().__init__(features_AD.shape[0], obs_dim, features_AD.shape[1])
        self.config = config
        self.register_buffer("table", features_AD.to(torch.float32).contiguous())

    def embed(self, obs_BS: torch.Tensor, act_B: torch.Tensor) -> torch.Tensor:
        return self.table[act_B.to(self.table.device).long()]

    def embed_chunk(self, obs_BS: torch.Tensor, actions_C: torch.Tensor) -> torch.Tensor:
        rows = self.table[actions_C.to(self.table.device).long()]
        return rows[None].expand(obs_BS.shape[0], *rows.shape)


def _no_features(env: str) -> ValueError:
    if env == "merlion/Dialogue-v0":
        return ValueError(
            "external: the dialogue env has no hand-made action features (the paper leaves External "
            "out for dialogue too); choose another representation method"
        )
    return ValueError(f"external: no hand-made features for {env}")


def has_features(env: str) -> bool:
    """Whether ``env`` has hand-made action features (decided without building its model; False for
    dialogue and for unknown names)."""
    from merlion_core.envs.registry import get_spec

    try:
        env_id = resolve_env_id(env)
    except ValueError:
        return False
    return env_id in (MAZE, MULTISTEP) or callable(getattr(get_spec(env_id).model_cls, "action_features", None))


def _exact_log(n: int, base: int, env_id: str) -> int:
    k = round(math.log(n, base)) if n >= 1 else -1
    if k < 1 or base**k != n:
        raise ValueError(f"external: {n} actions is not a valid action-set size for {env_id} (needs {base}^k actions)")
    return k


def _model_features(env_id: str, n_actions: int, env_config: dict[str, Any] | None) -> np.ndarray:
    """The batch model's own ``action_features()`` table (float64 [A, dim])."""
    from merlion_core.envs.registry import get_spec

    if not callable(getattr(get_spec(env_id).model_cls, "action_features", None)):
        raise _no_features(env_id)  # decided on the class: building the model may need data files
    model = make_model(env_id, env_config)
    action_features = model.action_features
    if model.n_actions != n_actions:
        raise ValueError(
            f"external: {env_id} has {model.n_actions} actions with "
            f"{'the dataset' if env_config else 'its default'} config, not {n_actions}"
        )
    return np.asarray(action_features(), dtype=np.float64)


def features(
    env: str,
    n_actions: int,
    normalise: bool = True,
    env_config: dict[str, Any] | None = None,
) -> np.ndarray:
    """float64 [A, dim]: the hand-made features of every action of ``env`` with ``n_actions`` actions;
    ``env_config`` (a dataset's ``meta.env_config``) matters only to envs with ``action_features()``."""
    if not env:
        raise ValueError("external: no environment given (config.env is empty and the dataset has no meta.env_id)")
    try:
        env_id = resolve_env_id(env)
    except ValueError:
        raise _no_features(env) from None
    if env_id == MAZE:
        model = make_model(env_id, {"n_actuators": _exact_log(n_actions, 2, env_id)})
        # one exact row per equivalence class: float sums of equal displacements differ by ~1e-16
        _, first = np.unique(model.action_classes, return_index=True)
        table = np.asarray(model.displacements, dtype=np.float64)[first][model.action_classes]
    elif env_id == MULTISTEP:
        m = _exact_log(n_actions, 4, env_id)
        model = make_model(env_id, {"plan_length": m, "max_time_steps": 10 * m})
        table = np.asarray(BASE_MOVES, dtype=np.float64)[model.moves].reshape(n_actions, 2 * m)
    else:
        table = _model_features(env_id, n_actions, env_config)
    if normalise:
        scale = np.abs(table).max(axis=0)
        table = table / np.where(scale > 0, scale, 1.0)
    return table + 0.0  # + 0.0 turns -0.0 into 0.0


def build(
    config: ExternalConfig, n_actions: int, obs_dim: int, env_config: dict[str, Any] | None = None
) -> ExternalRepresentation:
    """The feature table of ``config.env``; ``rep.config`` records the resolved env and dim."""
    table = features(config.env, n_actions, config.normalise, env_config)
    resolved = dataclasses.replace(config, env=resolve_env_id(config.env), dim=table.shape[1])
    return ExternalRepresentation(torch.as_tensor(table, dtype=torch.float32), obs_dim, resolved)


def _dataset_env_config(dataset: Any, env: str) -> dict[str, Any] | None:
    """The dataset's env config when ``env`` is the env it was collected on, else None."""
    try:
        same_env = bool(dataset.meta.env_id) and resolve_env_id(env) == dataset.meta.env_id
    except ValueError:
        return None
    return dict(dataset.meta.env_config) if same_env and dataset.meta.env_config else None


def fit(
    dataset: Any,
    config: ExternalConfig,
    *,
    device: str = "auto",
    progress: ProgressFn | None = None,
) -> tuple[ExternalRepresentation, dict[str, float]]:
    """Look up the features for the dataset's environment (nothing is trained)."""
    env = config.env or (dataset.meta.env_id or "")
    rep = build(
        dataclasses.replace(config, env=env), dataset.n_actions, dataset.obs_dim, _dataset_env_config(dataset, env)
    )
    rep = rep.to(resolve_device(device))
    metrics = {"loss": 0.0}
    if progress is not None:
        progress(0, dict(metrics))
    return rep, metrics
