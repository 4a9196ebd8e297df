"""Behaviour policies, normalisers and vectorised collection."""

import numpy as np
import pytest

from merlion_core.data.collect import collect, env_normalisers, normalised_score
from merlion_core.envs import make_model
from merlion_core.envs.behaviours import class_members, make_behaviour
from merlion_core.envs.rollout import rollout_episodes


@pytest.fixture(scope="module")
def maze_small():
    return collect("maze", "medium", 0.5, 6000, seed=3)


def _score(env, behaviour, noise=0.0, episodes=300):
    model = make_model(env)
    result = rollout_episodes(model, make_behaviour(model, behaviour), episodes, np.random.default_rng(5), noise)
    expert, random = env_normalisers(env)
    return float(normalised_score(result.returns.mean(), expert, random)), result


@pytest.mark.parametrize("env", ["maze", "multistep-maze"])
def test_behaviour_ordering_and_medium_band(env):
    expert_score, expert = _score(env, "expert")
    medium_score, medium = _score(env, "medium")
    random_score, _ = _score(env, "random")
    assert expert.successes.mean() > 0.95
    assert expert_score > 90
    assert 30 <= medium_score <= 70  # genuinely sub-optimal, before any extra noise
    assert abs(random_score) < 5
    assert medium.successes.mean() > 0.95  # it does reach the goal: its losses are the regions


def test_regions_shape_the_best_route():
    model = make_model("maze", {"action_noise": 0.0})
    rng = np.random.default_rng(0)
    trace = {}
    for name in ("expert", "medium"):
        policy = make_behaviour(model, name)
        states = model.initial_states(1)
        rewards = []
        for _ in range(60):
            step = model.true_step(states, policy(states, rng))
            rewards.append(float(step.rewards[0]))
            states = step.next_states
            if step.terminated[0]:
                break
        trace[name] = np.array(rewards)
    assert np.any(np.isclose(trace["expert"], 10 - 0.05))  # detours for the bonus
    assert not np.any(trace["expert"] < -10)  # avoids the penalty band
    assert np.any(trace["medium"] < -10)  # the shortcut crosses the band
    assert trace["expert"].sum() > trace["medium"].sum() + 20


def test_normalisers_are_measured_and_consistent():
    expert, random = env_normalisers("maze")
    assert 100 < expert < 110  # goal + bonus - a dozen steps
    assert -3.1 <= random <= -2.5  # 60 steps of -0.05, rare penalty visits
    assert normalised_score(expert, expert, random) == pytest.approx(100)
    assert normalised_score(random, expert, random) == pytest.approx(0)


def test_class_members_table():
    classes = np.array([0, 1, 0, 2, 1, 0])
    table, sizes = class_members(classes)
    assert list(sizes) == [3, 2, 1]
    assert list(table[0, :3]) == [0, 2, 5] and list(table[1, :2]) == [1, 4] and table[2, 0] == 3


def test_expert_picks_uniformly_among_equivalent_actions(maze_small):
    model = make_model("maze")
    policy = make_behaviour(model, "expert")
    actions = policy(maze_small.observations, np.random.default_rng(0))
    classes = model.action_classes[actions]
    assert len(np.unique(actions)) > len(np.unique(classes))  # several ids carry one effect
    # the same states again with another generator: same effects, other ids
    again = policy(maze_small.observations, np.random.default_rng(1))
    assert np.array_equal(model.action_classes[again], classes)
    assert not np.array_equal(again, actions)


def test_collect_exact_size_and_episode_structure(maze_small):
    ds = maze_small
    assert ds.n_transitions == 6000 and ds.n_actions == 4096
    ends = ds.terminals | ds.timeouts
    assert ends[-1]
    within = ~ends[:-1]
    assert np.array_equal(ds.next_observations[:-1][within], ds.observations[1:][within])
    starts = np.concatenate([[0], np.flatnonzero(ends[:-1]) + 1])
    assert np.allclose(ds.observations[starts], [0.25, 0.10, 0.0])
    lengths = np.diff(np.concatenate([[-1], np.flatnonzero(ends)]))
    assert lengths.max() <= 60
    assert ds.meta.env_id == "merlion/Maze-v0" and ds.meta.behaviour == "medium" and ds.meta.noise == 0.5
    assert ds.meta.expert_return == pytest.approx(env_normalisers("maze")[0])


def test_collect_is_bitwise_reproducible(maze_small):
    again = collect("maze", "medium", 0.5, 6000, seed=3)
    for name in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts", "propensities"):
        assert getattr(again, name).tobytes() == getattr(maze_small, name).tobytes()
    other = collect("maze", "medium", 0.5, 6000, seed=4)
    assert other.actions.tobytes() != maze_small.actions.tobytes()


def test_collect_records_propensities_above_the_noise_floor(maze_small):
    probs = maze_small.propensities
    assert maze_small.has_propensities and probs.dtype == np.float32 and probs.shape == (6000,)
    assert probs.min() >= np.float32(0.5 / 4096) and probs.max() <= 1.0
    # a logged action is the behaviour's own (>= 0.5 / class size) or a noise draw the behaviour would not take
    assert 2500 < np.count_nonzero(probs > 0.5 / 4096 * 1.01) < 3500


def test_collected_transitions_follow_the_true_model():
    ds = collect("maze", "medium", 0.5, 3000, seed=1, env_overrides={"action_noise": 0.0})
    model = make_model("maze", {"action_noise": 0.0})
    step = model.true_step(ds.observations, ds.actions)
    assert np.array_equal(step.next_states, ds.next_observations)
    assert np.array_equal(step.rewards, ds.rewards)
    assert np.array_equal(step.terminated, ds.terminals)


def test_noise_share_of_logged_actions():
    # with noise 1.0 every logged action is uniform: the expert's preference disappears
    ds = collect("maze", "expert", 1.0, 4000, seed=0)
    counts = np.bincount(ds.actions, minlength=4096)
    assert counts.max() < 10  # ~1 per action; an expert-driven log has hundreds on a few ids
    clean = collect("maze", "expert", 0.0, 4000, seed=0)
    assert np.bincount(clean.actions, minlength=4096).max() > 50


def test_noisy_medium_dataset_keeps_good_behaviour(maze_small):
    score = normalised_score(
        maze_small.episode_returns().mean(), maze_small.meta.expert_return, maze_small.meta.random_return
    )
    assert 30 < score < 65
    assert maze_small.terminals[maze_small.episode_ends].mean() > 0.9


def test_collect_rejects_bad_arguments():
    with pytest.raises(ValueError, match="behaviour"):
        collect("maze", "greedy", 0.5, 10)
    with pytest.raises(ValueError, match="noise"):
        collect("maze", "medium", 1.5, 10)
    with pytest.raises(ValueError, match="unknown environment"):
        collect("labyrinth", "medium", 0.5, 10)
