"""A Gymnasium env over one row of a batch model: the single base class of the maze envs."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from merlion_core.config import from_dict, to_dict
from merlion_core.envs.model import observe


class ModelEnv(gym.Env):
    """Gymnasium API (both spaces in ``__init__``, ``reset(seed=)``, 5-tuple ``step``) over a
    vectorised true model; the env's action noise comes from its own seeded ``np_random``.

    Subclasses set ``config_cls`` and ``model_cls``. Keyword overrides (for example from
    ``gymnasium.make(id, n_actuators=8)``) are applied to the default config; unknown keys
    raise ConfigError.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # gym.Env declares it an instance variable
    config_cls: ClassVar[type]
    model_cls: ClassVar[type]

    def __init__(self, config: Any | None = None, **overrides: Any) -> None:
        base = config or self.config_cls()
        # overrides may come from JSON (lists): from_dict turns them back into tuples
        self.config = from_dict(self.config_cls, {**to_dict(base), **overrides}) if overrides else base
        self.model = self.model_cls(self.config)
        self.action_space = gym.spaces.Discrete(self.model.n_actions)
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(self.model.obs_dim,), dtype=np.float32)
        self._state = self.model.initial_states(1)
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._state = self.model.initial_states(1, self.np_random)
        self._t = 0
        return observe(self.model, self._state)[0].copy(), {}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"{type(self).__name__}.step: action {action!r} not in Discrete({self.model.n_actions})")
        result = self.model.step(self._state, np.array([int(action)]), self.np_random)
        self._state = result.next_states
        self._t += 1
        terminated = bool(result.terminated[0])
        truncated = (not terminated) and self._t >= self.model.max_steps
        info = {"executed_action": int(result.executed_actions[0])}
        return observe(self.model, self._state)[0].copy(), float(result.rewards[0]), terminated, truncated, info
