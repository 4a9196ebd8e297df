"""Discrete IQL (Kostrikov, Nair & Levine, "Offline RL with Implicit Q-Learning", ICLR 2022).

IQL never evaluates Q at an action the data did not log. Three networks, each trained by its own loss
(one step, all from the same parameters; the parameter sets are disjoint and no loss's gradient
reaches another's network, so one backward + one Adam equals three optimizers):

* V(s), a state value, by expectile regression towards min_i Q'_i(s, a_data) of the Polyak-averaged
  target twins (Eq. 5): with expectile tau > 0.5, V approaches the best in-data action's value;
* twin Q_i(s, .) over all actions, by MSE towards r + gamma (1 - done) V(s') (Eq. 6): a SARSA-like
  backup through V instead of a max over Q, so no unseen action is queried;
* a policy pi(a | s) (logits over actions), by advantage-weighted regression (Eq. 7): the logged
  action's -log pi(a | s), weighted by exp(beta (min_i Q'_i(s, a) - V(s))) clipped at ``max_weight``.

Acting: argmax_a of the policy's logits. The loss functions are shared with latent IQL
(:mod:`merlion_core.algos.latent_iql`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from merlion_core.algos.base import OfflineAlgorithm, frozen_copy, polyak_update, seeded
from merlion_core.data.sampler import Batch
from merlion_core.models.obs_features import ObservationFeatures, check_feature_options, feature_mlp


@dataclass(frozen=True)
class DiscreteIQLConfig:
    """Discrete IQL: expectile V, twin Q backed up through V, advantage-weighted policy over actions."""

    expectile: float = 0.7
    """tau (IQL Eq. 5): expectile of V; authors 0.7 (locomotion, kitchen, adroit), 0.9 only for antmaze."""
    beta: float = 3.0
    """beta (IQL Eq. 7): inverse temperature of the advantage weights (authors: 3.0 locomotion, 10.0 antmaze)."""
    max_weight: float = 100.0
    """Clip of the advantage weight exp(beta A) (authors' code: 100)."""
    gamma: float = 0.99
    """gamma: discount factor."""
    lr: float = 3e-4
    """Adam learning rate of Q, V and the policy (authors: 3e-4 for all three)."""
    tau: float = 0.005
    """Polyak rate of the target Q twins after every step (authors' code: 0.005; not the paper's expectile tau)."""
    batch_size: int = 256
    """Transitions per minibatch (authors: 256; read by whoever builds the BatchSampler)."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of each Q, the V and the policy MLP (authors: 256, 256)."""
    fourier_features: int = 32
    """Random Fourier features of the standardised observation fed to every network (0: standardised only)."""
    fourier_scale: float = 3.0
    """Standard deviation of the random Fourier frequencies (models/obs_features.py)."""
    seed: int = 0
    """Seed of the network initialisation."""

    def __post_init__(self) -> None:
        check_iql_options(self.expectile, self.beta, self.max_weight, self.gamma, self.tau, self.lr)
        check_feature_options(self.fourier_features, self.fourier_scale)


def check_iql_options(expectile: float, beta: float, max_weight: float, gamma: float, tau: float, lr: float) -> None:
    """One-line ValueErrors for the options discrete and latent IQL share."""
    if not 0.0 < expectile < 1.0:
        raise ValueError(f"expectile: must be in (0, 1), got {expectile}")
    if beta < 0 or max_weight <= 0:
        raise ValueError(f"beta: must be >= 0 and max_weight > 0, got {beta}, {max_weight}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma: must be in [0, 1], got {gamma}")
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau: must be in (0, 1], got {tau}")
    if lr <= 0:
        raise ValueError(f"lr: must be > 0, got {lr}")


def expectile_loss(u: torch.Tensor, expectile: float) -> torch.Tensor:
    """L2^tau(u) = |tau - 1(u < 0)| u^2, element-wise (IQL Eq. 5's asymmetric squared loss)."""
    return torch.where(u < 0, 1.0 - expectile, expectile) * u.square()


def value_loss(q_target_B: torch.Tensor, v_B: torch.Tensor, expectile: float) -> torch.Tensor:
    """L_V = E[L2^tau(min_i Q'_i(s, a) - V(s))] (IQL Eq. 5); Q' comes without gradients."""
    return expectile_loss(q_target_B - v_B, expectile).mean()


def value_backup(rew_B: torch.Tensor, done_B: torch.Tensor, v_next_B: torch.Tensor, gamma: float) -> torch.Tensor:
    """y = r + gamma (1 - done) V(s'): IQL's Q target (Eq. 6), through V, never a max over Q."""
    return rew_B + gamma * (1.0 - done_B) * v_next_B


def q_loss(q_data_2B: torch.Tensor, y_B: torch.Tensor) -> torch.Tensor:
    """L_Q = sum_i E[(y - Q_i(s, a))^2] over the twins (IQL Eq. 6, as the authors' code sums them)."""
    return (q_data_2B - y_B).square().mean(1).sum()


def awr_weights(q_target_B: torch.Tensor, v_B: torch.Tensor, beta: float, max_weight: float) -> torch.Tensor:
    """w = min(exp(beta (min_i Q'_i(s, a) - V(s))), max_weight): IQL Eq. 7's weights, clipped as the authors'
    code does (detached: the policy loss trains only the policy)."""
    return torch.exp(beta * (q_target_B - v_B).detach()).clamp(max=max_weight)


def awr_policy_loss(weights_B: torch.Tensor, log_pi_B: torch.Tensor) -> torch.Tensor:
    """L_pi = -E[w log pi(a | s)] over the logged actions (IQL Eq. 7)."""
    return -(weights_B * log_pi_B).mean()


class DiscreteTwinQ(nn.Module):
    """Q_1, Q_2(s, .) over every action -> [2, B, A]."""

    def __init__(self, features: ObservationFeatures, hidden: tuple[int, ...], n_actions: int) -> None:
        super().__init__()
        self.q1 = feature_mlp(features, 0, hidden, n_actions)
        self.q2 = feature_mlp(features, 0, hidden, n_actions)

    def forward(self, obs_BS: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.q1(obs_BS), self.q2(obs_BS)])


class DiscreteIQL(OfflineAlgorithm):
    """Acts with argmax_a of the policy's logits."""

    def __init__(self, config: DiscreteIQLConfig, n_actions: int, obs_dim: int, device: str = "auto") -> None:
        super().__init__(config, n_actions, obs_dim, device)
        with seeded(config.seed):
            features = self.observation_features()
            self.q = DiscreteTwinQ(features, tuple(config.hidden), n_actions)
            self.value = feature_mlp(features, 0, tuple(config.hidden), 1)
            self.policy = feature_mlp(features, 0, tuple(config.hidden), n_actions)
        self.q_target = frozen_copy(self.q)
        self.to(self.device)

    def state_value(self, obs_BS: torch.Tensor) -> torch.Tensor:
        """V(s)_B."""
        return self.value(obs_BS).squeeze(-1)

    def target_q_data(self, obs_BS: torch.Tensor, act_B: torch.Tensor) -> torch.Tensor:
        """min_i Q'_i(s, a)_B of the target twins at the logged actions (no gradients)."""
        with torch.no_grad():
            q_2BA = self.q_target(obs_BS)
            return q_2BA.gather(2, act_B.view(1, -1, 1).expand(2, -1, 1)).squeeze(2).min(0).values

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg, b = self.config, batch.obs.shape[0]
        q_target_B = self.target_q_data(batch.obs, batch.act)
        v_B, v_next_B = self.state_value(torch.cat([batch.obs, batch.next_obs])).split([b, b])
        y_B = value_backup(batch.rew, batch.done, v_next_B.detach(), cfg.gamma)
        v_loss = value_loss(q_target_B, v_B, cfg.expectile)
        q_data_2B = self.q(batch.obs).gather(2, batch.act.view(1, -1, 1).expand(2, -1, 1)).squeeze(2)
        critic_loss = q_loss(q_data_2B, y_B)
        weights_B = awr_weights(q_target_B, v_B, cfg.beta, cfg.max_weight)
        log_pi_B = F.log_softmax(self.policy(batch.obs), dim=1).gather(1, batch.act[:, None]).squeeze(1)
        policy_loss = awr_policy_loss(weights_B, log_pi_B)
        return {
            "loss": v_loss + critic_loss + policy_loss,
            "value_loss": v_loss,
            "q_loss": critic_loss,
            "policy_loss": policy_loss,
            "q_data": q_data_2B.detach().mean(),
            "v_data": v_B.detach().mean(),
            "awr_weight": weights_B.mean(),
        }

    def after_step(self) -> None:
        polyak_update(self.q_target, self.q, self.config.tau)

    def greedy(self, obs_BS: torch.Tensor) -> torch.Tensor:
        return self.policy(obs_BS).argmax(1)
