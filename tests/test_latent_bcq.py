"""Latent continuous BCQ (MERLION-BCQ): the pure pieces by hand, training, acting, checkpoints, gradients."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from latent_support import DIM, dataset, one_torch_thread, rep  # noqa: F401  (shared fixtures)

from merlion_core.algos.latent_bcq import LatentBCQ, LatentBCQConfig, bcq_target, perturb, soft_clipped_double_q, vae_kl
from merlion_core.config import field_docs
from merlion_core.data.sampler import BatchSampler

SMALL = {
    "hidden_vae": (32, 32),
    "hidden_actor": (32, 32),
    "hidden_critic": (32, 32),
    "batch_size": 64,
    "n_act_samples": 20,
}


def build(dataset, rep, **overrides) -> LatentBCQ:
    config = LatentBCQConfig(**{**SMALL, **overrides})
    return LatentBCQ(config, dataset.n_actions, dataset.obs_dim, device="cpu", representation=rep)


def sampler(dataset, seed: int = 0) -> BatchSampler:
    return BatchSampler(dataset, 64, seed=seed, device="cpu")


def fitted(dataset, rep, **overrides) -> LatentBCQ:
    algo = build(dataset, rep, **overrides)
    obs = torch.as_tensor(dataset.observations[:1000], dtype=torch.float32)
    act = torch.as_tensor(dataset.actions[:1000], dtype=torch.int64)
    algo.fit_latent_bound(algo.embed(obs, act))
    return algo


def test_config_fields_documented():
    docs = field_docs(LatentBCQConfig)
    c = LatentBCQConfig()
    assert (c.lr, c.batch_size, c.gamma, c.tau) == (1e-3, 100, 0.99, 5e-3)
    assert (c.hidden_vae, c.hidden_actor, c.hidden_critic) == ((750, 750), (400, 300), (400, 300))
    assert (c.n_target_samples, c.n_act_samples, c.phi, c.lam, c.kl_weight, c.z_clip) == (10, 100, 0.05, 0.75, 0.5, 0.5)
    assert (c.latent_bound, c.vae_latent_dim) == (0.0, None)
    assert all(docs.get(name) for name in c.__dataclass_fields__), docs
    for bad in (
        {"lam": 1.5},
        {"tau": 0.0},
        {"n_act_samples": 0},
        {"phi": -0.1},
        {"latent_bound": -1.0},
        {"hidden_vae": (0,)},
    ):
        with pytest.raises(ValueError):
            LatentBCQConfig(**bad)


def test_pure_pieces_by_hand():
    q1, q2 = torch.tensor([1.0, 5.0, -2.0]), torch.tensor([3.0, 4.0, -2.0])
    expected = [0.75 * 1 + 0.25 * 3, 0.75 * 4 + 0.25 * 5, -2.0]
    assert soft_clipped_double_q(q1, q2, 0.75).tolist() == pytest.approx(expected)
    assert torch.equal(soft_clipped_double_q(q1, q2, 1.0), torch.minimum(q1, q2))
    # target: [2, B=2, N=2]; max over samples of the soft clip
    q_next = torch.tensor([[[1.0, 2.0], [0.0, -1.0]], [[3.0, 0.0], [4.0, -5.0]]])
    v = [max(0.75 * 1 + 0.25 * 3, 0.75 * 0 + 0.25 * 2), max(0.75 * 0 + 0.25 * 4, 0.75 * -5 + 0.25 * -1)]
    y = bcq_target(q_next, torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0]), 0.9, 0.75)
    assert y.tolist() == pytest.approx([1.0 + 0.9 * v[0], 2.0])
    # KL of N(m, s^2) against N(0, 1): 0.5 (m^2 + s^2 - 1) - log s
    m, log_s = torch.tensor([[0.3, -1.0]]), torch.tensor([[0.2, -0.5]])
    kl = [0.5 * (float(m[0, i]) ** 2 + math.exp(2 * float(log_s[0, i])) - 1) - float(log_s[0, i]) for i in range(2)]
    assert float(vae_kl(m, log_s)) == pytest.approx(sum(kl) / 2, rel=1e-6)
    assert float(vae_kl(torch.zeros(4, 2), torch.zeros(4, 2))) == 0.0
    # perturbation: at most phi B per dimension, output clipped to [-B, B]
    bound = torch.tensor(2.0)
    out = perturb(torch.tensor([[0.0, 1.95, -2.0]]), torch.tensor([[100.0, 100.0, -100.0]]), 0.05, bound)
    assert out[0].tolist() == pytest.approx([0.1, 2.0, -2.0])


def test_needs_representation_and_bound(dataset, rep):
    with pytest.raises(ValueError, match="representation"):
        LatentBCQ(LatentBCQConfig(), dataset.n_actions, dataset.obs_dim, device="cpu")
    algo = build(dataset, rep)
    with pytest.raises(RuntimeError, match="latent_bound"):
        algo.act(dataset.observations[:4])
    algo.losses(sampler(dataset).sample())  # the first batch derives B when it was not fitted
    assert float(algo.latent_bound) > 0
    assert algo.vae.z_dim == 2 * DIM
    assert "latent_bound" in algo.state_dict()
    assert not any(k.startswith("representation") for k in algo.state_dict())


def test_training_changes_every_parameter(dataset, rep):
    algo = fitted(dataset, rep)
    before = {k: p.detach().clone() for k, p in algo.named_parameters()}
    targets = {"actor_target": algo.actor_target, "critic_target": algo.critic_target}
    targets_before = {
        n: {k: v.clone() for k, v in m.named_parameters()} for n, m in targets.items()
    }  # not fixed buffers
    s = sampler(dataset)
    for _ in range(20):
        parts = algo.update(s.sample())
        assert all(math.isfinite(v) for v in parts.values()), parts
    assert parts["loss"] == pytest.approx(parts["vae_loss"] + parts["critic_loss"] + parts["actor_loss"], rel=1e-4)
    assert parts["vae_loss"] == pytest.approx(parts["recon_loss"] + 0.5 * parts["kl"], rel=1e-4)
    unchanged = [k for k, p in algo.named_parameters() if torch.equal(p, before[k])]
    assert not unchanged
    trainable = {k.split(".")[0] for k, p in algo.named_parameters() if p.requires_grad}
    assert trainable == {"vae", "actor", "critic"}  # the targets are frozen copies
    for n, m in targets.items():
        assert all(not torch.equal(v, targets_before[n][k]) for k, v in m.named_parameters()), n


def test_act_returns_valid_ids_at_the_nearest_latent(dataset, rep):
    algo = fitted(dataset, rep)
    s = sampler(dataset)
    for _ in range(3):
        algo.update(s.sample())
    obs = dataset.observations[:50]
    ids = algo.act(obs)
    assert ids.dtype == np.int64 and ids.shape == (50,)
    assert ids.min() >= 0 and ids.max() < dataset.n_actions
    with torch.no_grad():
        x_hat = algo.select_latent(torch.as_tensor(obs, dtype=torch.float32))
        assert float(x_hat.abs().max()) <= float(algo.latent_bound) == 1.0
        e_hat = algo.latent_center + algo.latent_scale * x_hat  # back to the representation's space
        expected = (e_hat[:, None, :] - rep.table[None]).abs().sum(-1).argmin(1)
    np.testing.assert_array_equal(ids, expected.numpy())
    # a state's action does not depend on the rest of its batch
    np.testing.assert_array_equal(algo.act(obs[7:9]), ids[7:9])


def test_zero_perturbation_acts_on_the_best_vae_sample_by_hand(dataset, rep):
    algo = fitted(dataset, rep, phi=0.0)
    obs = torch.as_tensor(dataset.observations[:10], dtype=torch.float32)
    bound = algo.latent_bound
    with torch.no_grad():
        z = algo.act_noise()
        assert z.shape == (20, 2 * DIM) and float(z.abs().max()) <= 0.5
        ids = []
        for i in range(obs.shape[0]):
            s_rep = obs[i : i + 1].expand(20, -1)
            e = algo.vae.decode(s_rep, z, bound)  # phi = 0: the actor leaves the sample as it is
            q1 = algo.critic.q1(torch.cat([s_rep, e], dim=-1)).squeeze(-1)
            best = algo.latent_center + algo.latent_scale * e[int(q1.argmax())]
            ids.append(int((best[None] - rep.table).abs().sum(-1).argmin()))
    np.testing.assert_array_equal(algo.act(obs.numpy()), np.array(ids))


def test_candidates_equal_the_networks_on_explicit_rows(dataset, rep):
    """Each state's part of the decoder, actor and critic runs once per state; same as full rows."""
    algo = fitted(dataset, rep)
    s = sampler(dataset)
    for _ in range(3):
        algo.update(s.sample())
    obs = torch.as_tensor(dataset.observations[:6], dtype=torch.float32)
    bound = algo.latent_bound
    with torch.no_grad():
        obs_rows = obs.repeat_interleave(20, dim=0)
        z = algo.act_noise().repeat(6, 1)
        decoded = bound * torch.tanh(algo.vae.decoder(torch.cat([obs_rows, z], dim=-1)))
        e = perturb(decoded, algo.actor.net(torch.cat([obs_rows, decoded], dim=-1)), algo.config.phi, bound)
        q1 = algo.critic.q1(torch.cat([obs_rows, e], dim=-1)).squeeze(-1)
        e_got, q1_got = algo.candidates(obs)
    torch.testing.assert_close(e_got, e.view(6, 20, DIM), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(q1_got, q1.view(6, 20), rtol=1e-5, atol=1e-5)
    assert e_got[0].std(0).gt(0).all()  # 20 different candidates per state


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


def test_each_loss_trains_only_its_own_parameters(dataset, rep):
    algo = fitted(dataset, rep)
    batch = sampler(dataset).sample()
    parts = {"vae": algo.vae, "actor": algo.actor, "critic": algo.critic}

    def nonzero(part: str) -> set[str]:
        algo.zero_grad(set_to_none=True)
        algo.losses(batch)[part].backward()
        assert all(p.grad is None for p in algo.actor_target.parameters())
        assert all(p.grad is None for p in algo.critic_target.parameters())
        return {
            name for name, m in parts.items() if any(p.grad is not None and p.grad.abs().any() for p in m.parameters())
        }

    assert nonzero("vae_loss") == {"vae"}
    assert nonzero("critic_loss") == {"critic"}
    assert nonzero("actor_loss") == {"actor"}


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
    algo.act(dataset.observations[:5])
    assert torch.equal(torch.rand(3), expected)


def test_per_dimension_bound_keeps_every_latent_inside_its_box(dataset, rep):
    algo = build(dataset, rep, latent_bound_per_dim=True, latent_normalise=False)
    s = sampler(dataset)
    for _ in range(5):  # the first batch fits B_d = 1.1 max |e_d|
        parts = algo.update(s.sample())
        assert all(math.isfinite(v) for v in parts.values()), parts
    bound = algo.latent_bound
    assert bound.shape == (DIM,) and float(bound.min()) < float(bound.max())
    obs = torch.as_tensor(dataset.observations[:50], dtype=torch.float32)
    with torch.no_grad():
        e_hat = algo.select_latent(obs)
        # a perturbation of 2 B_d from 0 is clipped to B_d in each dimension, either way
        up, down = (perturb(torch.zeros(4, DIM), torch.full((4, DIM), sign * 10.0), 2.0, bound) for sign in (1, -1))
    assert bool((e_hat.abs() <= bound).all())
    assert torch.allclose(up, bound.expand_as(up)) and torch.allclose(down, -bound.expand_as(down))


class TableWithBehaviour(torch.nn.Module):
    """A table phi(a; s) = table[a] with a linear behaviour model G(a|s) = softmax(W s)."""

    method = "table-with-g"

    def __init__(self, table: torch.Tensor, obs_dim: int) -> None:
        super().__init__()
        self.n_actions, self.obs_dim, self.dim = table.shape[0], obs_dim, table.shape[1]
        self.register_buffer("table", table)
        self.behaviour_model = torch.nn.Linear(obs_dim, table.shape[0])

    def embed(self, obs_BS, act_B):
        return self.table[act_B]

    def embed_chunk(self, obs_BS, actions_C):
        return self.table[actions_C][None].expand(obs_BS.shape[0], -1, -1)


def test_behaviour_candidates_act_on_the_critics_best_real_action_that_g_allows(dataset, rep):
    from merlion_core.algos.latent_bcq import bcq_target

    with pytest.raises(ValueError, match="behaviour model"):
        build(dataset, rep, candidates="behaviour")
    with_g = TableWithBehaviour(rep.table, dataset.obs_dim)
    with torch.no_grad():
        with_g.behaviour_model.weight.mul_(20.0)  # a peaked G: few actions pass tau
    algo = fitted(dataset, with_g, candidates="behaviour", n_act_samples=8, behaviour_tau=0.3)
    s = sampler(dataset)
    for _ in range(3):
        parts = algo.update(s.sample())
    assert math.isfinite(parts["loss"])
    obs = torch.as_tensor(dataset.observations[:20], dtype=torch.float32)
    with torch.no_grad():
        logits = with_g.behaviour_model(obs)
        rel = torch.exp(logits - logits.max(1, keepdim=True).values)
        q1 = algo.critic.q1(
            torch.cat([obs[:, None, :].expand(-1, 64, -1), algo.to_actor_space(rep.table)[None].expand(20, -1, -1)], -1)
        ).squeeze(-1)
        top8 = logits.topk(8, dim=1).indices
        allowed = torch.zeros_like(rel, dtype=torch.bool).scatter(1, top8, True) & (rel > 0.3)
        expected = q1.masked_fill(~allowed, -torch.inf).argmax(1)
    acted = algo.act(obs.numpy())
    np.testing.assert_array_equal(acted, expected.numpy())
    assert allowed.sum(1).min() >= 1 and (allowed.sum(1) < 8).any()  # the filter binds at some states
    # the target's max runs over the allowed candidates only
    q = torch.tensor([[[1.0, 9.0]], [[3.0, 9.0]]])  # [2 critics, 1 state, 2 candidates]
    y = bcq_target(q, torch.zeros(1), torch.zeros(1), 0.5, 0.75, torch.tensor([[True, False]]))
    assert float(y) == pytest.approx(0.5 * (0.75 * 1.0 + 0.25 * 3.0))
