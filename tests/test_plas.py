"""PLAS's pieces by hand: the CVAE loss, the soft clipped double Q, and where the actor's gradient goes."""

from __future__ import annotations

import math

import numpy as np
import torch

from merlion_core.algos.plas import PLAS, PLASConfig, cvae_loss, soft_clipped_double_q
from merlion_core.data.sampler import Batch


def test_cvae_loss_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # p = (1/4, 3/4)
    act = torch.tensor([1])
    mean = torch.tensor([[1.0, 0.0]])
    log_std = torch.tensor([[0.0, math.log(2.0)]])
    loss, reconstruction, kl = cvae_loss(logits, act, mean, log_std, kl_weight=0.5)
    # CE = -log(3/4); KL = 0.5 * [(1 + 1 - 1 - 0) + (0 + 4 - 1 - 2 log 2)]
    expected_kl = 0.5 * (1.0 + 3.0 - 2 * math.log(2.0))
    assert math.isclose(float(reconstruction), -math.log(0.75), rel_tol=1e-6)
    assert math.isclose(float(kl), expected_kl, rel_tol=1e-6)
    assert math.isclose(float(loss), -math.log(0.75) + 0.5 * expected_kl, rel_tol=1e-6)


def test_soft_clipped_double_q_by_hand():
    q1, q2 = torch.tensor([1.0, 4.0]), torch.tensor([3.0, 2.0])
    np.testing.assert_allclose(soft_clipped_double_q(q1, q2, 0.75).numpy(), [1.5, 2.5])


def test_actor_gradient_reaches_only_the_actor():
    torch.manual_seed(0)
    config = PLASConfig(hidden_vae=(16, 16), hidden_actor=(16,), hidden_critic=(16,))
    agent = PLAS(config, n_actions=5, obs_dim=3, device="cpu")
    batch = Batch(
        obs=torch.rand(8, 3),
        act=torch.randint(0, 5, (8,)),
        rew=torch.rand(8),
        next_obs=torch.rand(8, 3),
        done=torch.zeros(8),
    )
    parts = agent.losses(batch)
    agent.zero_grad()
    parts["actor_loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.actor.parameters())
    for module in (agent.cvae, agent.critic1, agent.critic2):
        assert all(p.grad is None or float(p.grad.abs().sum()) == 0.0 for p in module.parameters())


def test_warmup_trains_only_the_cvae():
    config = PLASConfig(hidden_vae=(16, 16), hidden_actor=(16,), hidden_critic=(16,), vae_warmup=2)
    agent = PLAS(config, n_actions=5, obs_dim=3, device="cpu")
    batch = Batch(
        obs=torch.rand(8, 3),
        act=torch.randint(0, 5, (8,)),
        rew=torch.rand(8),
        next_obs=torch.rand(8, 3),
        done=torch.zeros(8),
    )
    actor_before = [p.clone() for p in agent.actor.parameters()]
    stats = agent.update(batch)
    assert "critic_loss" not in stats
    assert all(torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters(), strict=True))
    agent.update(batch)
    stats = agent.update(batch)  # third step: past the warm-up
    assert "critic_loss" in stats
    assert any(not torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters(), strict=True))


def test_warmup_counter_survives_loading_weights():
    # the step counter is mirrored on the host (no GPU sync per step); loading weights must refresh it
    config = PLASConfig(hidden_vae=(16, 16), hidden_actor=(16,), hidden_critic=(16,), vae_warmup=2)
    batch = Batch(
        obs=torch.rand(8, 3),
        act=torch.randint(0, 5, (8,)),
        rew=torch.rand(8),
        next_obs=torch.rand(8, 3),
        done=torch.zeros(8),
    )
    trained = PLAS(config, n_actions=5, obs_dim=3, device="cpu")
    trained.update(batch)
    trained.update(batch)
    loaded = PLAS(config, n_actions=5, obs_dim=3, device="cpu")
    loaded.load_state_dict(trained.state_dict())
    assert int(loaded.step) == 2 and "critic_loss" in loaded.update(batch)  # past the warm-up, as `trained`
