"""MERLION: each loss against a hand computation, stop-gradients, shapes, warm start, artifacts."""

import math

import pytest
import torch
import torch.nn.functional as F

from merlion_core.representation import losses
from merlion_core.representation.merlion import (
    MerlionConfig,
    build,
    config_for_env,
    merlion_losses,
    module_parameters,
)


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


def test_w2_of_diagonal_gaussians_matches_the_formula():
    mu_i, std_i = t([0.0, 0.0]), t([1.0, 2.0])
    mu_j, std_j = t([3.0, 4.0]), t([2.0, 2.0])
    # W2^2 = ||mu_i - mu_j||^2 + ||std_i - std_j||^2 = 25 + 1
    assert losses.w2_diagonal_gaussians(mu_i, std_i, mu_j, std_j).item() == pytest.approx(math.sqrt(26))
    # and against an independent route: W2 of 1-D Gaussians per dimension, summed in quadrature
    per_dim = [(0 - 3) ** 2 + (1 - 2) ** 2, (0 - 4) ** 2 + (2 - 2) ** 2]
    assert losses.w2_diagonal_gaussians(mu_i, std_i, mu_j, std_j).item() == pytest.approx(math.sqrt(sum(per_dim)))


def test_ood_indicator_uses_relative_probability_and_tau():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))[None].repeat(4, 1)
    actions = torch.arange(4)
    # relative probabilities 1, 0.6, 0.3, 0.1: tau = 0.3 flags 0.3 (<=) and 0.1
    assert losses.ood_indicator(logits, actions, 0.3).tolist() == [0.0, 0.0, 1.0, 1.0]
    assert losses.ood_indicator(logits, actions, 0.05).tolist() == [0.0, 0.0, 0.0, 0.0]


def test_pseudometric_target_by_hand():
    d = losses.pseudometric_target(t(1.0), t(-0.5), t(2.0), t(1.0), gamma=0.9, p=0.3)
    assert d.item() == pytest.approx(1.5 + 0.9 * 2.0 + 0.3)


def test_encoder_loss_by_hand_and_target_is_constant():
    e_i = torch.tensor([[0.0, 0.0], [1.0, 1.0]], requires_grad=True)
    e_j = torch.tensor([[1.0, -2.0], [1.0, 1.0]])
    d_hat = torch.tensor([1.0, 0.5], requires_grad=True)
    loss = losses.encoder_loss(e_i, e_j, d_hat)
    assert loss.item() == pytest.approx(((3 - 1) ** 2 + (0 - 0.5) ** 2) / 2)
    loss.backward()
    assert d_hat.grad is None  # the target is detached
    assert e_i.grad is not None


def test_reward_and_behaviour_losses_by_hand():
    assert losses.reward_loss(t(1.0, 2.0), t(0.0, 4.0)).item() == pytest.approx((1 + 4) / 2)
    logits = torch.log(t(0.5, 0.25, 0.25))[None]
    assert losses.behaviour_loss(logits, torch.tensor([1])).item() == pytest.approx(-math.log(0.25))


def test_fused_behaviour_loss_and_max_logit_by_hand_and_against_cross_entropy():
    # by hand: G = (0.5, 0.25, 0.25) and (0.1, 0.2, 0.7), targets 1 and 2, logits shifted by 3 and -1
    logits = torch.stack([torch.log(t(0.5, 0.25, 0.25)) + 3.0, torch.log(t(0.1, 0.2, 0.7)) - 1.0])
    loss, max_logit = losses.behaviour_loss_and_max_logit(logits, torch.tensor([1, 2]))
    assert loss.item() == pytest.approx((-math.log(0.25) - math.log(0.7)) / 2, rel=1e-6)
    assert max_logit.tolist() == pytest.approx([math.log(0.5) + 3.0, math.log(0.7) - 1.0])
    # value and gradient equal torch's cross-entropy (and its max) on a wide random batch
    gen = torch.Generator().manual_seed(0)
    wide = (5 * torch.randn(16, 300, generator=gen, dtype=torch.float64)).requires_grad_()
    act = torch.randint(0, 300, (16,), generator=gen)
    act[1] = act[0]  # a repeated target: each row's own one-hot
    ours, ours_max = losses.behaviour_loss_and_max_logit(wide, act)
    (2.5 * ours).backward()
    grad_ours = wide.grad.clone()
    wide.grad = None
    (2.5 * F.cross_entropy(wide, act)).backward()
    torch.testing.assert_close(ours, F.cross_entropy(wide, act))
    torch.testing.assert_close(grad_ours, wide.grad)
    torch.testing.assert_close(ours_max, wide.detach().max(dim=1).values)


def test_transition_loss_equals_torch_gaussian_nll_in_value_and_gradient():
    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(6, 3, generator=gen, requires_grad=True)
    std = torch.rand(6, 3, generator=gen) + 0.1
    std[0, 0] = 1e-4  # variance below eps: clamped in value, gradient passes as in torch
    std.requires_grad_(True)
    target = torch.randn(6, 3, generator=gen)
    ours = losses.transition_loss(mu, std, target)
    grads = torch.autograd.grad(ours, (mu, std))
    theirs = torch.nn.functional.gaussian_nll_loss(mu, target, std**2, full=False, eps=1e-6)
    expected = torch.autograd.grad(theirs, (mu, std))
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    for a, b in zip(grads, expected, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_transition_loss_is_gaussian_nll():
    mu, std, target = t(0.0, 1.0)[None], t(1.0, 2.0)[None], t(1.0, 1.0)[None]
    expected = 0.5 * ((math.log(1.0) + 1.0 / 1.0) + (math.log(4.0) + 0.0 / 4.0)) / 2
    assert losses.transition_loss(mu, std, target).item() == pytest.approx(expected, rel=1e-5)


@pytest.fixture(scope="module")
def small_rep():
    return build(MerlionConfig(dim=3, hidden=32, action_embed_dim=8), n_actions=20, obs_dim=3)


def test_shapes_and_embed_all_matches_embed(small_rep):
    obs = torch.rand(5, 3)
    all_e = small_rep.embed_all(obs, chunk=7)  # chunks that do not divide 20
    assert all_e.shape == (5, 20, 3)
    one = small_rep.embed(obs.repeat_interleave(20, 0), torch.arange(20).repeat(5)).reshape(5, 20, 3)
    assert torch.allclose(all_e, one, atol=1e-6)


def test_gradients_reach_exactly_the_parameters_each_loss_trains(small_rep):
    g = torch.Generator().manual_seed(0)
    obs, next_obs = torch.rand(16, 3, generator=g), torch.rand(16, 3, generator=g)
    act_i, act_j = torch.randint(0, 20, (16,), generator=g), torch.randint(0, 20, (16,), generator=g)
    rew = torch.rand(16, generator=g)
    parts = module_parameters(small_rep)
    expect = {  # which models each loss must train (Alg. 2) - and no others
        "encoder_loss": {"encoder"},
        "transition_loss": {"encoder", "transition_model"},
        "reward_loss": {"encoder", "reward_model"},
        "behaviour_loss": {"behaviour_model"},
    }
    for name, trained in expect.items():
        small_rep.zero_grad(set_to_none=True)
        terms = merlion_losses(small_rep, obs, act_i, rew, next_obs, act_j, small_rep.config)
        terms[name].backward()
        for model, params in parts.items():
            has_grad = any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
            assert has_grad == (model in trained), f"{name} -> {model}: grad {has_grad}"


def test_same_seed_same_weights_different_seed_different():
    a = build(MerlionConfig(seed=1, hidden=16), 10, 3).state_dict()
    b = build(MerlionConfig(seed=1, hidden=16), 10, 3).state_dict()
    c = build(MerlionConfig(seed=2, hidden=16), 10, 3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_paper_env_defaults():
    assert (config_for_env("merlion/Maze-v0").dim, config_for_env("merlion/Maze-v0").p) == (2, 0.01)
    assert config_for_env("merlion/Maze-v0").reward_scale == 0.01
    assert (config_for_env("merlion/MultiStepMaze-v0").dim, config_for_env("merlion/MultiStepMaze-v0").p) == (2, 0.1)
    assert config_for_env(None, p=0.5).p == 0.5
    cfg = MerlionConfig()
    assert (cfg.batch_size, cfg.steps, cfg.tau) == (128, 10_000, 0.3)


def test_model_reward_target_replaces_the_sampled_reward_in_eq7():
    import dataclasses

    rep = build(MerlionConfig(seed=0, hidden=16, dim=3), 20, 3)
    g = torch.Generator().manual_seed(1)
    obs, next_obs = torch.rand(8, 3, generator=g), torch.rand(8, 3, generator=g)
    act_i, act_j = torch.randint(0, 20, (8,), generator=g), torch.randint(0, 20, (8,), generator=g)
    config = dataclasses.replace(rep.config, reward_target="model", p=0.0, gamma=0.0)  # d_hat = reward term only
    with torch.no_grad():
        r_hat_i = rep.reward_model(obs, rep.encoder(obs, act_i))
        r_hat_j = rep.reward_model(obs, rep.encoder(obs, act_j))
        # the sampled rewards are pure noise around R_hat: with reward_target="model" d_hat ignores them
        for rewards in (torch.rand(8, generator=g) * 100, torch.zeros(8)):
            d_hat = merlion_losses(rep, obs, act_i, rewards, next_obs, act_j, config)["d_hat_mean"]
            assert float(d_hat) == pytest.approx(float((r_hat_i - r_hat_j).abs().mean()), rel=1e-5)
        sampled = dataclasses.replace(config, reward_target="sampled")
        rewards = torch.rand(8, generator=g)
        d_hat = merlion_losses(rep, obs, act_i, rewards, next_obs, act_j, sampled)["d_hat_mean"]
        assert float(d_hat) == pytest.approx(float((rewards - r_hat_j).abs().mean()), rel=1e-5)
    with pytest.raises(ValueError, match="reward_target"):
        MerlionConfig(reward_target="mean")
