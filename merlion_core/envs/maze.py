"""The 2^n-action maze of Chandak et al. (2019) with the MERLION paper's reward regions.

State: position (x, y) in the unit square plus a flag saying whether this episode's +10
bonus was already paid (the flag keeps the state Markov; see docs/deviations.md).
Observation: float32 [x, y, bonus_taken].

Action a switches actuator k on when bit (n-1-k) of a is 1; actuator k points at angle
2*pi*k/n. The displacement of an action is the sum of its active actuators' unit vectors,
the whole table divided by its largest norm. One step is ``n_substeps`` sub-steps of
``substep_length * displacement`` with blocked sub-steps ending the move.

Rewards, summed over one step: ``step_reward`` always; ``goal_reward`` and termination on
reaching the goal square; ``bonus_reward`` once per episode on first ending a step inside a
bonus region; ``penalty_reward`` on every step that ends inside a penalty region.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from merlion_core.envs.geometry import (
    DEFAULT_BONUS_REGIONS,
    DEFAULT_GOAL,
    DEFAULT_PENALTY_REGIONS,
    DEFAULT_START,
    DEFAULT_WALLS,
    Rect,
    in_rects,
    substep_motion,
)
from merlion_core.envs.model import StepResult, apply_action_noise
from merlion_core.envs.model_env import ModelEnv


@dataclass(frozen=True)
class MazeConfig:
    """Maze settings (paper A.4; geometry from Chandak et al. 2019)."""

    n_actuators: int = 12
    """n: equally spaced actuators; |A| = 2^n."""
    walls: tuple[Rect, ...] = DEFAULT_WALLS
    """Wall rectangles (x1, y1, x2, y2); leaving the unit square also counts as a wall."""
    start: tuple[float, float] = DEFAULT_START
    """Start position s_0."""
    goal: Rect = DEFAULT_GOAL
    """Goal square: reaching it pays goal_reward and ends the episode."""
    bonus_regions: tuple[Rect, ...] = DEFAULT_BONUS_REGIONS
    """Rewarding regions: bonus_reward once per episode, on first entry."""
    penalty_regions: tuple[Rect, ...] = DEFAULT_PENALTY_REGIONS
    """Penalising regions: penalty_reward on each step that ends inside."""
    goal_reward: float = 100.0
    """Reward on reaching the goal (paper: 100)."""
    bonus_reward: float = 10.0
    """Reward of a rewarding region (paper: 10)."""
    penalty_reward: float = -20.0
    """Reward of a penalising region (paper: -20)."""
    step_reward: float = -0.05
    """Reward paid on every step (public code: -0.05)."""
    action_noise: float = 0.1
    """Probability that the env replaces the action by a uniform random one (paper: 10%)."""
    max_steps: int = 60
    """Episode length limit T (truncation, paper: 60)."""
    substep_length: float = 0.045
    """Length of one sub-step per unit of displacement."""
    n_substeps: int = 4
    """Sub-steps per step (at most 4 * 0.045 = 0.18 of travel per step)."""

    def __post_init__(self) -> None:
        if not 1 <= self.n_actuators <= 16:
            raise ValueError(f"MazeConfig.n_actuators: must be in [1, 16], got {self.n_actuators}")
        if not 0.0 <= self.action_noise <= 1.0:
            raise ValueError(f"MazeConfig.action_noise: must be in [0, 1], got {self.action_noise}")
        if self.max_steps < 1:
            raise ValueError(f"MazeConfig.max_steps: must be >= 1, got {self.max_steps}")


def displacement_table(n_actuators: int) -> np.ndarray:
    """float64 [2^n, 2]: the displacement of every action, longest normalised to norm 1."""
    n_actions = 2**n_actuators
    k = np.arange(n_actuators)
    directions = np.stack([np.cos(2 * np.pi * k / n_actuators), np.sin(2 * np.pi * k / n_actuators)], 1)
    bits = (np.arange(n_actions)[:, None] >> (n_actuators - 1 - k)[None, :]) & 1  # [A, n]
    table = bits.astype(np.float64) @ directions
    return table / np.linalg.norm(table, axis=1).max()


def equivalence_classes(displacements: np.ndarray, decimals: int = 9) -> np.ndarray:
    """int64 [A]: class id of every action; actions with equal displacement share a class.

    Class ids are ordered by first occurrence, so action 0 is always in class 0.
    """
    rounded = np.round(displacements, decimals) + 0.0  # + 0.0 turns -0.0 into 0.0
    _, first, inverse = np.unique(rounded, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # relabel classes by first occurrence
    return order[inverse.reshape(-1)].astype(np.int64)


class MazeModel:
    """The maze's true model, vectorised over batches of states (numpy in, numpy out)."""

    obs_dim = 3

    def __init__(self, config: MazeConfig = MazeConfig()) -> None:
        self.config = config
        self.n_actions = 2**config.n_actuators
        self.max_steps = config.max_steps
        self.displacements = displacement_table(config.n_actuators)
        self.action_classes = equivalence_classes(self.displacements)
        self.n_equivalence_classes = int(self.action_classes.max()) + 1
        norms = np.linalg.norm(self.displacements, axis=1)
        self.zero_displacement_actions = np.flatnonzero(norms < 1e-9)

    @property
    def action_factors(self) -> tuple[int, ...]:
        """(2,) * n_actuators: action id bit k (most significant first) switches actuator k (envs/factors.py)."""
        return (2,) * self.config.n_actuators

    def initial_states(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """float32 [n, 3]: every episode starts at the start position with no bonus taken."""
        state = np.array([*self.config.start, 0.0], dtype=np.float32)
        return np.tile(state, (n, 1))

    def true_step(self, states: np.ndarray, actions: np.ndarray) -> StepResult:
        """Noise-free transition of a batch: states f32[B, 3], actions int[B] -> StepResult."""
        cfg = self.config
        states = np.asarray(states)
        actions = np.asarray(actions, dtype=np.int64)
        positions = states[:, :2].astype(np.float64)
        bonus_taken = states[:, 2] > 0.5
        new_positions, reached = substep_motion(
            positions, self.displacements[actions], cfg.substep_length, cfg.n_substeps, cfg.walls, cfg.goal
        )
        new_positions = new_positions.astype(np.float32).astype(np.float64)  # what the agent observes
        in_bonus = in_rects(new_positions, cfg.bonus_regions) & ~bonus_taken
        in_penalty = in_rects(new_positions, cfg.penalty_regions)
        rewards = (
            cfg.step_reward + cfg.goal_reward * reached + cfg.bonus_reward * in_bonus + cfg.penalty_reward * in_penalty
        )
        next_states = np.concatenate(
            [new_positions, (bonus_taken | in_bonus)[:, None].astype(np.float64)], axis=1
        ).astype(np.float32)
        return StepResult(next_states, rewards.astype(np.float32), reached, actions)

    def step(self, states: np.ndarray, actions: np.ndarray, rng: np.random.Generator) -> StepResult:
        """Transition with the env's action noise drawn from ``rng``."""
        executed = apply_action_noise(actions, self.config.action_noise, self.n_actions, rng)
        return self.true_step(states, executed)

    def info(self) -> dict[str, Any]:
        return {"n_equivalence_classes": self.n_equivalence_classes}


class MazeEnv(ModelEnv):
    """Gymnasium env ``merlion/Maze-v0`` over :class:`MazeModel`."""

    config_cls = MazeConfig
    model_cls = MazeModel
