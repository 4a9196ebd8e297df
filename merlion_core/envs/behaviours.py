"""Behaviour policies for the mazes: expert, medium and random, vectorised over states.

- expert: value iteration on a grid over the true model (reward regions and the env's 10%
  action noise included), acting greedily; among equivalent actions (same displacement) it
  picks one uniformly, so the logged data shows many ids for one effect.
- medium: the same planner, blind to the reward regions: it takes the shortest route, straight
  through the -20 band at the wall's corner, and never detours for the +10 bonus. It is a
  competent but genuinely sub-optimal driver (normalised score 30-70, docs/datasets.md), and
  it stays closed-loop, so 50% random actions slow it down without wiping out its route.
- random: uniform over all actions.

A behaviour is a callable ``(states f32[B, S], rng) -> int64[B]`` with a ``name`` and, where it
can be computed, ``probability(states, actions) -> float64[B]``: the chance that the callable
picks ``actions[i]`` at ``states[i]`` (the logged data's propensities, data/collect.py).
"""

from __future__ import annotations

import functools

import numpy as np

from merlion_core.envs.maze import MazeConfig, MazeModel
from merlion_core.envs.model import Behaviour
from merlion_core.envs.multistep_maze import MultiStepMazeConfig, MultiStepMazeModel
from merlion_core.envs.planning import (
    ValueTable,
    greedy_candidates,
    value_iteration,
    without_regions,
)
from merlion_core.envs.recommender.behaviours import recommender_behaviour
from merlion_core.envs.recommender.twin import RecommenderModel

BEHAVIOURS = ("expert", "medium", "random")
PLANNER_GAMMA = 0.99


def class_members(action_classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Padded member table [C, max_size] (ids sorted) and class sizes [C]."""
    order = np.argsort(action_classes, kind="stable")
    sizes = np.bincount(action_classes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    table = np.zeros((len(sizes), sizes.max()), dtype=np.int64)
    rank = np.arange(len(order)) - starts[action_classes[order]]
    table[action_classes[order], rank] = order
    return table, sizes


@functools.lru_cache(maxsize=8)
def _maze_planner(config: MazeConfig, region_aware: bool) -> tuple[MazeModel, np.ndarray, ValueTable]:
    planner_model = MazeModel(config if region_aware else without_regions(config))
    members, sizes = class_members(planner_model.action_classes)
    representatives = members[:, 0]
    table = value_iteration(
        planner_model.true_step,
        representatives,
        gamma=PLANNER_GAMMA,
        noise=config.action_noise,
        noise_weights=sizes.astype(np.float64),
    )
    return planner_model, representatives, table


def _maze_planner_behaviour(name: str, config: MazeConfig, region_aware: bool) -> Behaviour:
    planner_model, representatives, table = _maze_planner(config, region_aware)
    members, sizes = class_members(planner_model.action_classes)

    def best(states: np.ndarray) -> np.ndarray:
        return greedy_candidates(planner_model.true_step, table, representatives, states, PLANNER_GAMMA)

    def act(states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        best_class = best(states)
        pick = np.floor(rng.random(len(states)) * sizes[best_class]).astype(np.int64)
        return members[best_class, pick]

    def probability(states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Uniform over the greedy class: 1 / its size for its members, 0 elsewhere."""
        best_class = best(states)
        in_class = planner_model.action_classes[np.asarray(actions)] == best_class
        return np.where(in_class, 1.0 / sizes[best_class], 0.0)

    return Behaviour(name, act, probability)


@functools.lru_cache(maxsize=8)
def _move_planner(config: MultiStepMazeConfig, region_aware: bool) -> tuple[MultiStepMazeModel, ValueTable]:
    planner_model = MultiStepMazeModel(config if region_aware else without_regions(config))
    table = value_iteration(planner_model.move_step, np.arange(4), gamma=PLANNER_GAMMA)
    return planner_model, table


def _plan_behaviour(name: str, config: MultiStepMazeConfig, region_aware: bool) -> Behaviour:
    planner_model, table = _move_planner(config, region_aware)
    moves = np.arange(4)
    powers = 4 ** np.arange(config.plan_length - 1, -1, -1)

    def act(states: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:  # draws nothing
        plan = np.zeros(len(states), dtype=np.int64)
        current = np.asarray(states, dtype=np.float32)
        done = np.zeros(len(states), dtype=bool)
        for i in range(config.plan_length):  # roll the greedy move policy forward m moves
            move = greedy_candidates(planner_model.move_step, table, moves, current, PLANNER_GAMMA)
            plan += powers[i] * move
            result = planner_model.move_step(current, move, active=~done)
            current, done = result.next_states, done | result.terminated
        return plan

    def probability(states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Deterministic: 1 for the planned id, 0 elsewhere (``act`` draws nothing)."""
        return (np.asarray(actions) == act(states, None)).astype(np.float64)

    return Behaviour(name, act, probability)


def _random_behaviour(n_actions: int) -> Behaviour:
    return Behaviour(
        "random",
        lambda states, rng: rng.integers(0, n_actions, size=len(states)),
        lambda states, actions: np.full(len(states), 1.0 / n_actions),
    )


def make_behaviour(model, name: str) -> Behaviour:
    """The behaviour ``name`` (expert, medium, random) for an env's true model."""
    if name not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {name!r}; choose one of {', '.join(BEHAVIOURS)}")
    if name == "random":
        return _random_behaviour(model.n_actions)
    if isinstance(model, RecommenderModel):
        return recommender_behaviour(model, name)
    if callable(getattr(model, "behaviour", None)):  # simulators that bring their own behaviours
        return model.behaviour(name)
    if isinstance(model, MazeModel):
        return _maze_planner_behaviour(name, model.config, region_aware=name == "expert")
    if isinstance(model, MultiStepMazeModel):
        return _plan_behaviour(name, model.config, region_aware=name == "expert")
    raise ValueError(f"no {name} behaviour for {type(model).__name__}")
