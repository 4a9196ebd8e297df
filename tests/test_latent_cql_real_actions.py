"""Latent CQL as the authors ran it, tied to real actions: the normalised latent map, the
deterministic backup, the behaviour-cloning start, CQL(H) over real actions' embeddings, the
Wolpertinger rule, CQL-Lagrange, and the run diagnostics."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from latent_support import dataset, one_torch_thread, rep  # noqa: F401  (shared fixtures)

from merlion_core.algos.latent_cql import LatentCQL, LatentCQLConfig, bc_actor_loss, deterministic_backup
from merlion_core.algos.latent_diagnostics import CriticArgmaxPolicy, discounted_returns, latent_agent_diagnostics
from merlion_core.data.sampler import BatchSampler
from merlion_core.representation.base import Representation


class StateShiftedTable(Representation):
    """phi(a; s) = table[a] + s[0] * shift[a]: a state-conditional representation whose every action's
    latent moves with the state, so a latent taken at the wrong state is detectably wrong."""

    method = "shifted-table"
    table: torch.Tensor  # buffers, registered in __init__
    shift: torch.Tensor

    def __init__(self, table: torch.Tensor, shift: torch.Tensor, obs_dim: int) -> None:
        super().__init__(table.shape[0], obs_dim, table.shape[1])
        self.register_buffer("table", table)
        self.register_buffer("shift", shift)

    def embed(self, obs_BS: torch.Tensor, act_B: torch.Tensor) -> torch.Tensor:
        return self.table[act_B] + obs_BS[:, :1] * 10.0 * self.shift[act_B]


@pytest.fixture(scope="module")
def shifted(dataset):
    gen = torch.Generator().manual_seed(3)
    return StateShiftedTable(
        torch.randn(dataset.n_actions, 3, generator=gen),
        torch.randn(dataset.n_actions, 3, generator=gen),
        dataset.obs_dim,
    )


def build(dataset, representation, **overrides) -> LatentCQL:
    config = LatentCQLConfig(**{"hidden": (32, 32), "batch_size": 64, **overrides})
    return LatentCQL(config, dataset.n_actions, dataset.obs_dim, device="cpu", representation=representation)


def prepared(dataset, representation, **overrides) -> tuple[LatentCQL, BatchSampler]:
    algo, sampler = build(dataset, representation, **overrides), BatchSampler(dataset, 64, seed=0)
    algo.prepare_observation_features(sampler.observations)
    algo.prepare_data(sampler)
    return algo, sampler


def test_defaults_are_the_authors_setting():
    c = LatentCQLConfig()
    assert (c.backup_entropy, c.latent_normalise, c.cql_samples, c.knn_k, c.cql_target_gap) == (
        False,
        True,
        "both",
        1,
        0.0,
    )
    assert c.bc_steps > 0
    for bad in ({"cql_samples": "grid"}, {"knn_k": 0}, {"bc_steps": -1}, {"n_behaviour": -1}, {"cql_target_gap": -1}):
        with pytest.raises(ValueError):
            LatentCQLConfig(**bad)


def test_normalisation_maps_the_data_range_into_the_unit_box_and_back(dataset, shifted):
    algo, sampler = prepared(dataset, shifted)
    e = algo.embed(sampler.observations[:5000], sampler.actions[:5000])
    low, high = e.amin(0), e.amax(0)
    # c = (max + min) / 2, h = 1.1 (max - min) / 2 over the evenly spaced fitting sample (here all 3000 rows)
    torch.testing.assert_close(algo.latent_center, (high + low) / 2)
    torch.testing.assert_close(algo.latent_scale, 1.1 * (high - low) / 2)
    assert float(algo.latent_bound) == 1.0
    x = algo.to_actor_space(e)
    torch.testing.assert_close(x.abs().amax(0), torch.full((3,), 1 / 1.1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(algo.to_representation_space(x), e, rtol=1e-5, atol=1e-5)
    # the map travels with the checkpoint and acting uses it
    for _ in range(3):
        algo.update(sampler.sample())
    buf = io.BytesIO()
    torch.save(algo.state_dict(), buf)
    buf.seek(0)
    fresh = build(dataset, shifted, seed=5)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(fresh.latent_center, algo.latent_center) and torch.equal(fresh.latent_scale, algo.latent_scale)
    assert fresh.n_updates == 3
    obs = dataset.observations[:100]
    np.testing.assert_array_equal(fresh.act(obs), algo.act(obs))


def test_deterministic_backup_by_hand():
    q_next = torch.tensor([[1.0, 5.0, -2.0], [3.0, 4.0, -1.0]])  # [2 critics, 3 transitions]
    y = deterministic_backup(torch.tensor([0.5, 1.0, 2.0]), torch.tensor([0.0, 0.0, 1.0]), q_next, 0.9)
    torch.testing.assert_close(y, torch.tensor([0.5 + 0.9 * 1.0, 1.0 + 0.9 * 4.0, 2.0]))


def test_critic_target_is_the_deterministic_backup_of_the_target_critic_at_a_policy_sample(dataset, rep):
    algo, sampler = prepared(dataset, rep, auto_entropy=False, init_entropy_alpha=50.0)
    batch = sampler.sample()
    gen_state = algo.generator.get_state()
    target = float(algo.losses(batch)["target"])
    # by hand: the same first draw of the loss's noise stream is x' ~ pi(s'); y = r + gamma (1 - d) min Q'(s', x')
    algo.generator.set_state(gen_state)
    with torch.no_grad():
        mu, log_std = algo.actor(batch.next_obs)
        b = batch.obs.shape[0]
        m = algo.config.n_policy
        noise = torch.randn((b + 2 * b * m, algo.dim), generator=algo.generator)[:b]
        x_next = torch.tanh(mu + log_std.exp() * noise)
        q = algo.critic_target(batch.next_obs, x_next).min(0).values
        y = batch.rew + 0.99 * (1 - batch.done) * q
    assert target == pytest.approx(float(y.mean()), rel=1e-5)  # the temperature (50) plays no part


def test_bc_phase_actor_loss_then_the_critic(dataset, rep):
    algo, sampler = prepared(dataset, rep, bc_steps=2, cql_samples="real")
    batch = sampler.sample()
    assert algo.in_bc_phase and algo.graph_phase() is True
    gen_state = algo.generator.get_state()
    parts = algo.losses(batch)
    # by hand: alpha_ent log pi(x | s) - log pi(x_data | s), with x the reparameterised sample
    algo.generator.set_state(gen_state)
    bound = algo._bound()
    with torch.no_grad():
        b, m, n = batch.obs.shape[0], algo.config.n_policy, algo.config.n_random
        torch.randn((b + 2 * b * m, algo.dim), generator=algo.generator)  # the no-grad policy samples
        torch.randint(0, algo.n_actions, (b, n), generator=algo.generator)  # the real-action proposals
        _, log_pi = algo.actor.sample(batch.obs, bound, algo.generator)
        x_data = algo.to_actor_space(algo.embed(batch.obs, batch.act))
        mu, log_std = algo.actor(batch.obs)
        u = torch.atanh(x_data)
        log_pi_data = (
            torch.distributions.Normal(mu, log_std.exp()).log_prob(u) - torch.log(1 - torch.tanh(u) ** 2)
        ).sum(-1)
    expected = float(bc_actor_loss(algo.log_alpha.exp().detach(), log_pi, log_pi_data))
    assert float(parts["actor_loss"]) == pytest.approx(expected, rel=1e-4)
    assert bc_actor_loss(torch.tensor(2.0), torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 0.0])) == 4.5
    algo.update(batch)
    algo.update(batch)
    assert algo.n_updates == 2 and not algo.in_bc_phase
    # after the phase the actor maximises the critic: its loss is alpha log pi - min Q (no data term)
    algo.zero_grad(set_to_none=True)
    algo.losses(batch)["actor_loss"].backward()
    assert any(p.grad is not None and p.grad.abs().any() for p in algo.actor.parameters())


def test_cql_proposals_are_real_actions_embedded_at_their_own_state(dataset, shifted):
    algo, sampler = prepared(dataset, shifted, n_random=4, cql_samples="real")
    obs = sampler.sample().obs[:8]
    gen_state = algo.generator.get_state()
    x, log_q = algo.cql_proposals(obs, 4, algo._bound(), algo.generator)
    algo.generator.set_state(gen_state)
    acts = torch.randint(0, algo.n_actions, (8, 4), generator=algo.generator)
    for b in range(8):
        for j in range(4):
            e = shifted.table[acts[b, j]] + obs[b, 0] * 10.0 * shifted.shift[acts[b, j]]
            torch.testing.assert_close(x[b * 4 + j], algo.to_actor_space(e), rtol=1e-5, atol=1e-5)
    # at another state the same action has another latent: the rows above are not interchangeable
    assert not torch.allclose(x[0], algo.to_actor_space(shifted.embed(obs[1:2], acts[0, :1]))[0], atol=1e-3)
    torch.testing.assert_close(log_q, torch.full((8, 4), -math.log(algo.n_actions)))


def test_behaviour_proposals_need_a_behaviour_model(dataset, rep):
    with pytest.raises(ValueError, match="behaviour model"):
        build(dataset, rep, n_behaviour=3)


def test_wolpertinger_returns_the_critics_best_of_exactly_the_k_nearest(dataset, shifted):
    algo, sampler = prepared(dataset, shifted, knn_k=5)
    for _ in range(5):
        algo.update(sampler.sample())
    obs = torch.as_tensor(dataset.observations[:40])
    with torch.no_grad():
        e_hat = algo.to_representation_space(algo.latent_policy(obs))
        table = shifted.embed_all(obs)  # [B, A, D]
        dist = (table - e_hat[:, None, :]).abs().sum(-1)
        knn = dist.topk(5, dim=1, largest=False).indices
        q_all = algo.critic(obs, algo.to_actor_space(table).reshape(-1, 3), (algo.n_actions,)).min(0).values
        q_all = q_all.view(40, algo.n_actions)
        expected = knn.gather(1, q_all.gather(1, knn).argmax(1, keepdim=True))[:, 0]
        best_overall = q_all.argmax(1)
    acted = algo.act(obs.numpy())
    np.testing.assert_array_equal(acted, expected.numpy())
    assert all(int(a) in set(knn[i].tolist()) for i, a in enumerate(acted))
    assert (best_overall != expected).any()  # the rule looks only among the k nearest
    # k = 1 is the plain Eq. 1 lookup
    one = build(dataset, shifted, knn_k=1)
    one.load_state_dict(algo.state_dict())
    np.testing.assert_array_equal(one.act(obs.numpy()), dist.argmin(1).numpy())


def test_target_on_actions_values_the_target_at_a_real_action(dataset, shifted):
    algo, sampler = prepared(dataset, shifted, target_on_actions=True)
    batch = sampler.sample()
    target = float(algo.losses(batch)["target"])
    with torch.no_grad():  # every possible target is the value of some real action at s'
        table = algo.to_actor_space(shifted.embed_all(batch.next_obs))
        q = algo.critic_target(batch.next_obs, table.reshape(-1, 3), (algo.n_actions,)).min(0).values.view(64, -1)
        lo = batch.rew + 0.99 * (1 - batch.done) * q.min(1).values
        hi = batch.rew + 0.99 * (1 - batch.done) * q.max(1).values
    assert float(lo.mean()) - 1e-4 <= target <= float(hi.mean()) + 1e-4


def test_lagrange_alpha_rises_while_the_gap_is_above_its_target(dataset, rep):
    algo, sampler = prepared(dataset, rep, cql_target_gap=0.01)
    assert "log_alpha_prime" in dict(algo.named_parameters())
    parts = [algo.update(sampler.sample()) for _ in range(5)]
    assert all(p["cql_loss"] / 2 > 0.01 for p in parts)  # the gap is far above the target at the start
    assert float(algo.log_alpha_prime) > 0 and parts[-1]["cql_alpha"] > 1.0
    fixed, _ = prepared(dataset, rep)
    assert "log_alpha_prime" not in dict(fixed.named_parameters())


def test_discounted_returns_by_hand():
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    out = discounted_returns(rewards, np.array([2]), 0.5)  # episodes [0, 1, 2] and [3, 4] (cut)
    np.testing.assert_allclose(out, [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3, 4 + 0.5 * 5, 5])


def test_diagnostics_and_the_critic_argmax_policy(dataset, shifted):
    algo, sampler = prepared(dataset, shifted)
    for _ in range(3):
        algo.update(sampler.sample())
    obs = torch.as_tensor(dataset.observations[:30])
    act = torch.as_tensor(dataset.actions[:30])
    diag = latent_agent_diagnostics(algo, obs, act, torch.ones(30))
    with torch.no_grad():
        x_hat = algo.latent_policy(obs)
        taken = torch.as_tensor(algo.act(obs.numpy()))
        x_taken = algo.to_actor_space(shifted.embed(obs, taken))
        gap = (algo.critic(obs, x_hat).min(0).values - algo.critic(obs, x_taken).min(0).values).mean()
        table = algo.to_actor_space(shifted.embed_all(obs))
        q_all = algo.critic(obs, table.reshape(-1, 3), (algo.n_actions,)).min(0).values.view(30, -1)
    assert diag["lookup_gap"] == pytest.approx(float(gap), rel=1e-5, abs=1e-6)
    assert diag["mc_return"] == 1.0 and diag["taken_ood_share"] is None and diag["states"] == 30
    np.testing.assert_array_equal(CriticArgmaxPolicy(algo, chunk=7).act(obs.numpy()), q_all.argmax(1).numpy())


def test_both_proposals_give_each_state_its_real_actions_then_its_box_points(dataset, shifted):
    algo, sampler = prepared(dataset, shifted, n_random=3, cql_samples="both")
    assert algo.n_proposals == 6
    obs = sampler.sample().obs[:4]
    gen_state = algo.generator.get_state()
    x, log_q = algo.cql_proposals(obs, 3, algo._bound(), algo.generator)
    algo.generator.set_state(gen_state)
    acts = torch.randint(0, algo.n_actions, (4, 3), generator=algo.generator)
    box = (torch.rand(12, 3, generator=algo.generator) * 2 - 1).view(4, 3, 3)
    x = x.view(4, 6, 3)
    torch.testing.assert_close(
        x[:, :3], algo.to_actor_space(shifted.embed(obs.repeat_interleave(3, 0), acts.reshape(-1))).view(4, 3, 3)
    )
    torch.testing.assert_close(x[:, 3:], box)
    expected = torch.tensor([-math.log(algo.n_actions)] * 3 + [-3 * math.log(2.0)] * 3).expand(4, 6)
    torch.testing.assert_close(log_q, expected)
