"""The maze environments: geometry, true models, Gymnasium API, determinism."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from merlion_core.envs import make_env, make_model, register_envs, resolve_env_id
from merlion_core.envs.maze import MazeConfig, MazeEnv, MazeModel, displacement_table
from merlion_core.envs.multistep_maze import MultiStepMazeConfig, MultiStepMazeEnv, MultiStepMazeModel

ENV_IDS = ["merlion/Maze-v0", "merlion/MultiStepMaze-v0"]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env_passes(env_id):
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    assert env.action_space.n == 4096


def test_registration_is_idempotent_and_short_names_resolve():
    register_envs()
    register_envs()
    assert resolve_env_id("maze") == "merlion/Maze-v0"
    assert resolve_env_id("multistep-maze") == "merlion/MultiStepMaze-v0"
    assert resolve_env_id("merlion/Maze-v0") == "merlion/Maze-v0"
    with pytest.raises(ValueError, match="unknown environment 'mazes'"):
        resolve_env_id("mazes")


@pytest.mark.parametrize("n, classes, zero", [(8, 81, 16), (10, 211, 34), (12, 361, 100)])
def test_equivalence_classes(n, classes, zero):
    model = MazeModel(MazeConfig(n_actuators=n))
    assert model.n_equivalence_classes == classes
    assert len(model.zero_displacement_actions) == zero
    # members of a class really share their displacement
    d = model.displacements
    for c in (0, classes // 2, classes - 1):
        members = np.flatnonzero(model.action_classes == c)
        assert np.allclose(d[members], d[members[0]])
    assert np.isclose(np.linalg.norm(d, axis=1).max(), 1.0)


def test_twelve_actions_reach_the_maximum_norm():
    norms = np.linalg.norm(MazeModel().displacements, axis=1)
    assert np.sum(np.isclose(norms, 1.0)) == 12


def test_displacement_table_by_hand():
    # n = 4: actuators at 0, 90, 180, 270 degrees; bit (n-1-k) switches actuator k.
    table = displacement_table(4)
    s = 1 / np.sqrt(2)  # the longest displacement, e.g. right + up, has norm sqrt(2)
    assert np.allclose(table[0b1000], [s, 0])  # actuator 0: right
    assert np.allclose(table[0b0100], [0, s])  # actuator 1: up
    assert np.allclose(table[0b1100], [s, s])
    assert np.allclose(table[0b1010], [0, 0])  # right + left cancel
    assert np.allclose(table[0b1111], [0, 0])


def _state(x, y, flag=0.0):
    return np.array([[x, y, flag]], dtype=np.float32)


def test_maze_motion_and_rewards_by_hand():
    model = MazeModel(MazeConfig(n_actuators=4, action_noise=0.0))
    up = 0b0100  # displacement (0, 1/sqrt 2): 4 sub-steps of 0.045/sqrt(2)
    r = model.true_step(_state(0.25, 0.10), np.array([up]))
    assert np.allclose(r.next_states[0, :2], [0.25, 0.10 + 4 * 0.045 / np.sqrt(2)], atol=1e-6)
    assert r.rewards[0] == pytest.approx(-0.05)
    # the next step's first sub-step would enter the horizontal bar (y >= 0.25): no move at all
    r2 = model.true_step(r.next_states, np.array([up]))
    assert np.allclose(r2.next_states, r.next_states)
    # reaching the goal square from just below: +100 and termination
    r3 = model.true_step(_state(0.275, 0.44), np.array([up]))
    assert r3.terminated[0] and r3.rewards[0] == pytest.approx(100 - 0.05)
    assert 0.45 <= r3.next_states[0, 1] <= 0.50  # stops in the goal at the first sub-step inside


def test_bonus_paid_once_and_penalty_every_step():
    cfg = MazeConfig(n_actuators=4, action_noise=0.0)
    model = MazeModel(cfg)
    stay = 0
    bx1, by1, bx2, by2 = cfg.bonus_regions[0]
    right = 0b1000
    start = _state(bx1 - 0.01, (by1 + by2) / 2)
    first = model.true_step(start, np.array([right]))
    assert first.rewards[0] == pytest.approx(10 - 0.05) and first.next_states[0, 2] == 1.0
    second = model.true_step(first.next_states, np.array([stay]))
    assert second.rewards[0] == pytest.approx(-0.05)  # flag set: no second bonus
    px1, py1, px2, py2 = cfg.penalty_regions[0]
    inside = _state((px1 + px2) / 2, (py1 + py2) / 2)
    for _ in range(3):
        step = model.true_step(inside, np.array([stay]))
        assert step.rewards[0] == pytest.approx(-20 - 0.05)
        inside = step.next_states


@pytest.mark.parametrize("env_cls", [MazeEnv, MultiStepMazeEnv])
def test_true_step_equals_env_step_without_noise(env_cls):
    env = env_cls(action_noise=0.0)
    model = env.model
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=1)
    for _ in range(200):
        action = int(rng.integers(env.action_space.n))
        expected = model.true_step(obs[None], np.array([action]))
        obs2, reward, terminated, truncated, info = env.step(action)
        assert np.array_equal(obs2, expected.next_states[0])
        assert reward == pytest.approx(float(expected.rewards[0]), abs=0)
        assert terminated == bool(expected.terminated[0])
        assert info["executed_action"] == action
        obs = obs2
        if terminated or truncated:
            obs, _ = env.reset()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_trajectory(env_id):
    def trajectory(seed):
        env = make_env(env_id)
        obs, _ = env.reset(seed=seed)
        out = [obs]
        rng = np.random.default_rng(123)  # same action sequence for every run
        for _ in range(60):
            obs, r, term, trunc, info = env.step(int(rng.integers(4096)))
            out.append(np.append(obs, [r, info["executed_action"]]))
            if term or trunc:
                obs, _ = env.reset()
        return np.concatenate(out)

    assert np.array_equal(trajectory(7), trajectory(7))
    assert not np.array_equal(trajectory(7), trajectory(8))  # the noise follows the seed


def test_action_noise_rate_is_ten_percent():
    env = MazeEnv()
    env.reset(seed=0)
    replaced = 0
    n = 4000
    for _i in range(n):
        _, _, term, trunc, info = env.step(0)
        replaced += info["executed_action"] != 0
        if term or trunc:
            env.reset()
    # 10% of actions are replaced (a replacement can draw 0 again: 1/4096)
    assert abs(replaced / n - 0.1) < 0.015


def test_truncation_at_sixty_steps():
    env = MazeEnv(action_noise=0.0)
    env.reset(seed=0)
    for t in range(1, 61):
        _, _, term, trunc, _ = env.step(0)
        assert not term
        assert trunc == (t == 60)
    ms = MultiStepMazeEnv(action_noise=0.0)
    ms.reset(seed=0)
    flags = [ms.step(0)[3] for _ in range(10)]  # plan 0 = six "down" moves: stuck, never the goal
    assert flags == [False] * 9 + [True]


def test_multistep_plan_encoding_and_classes():
    model = MultiStepMazeModel()
    # index in base 4, most significant digit first: 0b... plan "right, then five downs"
    plan = 1 * 4**5
    assert list(model.moves[plan]) == [1, 0, 0, 0, 0, 0]
    assert model.n_equivalence_classes == 49  # net displacements with |dx| + |dy| in {0, 2, 4, 6}
    up_down = int("202020", 4)  # up, down, up, down, up, down: no net motion
    down_up = int("020202", 4)
    assert model.action_classes[up_down] == model.action_classes[down_up] == model.action_classes[int("131313", 4)]


def test_multistep_plan_sums_rewards_and_respects_walls():
    cfg = MultiStepMazeConfig(action_noise=0.0)
    model = MultiStepMazeModel(cfg)
    right_then_ups = int("122222", 4)  # from the start: one right, five ups into the bar
    r = model.true_step(model.initial_states(1), np.array([right_then_ups]))
    x, y = r.next_states[0, :2]
    assert x == pytest.approx(0.25 + cfg.move_length, abs=1e-6)
    assert y < 0.25  # the horizontal bar stops every up move
    assert r.rewards[0] == pytest.approx(6 * cfg.step_reward)


def test_gym_make_accepts_config_overrides():
    env = make_env("maze", n_actuators=8)
    assert env.action_space.n == 256
    assert make_model("maze", {"n_actuators": 10}).n_actions == 1024
