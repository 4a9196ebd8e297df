"""IQL (Kostrikov et al. 2022), discrete and on latent actions: the three losses by hand, the V backup,
gradients that stay in their own network, the acting rules, the latent diagnostics, and learning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from latent_support import dataset, one_torch_thread, rep  # noqa: F401  (shared fixtures)

from merlion_core.algos.discrete_iql import (
    DiscreteIQL,
    DiscreteIQLConfig,
    awr_policy_loss,
    awr_weights,
    expectile_loss,
    q_loss,
    value_backup,
    value_loss,
)
from merlion_core.algos.latent_cql import LatentCQL, LatentCQLConfig
from merlion_core.algos.latent_diagnostics import CriticArgmaxPolicy, latent_agent_diagnostics
from merlion_core.algos.latent_iql import LatentIQL, LatentIQLConfig
from merlion_core.algos.registry import make_algorithm
from merlion_core.data.collect import collect
from merlion_core.data.dataset import TransitionDataset
from merlion_core.data.sampler import BatchSampler
from merlion_core.envs import make_model
from merlion_core.envs.behaviours import make_behaviour
from merlion_core.envs.rollout import rollout_episodes

SMALL = {"hidden": (32, 32), "batch_size": 64}


def discrete(dataset, **overrides) -> DiscreteIQL:
    return DiscreteIQL(DiscreteIQLConfig(**{**SMALL, **overrides}), dataset.n_actions, dataset.obs_dim, device="cpu")


def latent_iql(dataset, representation, **overrides) -> tuple[LatentIQL, BatchSampler]:
    """A latent IQL agent with its observation features and latent map fitted (what train_steps does first)."""
    algo = LatentIQL(
        LatentIQLConfig(**{**SMALL, **overrides}),
        dataset.n_actions,
        dataset.obs_dim,
        device="cpu",
        representation=representation,
    )
    sampler = BatchSampler(dataset, 64, seed=0)
    algo.prepare_observation_features(sampler.observations)
    algo.prepare_data(sampler)
    return algo, sampler


def set_output(net: torch.nn.Module, bias: torch.Tensor) -> None:
    """Make an MLP output ``bias`` whatever its input (last Linear: zero weights)."""
    last = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(bias)


# --- the losses by hand --------------------------------------------------------------------------------


def test_expectile_loss_by_hand_on_both_signs():
    u = torch.tensor([-2.0, -0.5, 0.0, 1.0, 3.0])
    # |tau - 1(u < 0)| u^2 with tau = 0.8: 0.2 u^2 below zero, 0.8 u^2 above
    expected = torch.tensor([0.2 * 4.0, 0.2 * 0.25, 0.0, 0.8 * 1.0, 0.8 * 9.0])
    torch.testing.assert_close(expectile_loss(u, 0.8), expected)
    torch.testing.assert_close(expectile_loss(u, 0.3), torch.tensor([0.7 * 4.0, 0.7 * 0.25, 0.0, 0.3, 0.3 * 9.0]))
    q, v = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.5])  # u = q - v = -2, 1.5
    assert float(value_loss(q, v, 0.8)) == pytest.approx((0.2 * 4.0 + 0.8 * 2.25) / 2)


def test_value_loss_fits_the_expectile():
    """The minimiser of E[L2^tau(q - v)] over q in {0, 1} (equally likely) solves tau (1 - v) = (1 - tau) v:
    v = tau, above the mean 0.5 for tau > 0.5 (V approaches the best in-data action's value)."""
    q = torch.tensor([0.0, 1.0])
    v = torch.zeros((), requires_grad=True)
    opt = torch.optim.SGD([v], lr=0.5)
    for _ in range(300):
        opt.zero_grad()
        value_loss(q, v.expand(2), 0.9).backward()
        opt.step()
    assert float(v.detach()) == pytest.approx(0.9, abs=1e-4)


def test_value_backup_by_hand():
    y = value_backup(torch.tensor([1.0, -1.0]), torch.tensor([0.0, 1.0]), torch.tensor([5.0, 7.0]), 0.9)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.9 * 5.0, -1.0]))
    q_2B = torch.tensor([[1.0, 2.0], [0.0, 4.0]])
    assert float(q_loss(q_2B, torch.tensor([2.0, 2.0]))) == pytest.approx((1.0 + 0.0) / 2 + (4.0 + 4.0) / 2)


def test_awr_weights_and_policy_loss_by_hand_with_the_clip():
    q = torch.tensor([0.0, 1.0, 2.0, 10.0])
    v = torch.tensor([0.0, 0.5, 3.0, 0.0])
    w = awr_weights(q, v, beta=2.0, max_weight=100.0)
    # exp(2 * (q - v)) = 1, e, e^-2, e^20 -> clipped to 100
    torch.testing.assert_close(w, torch.tensor([1.0, math.e, math.exp(-2.0), 100.0]))
    log_pi = torch.tensor([-1.0, -2.0, -0.5, -3.0])
    expected = -(1.0 * -1.0 + math.e * -2.0 + math.exp(-2.0) * -0.5 + 100.0 * -3.0) / 4
    assert float(awr_policy_loss(w, log_pi)) == pytest.approx(expected, rel=1e-6)
    assert awr_weights(q, v, 0.0, 100.0).tolist() == [1.0] * 4  # beta = 0: behaviour cloning


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="expectile"):
        DiscreteIQLConfig(expectile=1.0)
    with pytest.raises(ValueError, match="max_weight"):
        LatentIQLConfig(max_weight=0.0)
    with pytest.raises(ValueError, match="knn_k"):
        LatentIQLConfig(knn_k=0)
    with pytest.raises(ValueError, match="gamma"):
        DiscreteIQLConfig(gamma=1.5)


# --- discrete IQL ---------------------------------------------------------------------------------------


def test_discrete_q_target_is_v_of_the_next_state_not_a_max_over_q(dataset):
    algo = discrete(dataset, gamma=0.5)
    n = dataset.n_actions
    set_output(algo.value, torch.tensor([2.0]))  # V = 2 everywhere
    for head in (algo.q.q1, algo.q.q2):
        set_output(head, torch.ones(n))  # Q = 1 for every action
    for head in (algo.q_target.q1, algo.q_target.q2):  # a max over Q' would read 50
        set_output(head, torch.arange(n, dtype=torch.float32) + torch.tensor(50.0 - n + 1))
    batch = BatchSampler(dataset, 64, seed=0).sample()
    parts = algo.losses(batch)
    y = batch.rew + 0.5 * (1.0 - batch.done) * 2.0
    assert float(parts["q_loss"].detach()) == pytest.approx(2 * float(((y - 1.0) ** 2).mean()), rel=1e-5)
    # V's loss reads the target twins at the logged action: min_i Q'_i(s, a) = a + 50 - n + 1
    q_target = batch.act.float() + 50.0 - n + 1
    assert float(parts["value_loss"].detach()) == pytest.approx(
        float(value_loss(q_target, torch.full_like(q_target, 2.0), 0.7))
    )


def test_discrete_losses_compose_the_equations(dataset):
    algo = discrete(dataset, expectile=0.8, beta=0.5)
    batch = BatchSampler(dataset, 64, seed=1).sample()
    algo.prepare_observation_features(torch.as_tensor(dataset.observations))
    train = BatchSampler(dataset, 64, seed=2)
    for _ in range(5):  # targets and online nets apart
        algo.update(train.sample())
    parts = algo.losses(batch)
    with torch.no_grad():
        idx = batch.act[:, None]
        q1_t, q2_t = algo.q_target.q1(batch.obs).gather(1, idx), algo.q_target.q2(batch.obs).gather(1, idx)
        q_t = torch.minimum(q1_t, q2_t)[:, 0]
        v, v_next = algo.value(batch.obs)[:, 0], algo.value(batch.next_obs)[:, 0]
        y = batch.rew + 0.99 * (1 - batch.done) * v_next
        q1, q2 = algo.q.q1(batch.obs).gather(1, idx)[:, 0], algo.q.q2(batch.obs).gather(1, idx)[:, 0]
        log_pi = torch.log_softmax(algo.policy(batch.obs), 1).gather(1, idx)[:, 0]
    torch.testing.assert_close(parts["value_loss"], expectile_loss(q_t - v, 0.8).mean())
    torch.testing.assert_close(parts["q_loss"], ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean())
    w = torch.exp(0.5 * (q_t - v)).clamp(max=100.0)
    torch.testing.assert_close(parts["policy_loss"], -(w * log_pi).mean())
    torch.testing.assert_close(parts["loss"], parts["value_loss"] + parts["q_loss"] + parts["policy_loss"])


def _grad_owners(algo: torch.nn.Module, loss: torch.Tensor, owners: dict[str, torch.nn.Module]) -> set[str]:
    """The names of the networks among ``owners`` whose parameters get a non-zero gradient from ``loss``."""
    params = [p for p in algo.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    moved = {id(p) for p, g in zip(params, grads, strict=True) if g is not None and bool(g.abs().sum() > 0)}
    assert moved, "the loss has no gradient at all"
    return {name for name, net in owners.items() if any(id(p) in moved for p in net.parameters())}


def test_discrete_gradients_stay_in_their_own_network(dataset):
    algo = discrete(dataset)
    algo.prepare_observation_features(torch.as_tensor(dataset.observations))
    parts = algo.losses(BatchSampler(dataset, 64, seed=0).sample())
    owners = {"q": algo.q, "value": algo.value, "policy": algo.policy}
    assert _grad_owners(algo, parts["value_loss"], owners) == {"value"}
    assert _grad_owners(algo, parts["q_loss"], owners) == {"q"}
    assert _grad_owners(algo, parts["policy_loss"], owners) == {"policy"}
    assert not any(p.requires_grad for p in algo.q_target.parameters())


def test_discrete_acts_with_the_argmax_of_the_policy_logits_and_polyak_averages_its_target(dataset):
    algo = discrete(dataset, tau=0.25)
    logits = torch.zeros(dataset.n_actions)
    logits[17] = 3.0
    set_output(algo.policy, logits)
    set_output(algo.q.q1, -logits)  # the Q heads disagree: acting must not read them
    assert (algo.act(dataset.observations[:40]) == 17).all()
    old = [p.clone() for p in algo.q_target.parameters()]
    algo.update(BatchSampler(dataset, 64, seed=0).sample())
    for t_old, t_new, p in zip(old, algo.q_target.parameters(), algo.q.parameters(), strict=True):
        torch.testing.assert_close(t_new, 0.75 * t_old + 0.25 * p.detach())


def test_advantage_weighting_picks_the_better_of_uniformly_logged_actions():
    """One-step episodes, actions logged uniformly, action 5 pays 1 and the rest 0: cloning would not
    prefer it; IQL's policy must (a sign error in the advantage would avoid it)."""
    rng = np.random.default_rng(0)
    n, n_actions = 2048, 8
    obs = rng.normal(size=(n, 2)).astype(np.float32)
    act = rng.integers(0, n_actions, n).astype(np.int64)
    ds = TransitionDataset(obs, act, (act == 5).astype(np.float32), obs, np.ones(n, bool), np.zeros(n, bool), n_actions)
    algo = DiscreteIQL(DiscreteIQLConfig(hidden=(32, 32), lr=1e-3, tau=0.05), n_actions, 2, device="cpu")
    assert (algo.act(obs) != 5).any()
    for _ in algo.train_steps(BatchSampler(ds, 256, seed=0), steps=300, log_every=300):
        pass
    assert (algo.act(obs) == 5).mean() > 0.95


def test_discrete_iql_beats_a_random_policy_on_the_small_maze():
    """The harness's maze (64 actions, 50%-noise medium data): after 1,500 steps (fast settings: lr 1e-3,
    Polyak 0.05, 64-unit layers) the greedy policy reaches the goal in most episodes; random never does."""
    torch.set_num_threads(1)
    overrides = {"n_actuators": 6}
    data = collect("maze", "medium", 0.5, 5000, seed=0, env_overrides=overrides)
    model = make_model("maze", overrides)
    config = DiscreteIQLConfig(hidden=(64, 64), lr=1e-3, tau=0.05)
    algo = make_algorithm("diql", data.n_actions, data.obs_dim, config, device="cpu")
    for _ in algo.train_steps(BatchSampler(data, config.batch_size, seed=0), steps=1500, log_every=1500):
        pass
    random = rollout_episodes(model, make_behaviour(model, "random"), 200, np.random.default_rng(0))
    learned = rollout_episodes(
        model, lambda obs, _rng: algo.act(obs), 200, np.random.default_rng(0), policy_sees="observation"
    )
    assert random.successes.mean() < 0.05
    assert learned.successes.mean() > 0.6, learned.successes.mean()
    assert learned.returns.mean() > random.returns.mean() + 30.0, (learned.returns.mean(), random.returns.mean())


# --- latent IQL -----------------------------------------------------------------------------------------


def test_latent_q_target_is_v_of_the_next_state(dataset, rep):
    algo, sampler = latent_iql(dataset, rep, gamma=0.5)
    set_output(algo.value, torch.tensor([3.0]))
    for net in (algo.critic.q1, algo.critic.q2):
        set_output(net, torch.tensor([-1.0]))
    batch = sampler.sample()
    parts = algo.losses(batch)
    y = batch.rew + 0.5 * (1.0 - batch.done) * 3.0
    assert float(parts["q_loss"].detach()) == pytest.approx(2 * float(((y + 1.0) ** 2).mean()), rel=1e-5)


def test_latent_losses_compose_the_equations(dataset, rep):
    algo, sampler = latent_iql(dataset, rep, beta=2.0, expectile=0.9)
    for _ in range(5):
        algo.update(sampler.sample())
    batch = sampler.sample()
    parts = algo.losses(batch)
    with torch.no_grad():
        x = algo.to_actor_space(rep.embed(batch.obs, batch.act))
        assert float(x.abs().max()) < 1.0  # the logged latents inside the unit box (normalised)
        q_t = algo.critic_target(batch.obs, x).min(0).values
        v = algo.value(batch.obs)[:, 0]
        mu, log_std = algo.actor(batch.obs)
        u = torch.atanh(x)
        log_pi = algo.actor.log_prob_u(u, mu, log_std.clamp(min=-5.0), torch.tensor(1.0))
    torch.testing.assert_close(parts["value_loss"], expectile_loss(q_t - v, 0.9).mean())
    w = torch.exp(2.0 * (q_t - v)).clamp(max=100.0)
    torch.testing.assert_close(parts["policy_loss"], -(w * log_pi).mean())


def test_latent_policy_log_sigma_is_floored(dataset, rep):
    algo, sampler = latent_iql(dataset, rep, log_std_min=-2.0)
    dim = algo.dim
    set_output(algo.actor.net, torch.cat([torch.zeros(dim), torch.full((dim,), -9.0)]))  # mu 0, log sigma -9
    obs = sampler.sample().obs[:4]
    x = torch.full((4, dim), 0.5)
    expected = algo.actor.log_prob_u(torch.atanh(x), torch.zeros(4, dim), torch.full((4, dim), -2.0), torch.tensor(1.0))
    torch.testing.assert_close(algo.policy_log_prob(obs, x, torch.tensor(1.0)), expected)


def test_latent_gradients_stay_in_their_own_network(dataset, rep):
    algo, sampler = latent_iql(dataset, rep)
    parts = algo.losses(sampler.sample())
    owners = {"critic": algo.critic, "value": algo.value, "actor": algo.actor}
    assert _grad_owners(algo, parts["value_loss"], owners) == {"value"}
    assert _grad_owners(algo, parts["q_loss"], owners) == {"critic"}
    assert _grad_owners(algo, parts["policy_loss"], owners) == {"actor"}


def test_latent_iql_acts_with_the_real_action_nearest_the_policy_mean(dataset, rep):
    algo, sampler = latent_iql(dataset, rep)
    for _ in range(5):
        algo.update(sampler.sample())
    obs = dataset.observations[:60]
    ids = algo.act(obs)
    assert ids.dtype == np.int64 and ids.shape == (60,)
    with torch.no_grad():
        x_hat = algo.actor.mean(torch.as_tensor(obs), torch.tensor(1.0))  # B tanh(mu), B = 1 normalised
        e_hat = algo.latent_center + algo.latent_scale * x_hat
        expected = (e_hat[:, None, :] - rep.table[None]).abs().sum(-1).argmin(1)
    np.testing.assert_array_equal(ids, expected.numpy())


def test_latent_iql_with_every_action_as_candidate_acts_as_the_critic_argmax(dataset, rep):
    algo, sampler = latent_iql(dataset, rep, knn_k=dataset.n_actions)
    for _ in range(5):
        algo.update(sampler.sample())
    obs = dataset.observations[:25]
    np.testing.assert_array_equal(algo.act(obs), CriticArgmaxPolicy(algo, chunk=9).act(obs))


def test_latent_diagnostics_report_v_for_iql_only(dataset, rep):
    algo, sampler = latent_iql(dataset, rep)
    for _ in range(3):
        algo.update(sampler.sample())
    obs = torch.as_tensor(dataset.observations[:30])
    act = torch.as_tensor(dataset.actions[:30])
    diag = latent_agent_diagnostics(algo, obs, act, torch.zeros(30))
    with torch.no_grad():
        q_data = algo.critic(obs, algo.to_actor_space(rep.embed(obs, act))).min(0).values.mean()
    assert diag["v_data"] == pytest.approx(float(algo.value(obs).detach().mean()), rel=1e-5)
    assert diag["q_data"] == pytest.approx(float(q_data), rel=1e-5)
    assert "entropy_alpha" not in diag and diag["states"] == 30
    assert algo.training  # the mode is restored
    cql = LatentCQL(LatentCQLConfig(**SMALL), dataset.n_actions, dataset.obs_dim, device="cpu", representation=rep)
    cql.fit_latent_bound(rep.embed(obs, act))
    assert "v_data" not in latent_agent_diagnostics(cql, obs, act, torch.zeros(30))


def test_latent_iql_through_the_agent_pipeline(tmp_path):
    """train_agent with an encoder folder: the curve's diagnostics (v_data, the critic-argmax score), a
    saved agent that reloads and acts identically."""
    from merlion_core.algos.artifacts import load_agent
    from merlion_core.data.io import save_dataset
    from merlion_core.pipelines.agent import train_agent
    from merlion_core.pipelines.encoder import train_encoder

    data = collect("maze", "medium", 0.5, 2000, seed=0, env_overrides={"n_actuators": 6})
    path = save_dataset(data, tmp_path / "data")
    train_encoder(path, "external", tmp_path / "enc")
    result = train_agent(
        path,
        "iql",
        tmp_path / "iql",
        steps=30,
        encoder_dir=tmp_path / "enc",
        eval_episodes=4,
        overrides=SMALL,
        device="cpu",
    )
    diag = result["last"]["diagnostics"]
    assert {"v_data", "q_data", "lookup_gap", "critic_argmax_score"} <= set(diag)
    assert all(math.isfinite(diag[k]) for k in ("v_data", "q_data", "lookup_gap", "critic_argmax_score"))
    loaded = load_agent(tmp_path / "iql")
    agent = loaded.agent
    assert isinstance(agent, LatentIQL) and loaded.config == LatentIQLConfig(**SMALL)
    assert agent.bound_is_set and bool((agent.latent_scale > 0).all())  # the fitted latent map came back
    obs = data.observations[:50]
    ids = agent.act(obs)
    with torch.no_grad():
        x_hat = agent.latent_policy(torch.as_tensor(obs))
        e_all = agent.representation.embed_all(torch.as_tensor(obs))
        dist_BA = (agent.to_representation_space(x_hat)[:, None] - e_all).abs().sum(-1)
    # the External phi gives equivalent actions one latent: the taken action is one at the least L1 distance
    taken = dist_BA.gather(1, torch.as_tensor(ids)[:, None])[:, 0]
    torch.testing.assert_close(taken, dist_BA.min(1).values)


def test_the_critic_argmax_evaluation_is_skipped_above_the_action_cap(tmp_path, monkeypatch):
    """Above CRITIC_ARGMAX_MAX_ACTIONS the last evaluation records why the critic's argmax over every
    action was not scored, instead of scoring it (64 actions here, the cap lowered to 10)."""
    from merlion_core.data.io import save_dataset
    from merlion_core.pipelines import agent as agent_pipeline
    from merlion_core.pipelines.encoder import train_encoder

    monkeypatch.setattr(agent_pipeline, "CRITIC_ARGMAX_MAX_ACTIONS", 10)
    data = collect("maze", "medium", 0.5, 2000, seed=0, env_overrides={"n_actuators": 6})
    path = save_dataset(data, tmp_path / "data")
    train_encoder(path, "external", tmp_path / "enc")
    result = agent_pipeline.train_agent(
        path, "iql", tmp_path / "iql", steps=20, encoder_dir=tmp_path / "enc", eval_episodes=2, overrides=SMALL,
        device="cpu",
    )  # fmt: skip
    diag = result["last"]["diagnostics"]
    assert "critic_argmax_score" not in diag and diag["critic_argmax_skipped"].startswith("64 actions > 10")
    assert math.isfinite(diag["lookup_gap"])
