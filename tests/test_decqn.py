"""DecQN-CQL / DecQN-BCQ (Beeson et al., TMLR 2024): the factorisation, the paper's pieces by hand,
the pipeline's factor fill-in and its error, a save/load round trip and a short learning run.

The registry harness (tests/test_algos_harness.py) covers the shared conventions of both entries.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from latent_support import one_torch_thread  # noqa: F401  (shared fixture)

from merlion_core.algos.artifacts import load_agent, save_agent
from merlion_core.algos.decqn import (
    DecQNBCQConfig,
    DecQNCQLConfig,
    decoupled_cql_regulariser,
    decoupled_q,
    decqn_target,
    greedy_sub_actions,
    sub_action_allowed,
)
from merlion_core.algos.registry import make_algorithm
from merlion_core.data.collect import collect
from merlion_core.data.dataset import TransitionDataset, from_arrays
from merlion_core.data.io import save_dataset
from merlion_core.data.sampler import Batch, BatchSampler
from merlion_core.envs import make_model
from merlion_core.envs.behaviours import make_behaviour
from merlion_core.envs.factors import (
    check_factors,
    env_action_factors,
    flat_to_sub_actions,
    sub_actions_to_flat,
)
from merlion_core.envs.maze import displacement_table
from merlion_core.envs.multistep_maze import plan_moves
from merlion_core.envs.rollout import rollout_episodes
from merlion_core.evaluation import evaluate
from merlion_core.pipelines.agent import train_agent

INF = math.inf
TMLR_DEFAULTS = (0.25, 3e-4, 0.99, 0.005, 256, (512, 512))  # alpha / threshold, lr, gamma, tau, batch, hidden
OPEN_MAZE = {"n_actuators": 6, "walls": [], "penalty_regions": [], "bonus_regions": [], "max_steps": 30}


# --- the factorisation ------------------------------------------------------------------------------


@pytest.mark.parametrize("n_actuators", [3, 6])
def test_maze_ids_map_to_actuator_bits_and_back(n_actuators):
    model = make_model("maze", {"n_actuators": n_actuators})
    factors = model.action_factors
    assert factors == (2,) * n_actuators and math.prod(factors) == model.n_actions
    ids = np.arange(model.n_actions)
    sub = flat_to_sub_actions(ids, factors)
    assert sub.dtype == np.int64 and sub.shape == (model.n_actions, n_actuators)
    np.testing.assert_array_equal(sub_actions_to_flat(sub, factors), ids)
    # actuator k alone (sub-action k on, the rest off) moves along direction 2 pi k / n
    alone = sub_actions_to_flat(np.eye(n_actuators, dtype=np.int64), factors)
    angles = 2 * np.pi * np.arange(n_actuators) / n_actuators
    table = displacement_table(n_actuators)
    unit = table[alone] / np.linalg.norm(table[alone], axis=1, keepdims=True)
    np.testing.assert_allclose(unit, np.stack([np.cos(angles), np.sin(angles)], 1), atol=1e-12)
    # and every action's displacement is the sum of its switched-on actuators' displacements
    np.testing.assert_allclose(table[ids], sub @ table[alone], atol=1e-12)
    # the first sub-action is the most significant bit
    assert sub[1].tolist() == [0] * (n_actuators - 1) + [1]
    assert sub[2 ** (n_actuators - 1)].tolist() == [1] + [0] * (n_actuators - 1)


@pytest.mark.parametrize("plan_length", [1, 3, 5])
def test_multistep_plans_map_to_their_moves_and_back(plan_length):
    model = make_model("multistep-maze", {"plan_length": plan_length, "max_time_steps": 60})
    assert model.action_factors == (4,) * plan_length
    ids = np.arange(model.n_actions)
    sub = flat_to_sub_actions(ids, model.action_factors)
    np.testing.assert_array_equal(sub, plan_moves(plan_length))
    np.testing.assert_array_equal(sub, model.moves)
    np.testing.assert_array_equal(sub_actions_to_flat(sub, model.action_factors), ids)


def test_mixed_radix_by_hand_numpy_and_torch():
    factors = (2, 3, 4)  # strides 12, 4, 1
    assert flat_to_sub_actions(np.array([0, 23, 13, 4]), factors).tolist() == [
        [0, 0, 0],
        [1, 2, 3],
        [1, 0, 1],
        [0, 1, 0],
    ]
    ids = torch.arange(24).reshape(2, 3, 4)  # any leading shape
    sub = flat_to_sub_actions(ids, factors)
    assert isinstance(sub, torch.Tensor) and sub.dtype == torch.int64 and sub.shape == (2, 3, 4, 3)
    np.testing.assert_array_equal(sub.numpy(), flat_to_sub_actions(ids.numpy(), factors))
    assert torch.equal(sub_actions_to_flat(sub, factors), ids)
    assert int(sub_actions_to_flat(torch.tensor([1, 2, 3]), factors)) == 23


def test_factorisation_errors():
    with pytest.raises(ValueError, match=r"sub-action size must be >= 2, got \(2, 1\)"):
        flat_to_sub_actions([0], (2, 1))
    with pytest.raises(ValueError, match="at least one"):
        check_factors(())
    with pytest.raises(ValueError, match=r"ids must be in \[0, 8\)"):
        flat_to_sub_actions(np.array([3, 8]), (2, 4))
    with pytest.raises(ValueError, match=r"ids must be in \[0, 8\)"):
        flat_to_sub_actions(torch.tensor([-1]), (2, 4))
    with pytest.raises(ValueError, match="integer ids"):
        flat_to_sub_actions(np.array([1.0]), (2, 4))
    with pytest.raises(ValueError, match=r"sub-action 1 must be in \[0, 4\)"):
        sub_actions_to_flat(np.array([[1, 4]]), (2, 4))
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 2\]"):
        sub_actions_to_flat(np.array([[1, 2, 0]]), (2, 4))


def test_env_action_factors():
    assert env_action_factors("maze", {"n_actuators": 4}) == (2, 2, 2, 2)
    assert env_action_factors("merlion/Maze-v0") == (2,) * make_model("maze").config.n_actuators
    assert env_action_factors("multistep-maze", {"plan_length": 2, "max_time_steps": 60}) == (4, 4)
    assert env_action_factors("recommender") is None
    assert env_action_factors("dialogue") is None
    assert env_action_factors("") is None and env_action_factors(None) is None


# --- the paper's pieces by hand (ragged factors (2, 3): six flat actions, id = 3 a_1 + a_2) ------------


def _set_bias(net: torch.nn.Module, bias) -> None:
    """Make a feature MLP output ``bias`` at every state (its last layer's weights zeroed)."""
    last = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))


U1, U2 = [1.0, 4.0], [0.0, 2.0, -3.0]  # the two utility heads


def _tiny(name: str, **overrides):
    config = {"hidden": (8,), "action_factors": (2, 3), **overrides}
    return make_algorithm(name, 6, 2, config, device="cpu")


def _batch(obs: torch.Tensor, act: torch.Tensor, rew: torch.Tensor, done: torch.Tensor) -> Batch:
    return Batch(obs, act, rew, torch.randn_like(obs), done)


def test_q_of_a_flat_action_is_the_mean_of_its_sub_action_utilities():
    algo = _tiny("decqn-cql")
    _set_bias(algo.u, U1 + U2)
    obs = torch.randn(5, 2)
    u = algo.utilities(obs)
    assert u.shape == (5, 2, 3) and u[0, 0, 2] == -INF  # head 1 padded to 3 entries
    for a in range(6):
        a1, a2 = divmod(a, 3)
        q = decoupled_q(u, algo.layout.decode(torch.full((5,), a)))
        torch.testing.assert_close(q, torch.full((5,), (U1[a1] + U2[a2]) / 2))


def test_greedy_is_the_per_sub_action_argmax():
    algo = _tiny("decqn-cql")
    _set_bias(algo.u, U1 + U2)
    obs = np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32)
    assert algo.act(obs).tolist() == [3 * 1 + 1] * 4  # U_1 best at 1, U_2 best at 1
    # it is the argmax of Q over all six flat actions
    u = algo.utilities(torch.from_numpy(obs))
    q_all = torch.stack([decoupled_q(u, algo.layout.decode(torch.full((4,), a))) for a in range(6)], 1)
    assert algo.act(obs).tolist() == q_all.argmax(1).tolist()
    assert greedy_sub_actions(u).tolist() == [[1, 1]] * 4


def test_cql_penalty_by_hand():
    u = torch.tensor([[[1.0, 4.0, -INF], [0.0, 2.0, -3.0]], [[0.0, 0.0, -INF], [1.0, 1.0, 1.0]]])
    sub = torch.tensor([[0, 2], [1, 0]])
    state1 = ((math.log(math.e + math.e**4) - 1.0) + (math.log(1 + math.e**2 + math.e**-3) + 3.0)) / 2
    state2 = (math.log(2.0) + math.log(3.0)) / 2
    assert decoupled_cql_regulariser(u, sub).item() == pytest.approx((state1 + state2) / 2, rel=1e-6)
    # its gradient: (softmax(U_i) - onehot(a_i)) / (K B) per head, zero on the padding
    u.requires_grad_(True)
    decoupled_cql_regulariser(u, sub).backward()
    expected = (torch.softmax(u.detach(), 2) - F.one_hot(sub, 3)) / 4
    torch.testing.assert_close(u.grad, expected)
    assert u.grad[:, 0, 2].eq(0).all()


def test_decqn_cql_loss_is_td_plus_alpha_times_the_penalty():
    algo = _tiny("decqn-cql", alpha=0.7)
    batch = _batch(torch.randn(16, 2), torch.arange(16) % 6, torch.randn(16), (torch.arange(16) % 4 == 0).float())
    parts = algo.losses(batch)
    u = algo.utilities(batch.obs)
    sub = algo.layout.decode(batch.act)
    td = F.smooth_l1_loss(decoupled_q(u, sub), algo.td_target(batch))
    torch.testing.assert_close(parts["td_loss"], td)
    torch.testing.assert_close(parts["loss"], td + 0.7 * decoupled_cql_regulariser(u, sub))


def test_target_by_hand():
    online = torch.tensor([[[0.0, 5.0, -INF], [2.0, 0.0, 1.0]]])
    target = torch.tensor([[[9.0, 1.0, -INF], [4.0, 7.0, 8.0]]])
    rew, done = torch.tensor([1.0]), torch.tensor([0.0])
    # the authors' code: each head's own target max, averaged over heads
    y = decqn_target(target, rew, done, 0.9)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.9 * (9.0 + 8.0) / 2]))
    # Double DQN per sub-action: the online heads choose (1, 0), the target values them
    y = decqn_target(target, rew, done, 0.9, online)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.9 * (1.0 + 4.0) / 2]))
    # a terminal next state does not bootstrap
    torch.testing.assert_close(decqn_target(target, rew, torch.tensor([1.0]), 0.9), rew)
    # masked: head 1 may only pick 1, head 2 only 0 or 1
    allowed = torch.tensor([[[False, True, False], [True, True, False]]])
    y = decqn_target(target, rew, done, 0.5, None, allowed)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.5 * (1.0 + 7.0) / 2]))
    y = decqn_target(target, rew, done, 0.5, online, allowed)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.5 * (1.0 + 4.0) / 2]))


def test_algorithm_td_target_uses_the_target_network():
    for double_q, expected in ((False, (9.0 + 8.0) / 2), (True, (1.0 + 4.0) / 2)):
        algo = _tiny("decqn-cql", double_q=double_q, gamma=0.5)
        _set_bias(algo.u, [0.0, 5.0, 2.0, 0.0, 1.0])
        _set_bias(algo.u_target, [9.0, 1.0, 4.0, 7.0, 8.0])
        batch = _batch(torch.randn(3, 2), torch.zeros(3, dtype=torch.int64), torch.ones(3), torch.zeros(3))
        torch.testing.assert_close(algo.td_target(batch), torch.full((3,), 1.0 + 0.5 * expected))


def test_bcq_filter_per_sub_action_by_hand():
    # relative probabilities: head 1 (1, 0.2); head 2 (0.5, 1, 0.3)
    log_pi = torch.log(torch.tensor([[[1.0, 0.2, 0.0], [0.5, 1.0, 0.3]]]))
    assert sub_action_allowed(log_pi, 0.25).tolist() == [[[True, False, False], [True, True, True]]]
    assert sub_action_allowed(log_pi, 0.4).tolist() == [[[True, False, False], [True, True, False]]]
    assert sub_action_allowed(log_pi, 0.5).tolist() == [[[True, False, False], [False, True, False]]]  # == masked
    assert sub_action_allowed(log_pi, 0.0).tolist() == [[[True, True, False], [True, True, True]]]  # padding never
    # per head: normalising one head's probabilities does not change the mask
    logits = torch.tensor([[[3.0, 1.0, -INF], [0.0, -0.5, 2.0]]])
    assert torch.equal(sub_action_allowed(logits, 0.3), sub_action_allowed(F.log_softmax(logits, 2), 0.3))


def test_bcq_masks_each_sub_action_when_acting_and_in_the_target():
    algo = _tiny("decqn-bcq", threshold=0.3, gamma=0.5)
    _set_bias(algo.net.utility, [0.0, 9.0, 5.0, 1.0, 8.0])  # unmasked best: (1, 2)
    _set_bias(algo.net.imitation, [0.0, -5.0, 0.0, math.log(0.5), -5.0])  # allowed: head 1 {0}, head 2 {0, 1}
    _set_bias(algo.net_target.utility, [2.0, 30.0, 4.0, 6.0, 40.0])
    obs = np.zeros((3, 2), np.float32)
    assert algo.act(obs).tolist() == [3 * 0 + 0] * 3  # head 1 -> 0, head 2 -> argmax(5, 1) = 0
    batch = _batch(torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64), torch.ones(4), torch.zeros(4))
    # the authors' target: each head's target max over its allowed sub-actions: head 1 -> 2, head 2 -> 6
    torch.testing.assert_close(algo.td_target(batch), torch.full((4,), 1.0 + 0.5 * (2.0 + 6.0) / 2))


def test_bcq_loss_parts_by_hand():
    algo = _tiny("decqn-bcq")
    batch = _batch(torch.randn(16, 2), torch.arange(16) % 6, torch.randn(16), torch.zeros(16))
    parts = algo.losses(batch)
    u_raw, logits = algo.net(batch.obs)
    a1, a2 = batch.act // 3, batch.act % 3
    nll = (F.cross_entropy(logits[:, :2], a1) + F.cross_entropy(logits[:, 2:], a2)) / 2
    q = (u_raw[:, :2].gather(1, a1[:, None]) + u_raw[:, 2:].gather(1, a2[:, None])).squeeze(1) / 2
    td = F.smooth_l1_loss(q, algo.td_target(batch))
    torch.testing.assert_close(parts["imitation_loss"], nll)
    torch.testing.assert_close(parts["loss"], td + nll + 1e-2 * logits.pow(2).mean())


@pytest.mark.parametrize("name", ["decqn-cql", "decqn-bcq"])
def test_ragged_factors_train_without_nans(name):
    """The -inf padding of the shorter heads must never reach a loss or a gradient."""
    algo = _tiny(name, lr=1e-2)
    rng = np.random.default_rng(0)
    ds = from_arrays(
        {
            "observations": rng.normal(size=(64, 2)).astype(np.float32),
            "actions": rng.integers(0, 6, 64),
            "rewards": rng.normal(size=64),
            "next_observations": rng.normal(size=(64, 2)).astype(np.float32),
            "terminals": np.arange(64) % 8 == 7,
            "timeouts": np.zeros(64, bool),
        },
        6,
        {},
    )
    for _, metrics in algo.train_steps(BatchSampler(ds, 32, seed=0), steps=30, log_every=10):
        assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert all(torch.isfinite(p).all() for p in algo.parameters())


def test_configs_and_construction_errors():
    with pytest.raises(ValueError, match="decqn-cql: action_factors is empty; it needs a factorised action space"):
        make_algorithm("decqn-cql", 6, 2, {"hidden": (8,)}, device="cpu")
    with pytest.raises(ValueError, match=r"decqn-bcq: action_factors \(2, 2\) give 4 actions, .* n_actions=6"):
        make_algorithm("decqn-bcq", 6, 2, {"hidden": (8,), "action_factors": (2, 2)}, device="cpu")
    with pytest.raises(ValueError, match=">= 2"):
        DecQNCQLConfig(action_factors=(3, 1))
    with pytest.raises(ValueError, match="threshold"):
        DecQNBCQConfig(threshold=1.0)
    cql, bcq = DecQNCQLConfig(), DecQNBCQConfig()
    assert (cql.alpha, cql.lr, cql.gamma, cql.tau, cql.batch_size, cql.hidden) == TMLR_DEFAULTS
    assert (bcq.threshold, bcq.lr, bcq.gamma, bcq.tau, bcq.batch_size, bcq.hidden) == TMLR_DEFAULTS
    assert (bcq.logit_reg, bcq.action_factors, bcq.double_q, cql.action_factors, cql.double_q) == (
        1e-2,
        (),
        False,
        (),
        False,
    )


# --- artifacts and the pipeline ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["decqn-cql", "decqn-bcq"])
def test_saved_agent_reloads_its_factors_and_acts_identically(name, tmp_path):
    algo = _tiny(name)
    obs = np.random.default_rng(1).normal(size=(64, 2)).astype(np.float32)
    algo.prepare_observation_features(torch.from_numpy(obs))
    save_agent(algo, name, tmp_path / name)
    assert json.loads((tmp_path / name / "config.json").read_text())["config"]["action_factors"] == [2, 3]
    loaded = load_agent(tmp_path / name)
    assert loaded.config.action_factors == (2, 3) and loaded.agent.layout.sizes == (2, 3)
    np.testing.assert_array_equal(loaded.agent.act(obs), algo.act(obs))
    assert len(set(algo.act(obs).tolist())) > 1  # a test of something: the actions vary over states


def _no_simulator_dataset() -> TransitionDataset:
    rng = np.random.default_rng(0)
    n = 1000  # 50 episodes of 20: enough for the no-simulator holdout
    return from_arrays(
        {
            "observations": rng.normal(size=(n, 3)).astype(np.float32),
            "actions": rng.integers(0, 8, n),
            "rewards": rng.normal(size=n),
            "next_observations": rng.normal(size=(n, 3)).astype(np.float32),
            "terminals": np.arange(n) % 20 == 19,
            "timeouts": np.zeros(n, bool),
        },
        8,
        {"behaviour": "logged"},
    )


def test_pipeline_fills_the_env_factors_or_says_it_needs_them(tmp_path):
    no_sim = save_dataset(_no_simulator_dataset(), tmp_path / "nosim")
    for name in ("decqn-cql", "decqn-bcq"):
        with pytest.raises(ValueError, match=f"^{name}: needs a factorised action space.*declares none"):
            train_agent(no_sim, name, tmp_path / "x", steps=1, device="cpu")
    maze_data = collect("maze", "random", 0.0, 300, seed=0, env_overrides={"n_actuators": 4})
    maze = save_dataset(maze_data, tmp_path / "maze")
    tiny = {"hidden": (8,)}
    train_agent(maze, "decqn-bcq", tmp_path / "maze-agent", steps=2, eval_episodes=2, overrides=tiny, device="cpu")
    assert load_agent(tmp_path / "maze-agent").config.action_factors == (2, 2, 2, 2)
    with pytest.raises(ValueError, match=r"action_factors \(2, 2\) give 4 actions, but there are n_actions=16"):
        train_agent(maze, "decqn-cql", tmp_path / "y", steps=1, overrides={"action_factors": (2, 2)}, device="cpu")


# --- learning ---------------------------------------------------------------------------------------


def test_decqn_cql_beats_a_random_policy_on_a_small_maze():
    """An open 64-action maze (30 steps, no walls): the random policy reaches the goal in about 10%
    of episodes; DecQN-CQL trained 500 steps on 50%-noise medium data reaches it in about 90% (seeds
    0..2: 0.94, 0.90, 0.92). The untrained policy (one fixed sub-action argmax) reaches it in none."""
    model = make_model("maze", OPEN_MAZE)
    random_result = rollout_episodes(model, make_behaviour(model, "random"), 200, np.random.default_rng(0))
    assert random_result.successes.mean() < 0.3
    ds = collect("maze", "medium", 0.5, 10_000, seed=0, env_overrides=OPEN_MAZE)
    config = {"hidden": (64, 64), "action_factors": model.action_factors, "batch_size": 64}
    algo = make_algorithm("decqn-cql", ds.n_actions, ds.obs_dim, config, device="cpu")
    algo.prepare_observation_features(torch.from_numpy(ds.observations))
    assert evaluate(algo, "maze", 50, seed=0, env_overrides=OPEN_MAZE).success_rate < 0.3
    for _ in algo.train_steps(BatchSampler(ds, 64, seed=0), steps=500, log_every=500):
        pass
    result = evaluate(algo, "maze", 50, seed=0, env_overrides=OPEN_MAZE)
    assert result.success_rate >= 0.7, result.success_rate
    assert result.mean_return > random_result.returns.mean() + 50
