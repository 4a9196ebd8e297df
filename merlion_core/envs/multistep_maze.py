"""The multi-step maze: the maze with 4 base moves, one action = a plan of m moves (4^m plans).

Action index in base 4, most significant digit = first move; digits 0, 1, 2, 3 are down,
right, up, left. A base move is a straight move of ``move_length`` taken in ``n_substeps``
sub-steps (each shorter than the 0.05-thick walls, so no move passes through a wall); a
blocked sub-step ends that move, and the plan goes on with its next move. One decision (and
one dataset transition) per plan, with the plan's summed reward; the goal ends the episode
mid-plan. The episode is truncated after ``max_time_steps`` base moves (10 plans of 6).
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
from merlion_core.envs.maze import equivalence_classes
from merlion_core.envs.model import StepResult, apply_action_noise
from merlion_core.envs.model_env import ModelEnv

BASE_MOVES = np.array([[0.0, -1.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # down, right, up, left
BASE_MOVE_NAMES = ("down", "right", "up", "left")


@dataclass(frozen=True)
class MultiStepMazeConfig:
    """Multi-step maze settings (paper A.4: 4 base moves, 6-step plans, same rewards)."""

    plan_length: int = 6
    """m: base moves per plan; |A| = 4^m."""
    move_length: float = 0.12
    """Distance of one base move (a project choice, docs/deviations.md)."""
    n_substeps: int = 5
    """Sub-steps per base move (each move_length / n_substeps < wall thickness 0.05)."""
    walls: tuple[Rect, ...] = DEFAULT_WALLS
    """Wall rectangles, as in the maze."""
    start: tuple[float, float] = DEFAULT_START
    """Start position s_0."""
    goal: Rect = DEFAULT_GOAL
    """Goal square (+goal_reward, episode ends)."""
    bonus_regions: tuple[Rect, ...] = DEFAULT_BONUS_REGIONS
    """Rewarding regions: bonus_reward once per episode."""
    penalty_regions: tuple[Rect, ...] = DEFAULT_PENALTY_REGIONS
    """Penalising regions: penalty_reward on each time step that ends inside."""
    goal_reward: float = 100.0
    """Reward on reaching the goal (paper: 100)."""
    bonus_reward: float = 10.0
    """Reward of a rewarding region (paper: 10)."""
    penalty_reward: float = -20.0
    """Reward of a penalising region (paper: -20)."""
    step_reward: float = -0.05
    """Reward per time step (per base move)."""
    action_noise: float = 0.1
    """Probability that a whole plan is replaced by a uniform random plan (paper: 10%)."""
    max_time_steps: int = 60
    """Episode limit in base moves (paper: 60, i.e. 10 plans)."""

    def __post_init__(self) -> None:
        if not 1 <= self.plan_length <= 8:
            raise ValueError(f"MultiStepMazeConfig.plan_length: must be in [1, 8], got {self.plan_length}")
        if self.move_length / self.n_substeps >= 0.05:
            raise ValueError("MultiStepMazeConfig: move_length / n_substeps must be < 0.05 (wall thickness)")
        if self.max_time_steps % self.plan_length:
            raise ValueError("MultiStepMazeConfig.max_time_steps: must be a multiple of plan_length")


def plan_moves(plan_length: int) -> np.ndarray:
    """int64 [4^m, m]: the base-move digits of every plan, first move first."""
    plans = np.arange(4**plan_length)
    powers = 4 ** np.arange(plan_length - 1, -1, -1)
    return (plans[:, None] // powers[None, :]) % 4


class MultiStepMazeModel:
    """True model of the multi-step maze, vectorised over batches of states."""

    obs_dim = 3

    def __init__(self, config: MultiStepMazeConfig = MultiStepMazeConfig()) -> None:
        self.config = config
        self.n_actions = 4**config.plan_length
        self.max_steps = config.max_time_steps // config.plan_length  # decisions per episode
        self.moves = plan_moves(config.plan_length)
        # free-space net displacement of each plan, in units of move_length
        self.displacements = BASE_MOVES[self.moves].sum(axis=1)
        self.action_classes = equivalence_classes(self.displacements)
        self.n_equivalence_classes = int(self.action_classes.max()) + 1

    @property
    def action_factors(self) -> tuple[int, ...]:
        """(4,) * plan_length: base-4 digit k of a plan id (most significant first) is move k (envs/factors.py)."""
        return (4,) * self.config.plan_length

    def initial_states(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        state = np.array([*self.config.start, 0.0], dtype=np.float32)
        return np.tile(state, (n, 1))

    def move_step(self, states: np.ndarray, moves: np.ndarray, active: np.ndarray | None = None) -> StepResult:
        """One base move per row (moves int[B] in 0..3); rows with active=False stay put, reward 0."""
        cfg = self.config
        positions = states[:, :2].astype(np.float64)
        taken = states[:, 2] > 0.5
        active = np.ones(len(states), dtype=bool) if active is None else active
        new_positions, reached = substep_motion(
            positions,
            BASE_MOVES[moves],
            cfg.move_length / cfg.n_substeps,
            cfg.n_substeps,
            cfg.walls,
            cfg.goal,
            active=active,
        )
        new_positions = new_positions.astype(np.float32).astype(np.float64)
        in_bonus = in_rects(new_positions, cfg.bonus_regions) & ~taken & active
        in_penalty = in_rects(new_positions, cfg.penalty_regions) & active
        rewards = (
            cfg.step_reward * active
            + cfg.goal_reward * reached
            + cfg.bonus_reward * in_bonus
            + cfg.penalty_reward * in_penalty
        )
        next_states = np.concatenate([new_positions, (taken | in_bonus)[:, None]], axis=1).astype(np.float32)
        return StepResult(next_states, rewards.astype(np.float32), reached, np.asarray(moves, dtype=np.int64))

    def true_step(self, states: np.ndarray, actions: np.ndarray) -> StepResult:
        """Execute whole plans, noise-free: states f32[B, 3], plan ids int[B] -> StepResult."""
        actions = np.asarray(actions, dtype=np.int64)
        states = np.asarray(states, dtype=np.float32)
        moves = self.moves[actions]  # [B, m]
        total = np.zeros(len(states), dtype=np.float64)
        done = np.zeros(len(states), dtype=bool)
        for i in range(self.config.plan_length):  # loop over the m moves of a plan, not the batch
            result = self.move_step(states, moves[:, i], active=~done)
            states = result.next_states
            total += result.rewards
            done |= result.terminated
        return StepResult(states, total.astype(np.float32), done, actions)

    def step(self, states: np.ndarray, actions: np.ndarray, rng: np.random.Generator) -> StepResult:
        executed = apply_action_noise(actions, self.config.action_noise, self.n_actions, rng)
        return self.true_step(states, executed)

    def info(self) -> dict[str, Any]:
        return {"n_equivalence_classes": self.n_equivalence_classes}


class MultiStepMazeEnv(ModelEnv):
    """Gymnasium env ``merlion/MultiStepMaze-v0`` over :class:`MultiStepMazeModel`."""

    config_cls = MultiStepMazeConfig
    model_cls = MultiStepMazeModel
