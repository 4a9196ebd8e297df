"""Latent continuous CQL (MERLION-CQL): the CQL(H) term by hand, training, acting, checkpoints, gradients."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from latent_support import dataset, one_torch_thread, rep  # noqa: F401  (shared fixtures)

from merlion_core.algos.latent_cql import LatentCQL, LatentCQLConfig, cql_h_term
from merlion_core.config import field_docs
from merlion_core.data.sampler import BatchSampler


def build(dataset, rep, **overrides) -> LatentCQL:
    config = LatentCQLConfig(**{"hidden": (32, 32), "batch_size": 64, **overrides})
    return LatentCQL(config, dataset.n_actions, dataset.obs_dim, device="cpu", representation=rep)


def sampler(dataset, seed: int = 0) -> BatchSampler:
    return BatchSampler(dataset, 64, seed=seed, device="cpu")


def fitted(dataset, rep, **overrides) -> LatentCQL:
    algo = build(dataset, rep, **overrides)
    obs = torch.as_tensor(dataset.observations[:1000], dtype=torch.float32)
    act = torch.as_tensor(dataset.actions[:1000], dtype=torch.int64)
    algo.fit_latent_bound(algo.embed(obs, act))
    return algo


def test_config_fields_documented():
    docs = field_docs(LatentCQLConfig)
    config = LatentCQLConfig()
    assert (config.n_random, config.n_policy, config.gamma, config.tau, config.batch_size) == (10, 10, 0.99, 5e-3, 256)
    assert (config.policy_lr, config.q_lr, config.hidden, config.latent_bound) == (1e-4, 3e-4, (256, 256), 0.0)
    assert all(docs.get(name) for name in config.__dataclass_fields__), docs
    with pytest.raises(ValueError):
        LatentCQLConfig(alpha=-1.0)


def test_cql_h_term_by_hand():
    q_rand = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    log_u = torch.full((2, 2), math.log(0.25))
    q_pi = torch.tensor([[0.5], [3.0]])
    log_pi = torch.tensor([[-1.0], [0.2]])
    q_data = torch.tensor([1.5, -0.5])
    rows = []
    for b in range(2):
        terms = [q_rand[b, 0] - log_u[b, 0], q_rand[b, 1] - log_u[b, 1], q_pi[b, 0] - log_pi[b, 0]]
        rows.append(math.log(sum(math.exp(float(t)) for t in terms)) - float(q_data[b]))
    expected = sum(rows) / 2
    assert float(cql_h_term(q_rand, log_u, q_pi, log_pi, q_data)) == pytest.approx(expected, rel=1e-6)


def test_needs_representation_and_bound(dataset, rep):
    with pytest.raises(ValueError, match="representation"):
        LatentCQL(LatentCQLConfig(), dataset.n_actions, dataset.obs_dim, device="cpu")
    algo = build(dataset, rep)
    with pytest.raises(RuntimeError, match="latent_bound"):
        algo.act(dataset.observations[:4])
    algo.losses(sampler(dataset).sample())  # the first batch derives B when it was not fitted
    assert float(algo.latent_bound) > 0


def test_fit_latent_bound(dataset, rep):
    algo = build(dataset, rep, latent_normalise=False)
    e = torch.tensor([[0.5, -2.0, 1.0], [0.1, 0.2, 0.3]])
    assert algo.fit_latent_bound(e) == pytest.approx(2.2)
    assert float(algo.latent_bound) == pytest.approx(2.2)
    assert "latent_bound" in algo.state_dict()
    assert not any(k.startswith("representation") for k in algo.state_dict())


def test_training_changes_every_parameter(dataset, rep):
    algo = fitted(dataset, rep)
    before = {k: p.detach().clone() for k, p in algo.named_parameters()}
    target_before = {k: v.clone() for k, v in algo.critic_target.named_parameters()}  # weights, not fixed buffers
    s = sampler(dataset)
    for _ in range(20):
        parts = algo.update(s.sample())
        assert all(math.isfinite(v) for v in parts.values()), parts
    assert parts["loss"] == pytest.approx(parts["critic_loss"] + parts["actor_loss"] + parts["entropy_loss"], rel=1e-4)
    unchanged = [k for k, p in algo.named_parameters() if torch.equal(p, before[k])]
    assert not unchanged
    assert any(k.startswith("actor") for k in before) and any(k.startswith("critic.") for k in before)
    assert all(not torch.equal(v, target_before[k]) for k, v in algo.critic_target.named_parameters())


def test_act_returns_valid_ids_at_the_nearest_latent(dataset, rep):
    algo = fitted(dataset, rep)
    for batch in [sampler(dataset).sample() for _ in range(3)]:
        algo.update(batch)
    obs = dataset.observations[:50]
    ids = algo.act(obs)
    assert ids.dtype == np.int64 and ids.shape == (50,)
    assert ids.min() >= 0 and ids.max() < dataset.n_actions
    with torch.no_grad():
        x_hat = algo.actor.mean(torch.as_tensor(obs, dtype=torch.float32), algo.latent_bound)
        assert float(x_hat.abs().max()) <= float(algo.latent_bound) == 1.0
        e_hat = algo.latent_center + algo.latent_scale * x_hat  # back to the representation's space
        expected = (e_hat[:, None, :] - rep.table[None]).abs().sum(-1).argmin(1)
    np.testing.assert_array_equal(ids, expected.numpy())


def test_save_load_gives_identical_actions(dataset, rep):
    algo = fitted(dataset, rep)
    s = sampler(dataset)
    for _ in range(5):
        algo.update(s.sample())
    buf = io.BytesIO()
    torch.save(algo.state_dict(), buf)
    buf.seek(0)
    fresh = build(dataset, rep, seed=7)  # different init, bound unset
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    obs = dataset.observations[:200]
    np.testing.assert_array_equal(fresh.act(obs), algo.act(obs))
    assert float(fresh.latent_bound) == float(algo.latent_bound)


def test_actor_and_critic_gradients_do_not_cross(dataset, rep):
    algo = fitted(dataset, rep)
    batch = sampler(dataset).sample()

    def grads(part: str) -> tuple[list, list, list]:
        algo.zero_grad(set_to_none=True)
        algo.losses(batch)[part].backward()
        return (
            [p.grad for p in algo.actor.parameters()],
            [p.grad for p in algo.critic.parameters()],
            [algo.log_alpha.grad],
        )

    def zero(gs: list) -> bool:
        return all(g is None or not g.abs().any() for g in gs)

    actor_g, critic_g, alpha_g = grads("actor_loss")
    assert zero(critic_g) and zero(alpha_g) and not zero(actor_g)
    actor_g, critic_g, alpha_g = grads("critic_loss")
    assert zero(actor_g) and zero(alpha_g) and not zero(critic_g)
    actor_g, critic_g, alpha_g = grads("entropy_loss")
    assert zero(actor_g) and zero(critic_g) and not zero(alpha_g)
    assert all(p.grad is None for p in algo.critic_target.parameters())


def test_critic_on_repeated_states_equals_the_critic_on_explicit_rows(dataset, rep):
    algo = fitted(dataset, rep)
    batch = sampler(dataset).sample()
    b = batch.obs.shape[0]
    e = torch.randn(b * 4, 3)
    rows = torch.cat([torch.cat([batch.obs, batch.obs.repeat_interleave(3, dim=0)]), e], dim=-1)
    explicit = torch.stack([algo.critic.q1(rows).squeeze(-1), algo.critic.q2(rows).squeeze(-1)])
    torch.testing.assert_close(algo.critic(batch.obs, e, repeats=(1, 3)), explicit, rtol=1e-5, atol=1e-5)
    assert explicit.shape == (2, b * 4)


def test_sampling_from_repeated_actor_outputs_equals_sampling_at_repeated_states(dataset, rep):
    algo = fitted(dataset, rep)
    obs = sampler(dataset).sample().obs
    bound = algo._bound()
    gen_a = torch.Generator().manual_seed(5)
    gen_b = torch.Generator().manual_seed(5)
    e_a, log_pi_a = algo.actor.sample(obs.repeat_interleave(4, dim=0), bound, gen_a)
    mu, log_std = algo.actor(obs)
    e_b, log_pi_b = algo.actor.sample_from(
        mu.repeat_interleave(4, dim=0), log_std.repeat_interleave(4, dim=0), bound, gen_b
    )
    torch.testing.assert_close(e_b, e_a, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(log_pi_b, log_pi_a, rtol=1e-5, atol=1e-5)
    assert e_a[0].ne(e_a[1]).any()  # each repeat has its own noise


def test_same_seed_same_parameters(dataset, rep):
    def run(seed: int) -> dict[str, torch.Tensor]:
        algo = fitted(dataset, rep, seed=seed)
        s = sampler(dataset)
        for _ in range(5):
            algo.update(s.sample())
        return algo.state_dict()

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_global_rng_untouched(dataset, rep):
    algo = fitted(dataset, rep)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    algo.update(sampler(dataset).sample())
    assert torch.equal(torch.rand(3), expected)


def test_per_dimension_bound(dataset, rep):
    algo = build(dataset, rep, latent_bound_per_dim=True, latent_normalise=False)
    assert tuple(algo.latent_bound.shape) == (3,) and not algo.bound_is_set
    e = torch.tensor([[0.5, -2.0, 0.1], [0.1, 0.2, -0.3]])
    assert algo.fit_latent_bound(e) == pytest.approx(2.2)
    np.testing.assert_allclose(algo.latent_bound.numpy(), [0.55, 2.2, 0.33], rtol=1e-6)
    # the actor's log-density under the per-dimension squash, against the change of variables by hand
    obs = torch.as_tensor(dataset.observations[:16], dtype=torch.float32)
    e_BD, log_pi_B = algo.actor.sample(obs, algo.latent_bound, torch.Generator().manual_seed(0))
    assert bool((e_BD.abs() <= algo.latent_bound).all())
    mu_BD, log_std_BD = algo.actor(obs)
    u_BD = torch.atanh((e_BD / algo.latent_bound).double())
    by_hand = (
        torch.distributions.Normal(mu_BD.double(), log_std_BD.exp().double()).log_prob(u_BD)
        - torch.log(algo.latent_bound.double() * (1 - torch.tanh(u_BD) ** 2))
    ).sum(-1)
    np.testing.assert_allclose(log_pi_B.detach().numpy(), by_hand.detach().numpy(), rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="leave latent_bound at 0"):
        build(dataset, rep, latent_bound_per_dim=True, latent_bound=1.0, latent_normalise=False)


def test_per_dimension_bound_trains_acts_inside_its_box_and_reloads(dataset, rep):
    algo = build(dataset, rep, latent_bound_per_dim=True, latent_normalise=False)
    s = sampler(dataset)
    for _ in range(10):  # the first batch fits the bounds
        parts = algo.update(s.sample())
        assert all(math.isfinite(v) for v in parts.values()), parts
    bound = algo.latent_bound.clone()
    assert bound.shape == (3,) and bool((bound > 0).all()) and float(bound.min()) < float(bound.max())
    obs = dataset.observations[:100]
    with torch.no_grad():
        e_hat = algo.actor.mean(torch.as_tensor(obs, dtype=torch.float32), bound)
    assert bool((e_hat.abs() <= bound).all())
    buf = io.BytesIO()
    torch.save(algo.state_dict(), buf)
    buf.seek(0)
    fresh = build(dataset, rep, latent_bound_per_dim=True, latent_normalise=False, seed=3)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(fresh.latent_bound, bound)
    np.testing.assert_array_equal(fresh.act(obs), algo.act(obs))


def test_backup_entropy_off_leaves_the_temperature_out_of_the_critic_target(dataset, rep):
    batch = sampler(dataset).sample()

    def td_loss(backup_entropy, temperature):
        algo = fitted(dataset, rep, backup_entropy=backup_entropy, auto_entropy=False, init_entropy_alpha=temperature)
        return float(algo.losses(batch)["td_loss"].detach())

    # the plain CQL backup r + gamma min Q'(s', e'): the same TD error at any temperature
    assert td_loss(False, 1e-3) == pytest.approx(td_loss(False, 100.0), rel=1e-6)
    # the SAC backup subtracts alpha_ent log pi(e'|s'): the temperature moves the target
    assert abs(td_loss(True, 100.0) - td_loss(True, 1e-3)) > 1.0
    assert td_loss(True, 1e-3) == pytest.approx(td_loss(False, 1e-3), rel=1e-2)
