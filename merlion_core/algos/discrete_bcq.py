"""Discrete BCQ (Fujimoto et al. 2019b, public code): Q-learning restricted to likely actions.

An imitation head pi(a | s) (logits, trained by NLL) marks the actions with
pi(a | s) / max_a' pi(a' | s) <= threshold as forbidden, both when acting and in the target:
y = r + gamma (1 - done) Q'(s', argmax_{a' allowed} Q(s', a')). Loss = smooth-L1 TD
+ NLL(imitation) + 1e-2 * mean(logits^2); the target network is Polyak-averaged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from merlion_core.algos.base import (
    OfflineAlgorithm,
    double_dqn_target,
    frozen_copy,
    masked_argmax,
    polyak_update,
    seeded,
)
from merlion_core.data.sampler import Batch
from merlion_core.models.obs_features import ObservationFeatures, check_feature_options, feature_mlp


@dataclass(frozen=True)
class DiscreteBCQConfig:
    """Discrete BCQ with the paper's non-Atari settings."""

    threshold: float = 0.3
    """tau (paper's BCQ threshold): actions with pi(a|s) / max pi <= threshold are masked (best 0.3)."""
    gamma: float = 0.99
    """gamma: discount factor."""
    lr: float = 3e-4
    """Adam learning rate (paper, non-Atari: 3e-4)."""
    tau: float = 0.005
    """Polyak rate of the target network after every step (paper, non-Atari: 0.005)."""
    logit_reg: float = 1e-2
    """Weight of mean(logits^2) on the imitation head (paper: 1e-2)."""
    batch_size: int = 64
    """Transitions per minibatch (paper, non-Atari: 64; read by whoever builds the BatchSampler)."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of the Q head and of the imitation head MLPs (paper: 256, 256)."""
    fourier_features: int = 32
    """Random Fourier features of the standardised observation fed to every network (0: standardised only)."""
    fourier_scale: float = 3.0
    """Standard deviation of the random Fourier frequencies (models/obs_features.py)."""
    seed: int = 0
    """Seed of the network initialisation."""

    def __post_init__(self) -> None:
        check_feature_options(self.fourier_features, self.fourier_scale)
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold: must be in [0, 1), got {self.threshold}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma: must be in [0, 1], got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau: must be in (0, 1], got {self.tau}")
        if self.lr <= 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")


def bcq_allowed(log_pi_BA: torch.Tensor, threshold: float) -> torch.Tensor:
    """bool[B, A]: pi(a | s) / max_a' pi(a' | s) > threshold (the argmax action is always allowed)."""
    return (log_pi_BA - log_pi_BA.max(dim=1, keepdim=True).values).exp() > threshold


class QImitationNet(nn.Module):
    """Two heads on the state: Q(s, .) and the imitation logits of pi(. | s)."""

    def __init__(self, features: ObservationFeatures, hidden: tuple[int, ...], n_actions: int) -> None:
        super().__init__()
        self.q = feature_mlp(features, 0, hidden, n_actions)
        self.imitation = feature_mlp(features, 0, hidden, n_actions)

    def forward(self, obs_BS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q_BA, logits_BA)."""
        return self.q(obs_BS), self.imitation(obs_BS)


class DiscreteBCQ(OfflineAlgorithm):
    """Acts with the argmax of Q over the actions the imitation head allows."""

    def __init__(self, config: DiscreteBCQConfig, n_actions: int, obs_dim: int, device: str = "auto") -> None:
        super().__init__(config, n_actions, obs_dim, device)
        with seeded(config.seed):
            self.net = QImitationNet(self.observation_features(), config.hidden, n_actions)
        self.net_target = frozen_copy(self.net)
        self.to(self.device)

    @torch.no_grad()
    def td_target(self, batch: Batch) -> torch.Tensor:
        """y_B = r + gamma (1 - done) Q'(s', argmax_{a' allowed} Q(s', a'))."""
        q_next_BA, logits_next_BA = self.net(batch.next_obs)
        allowed_BA = bcq_allowed(F.log_softmax(logits_next_BA, dim=1), self.config.threshold)
        q_next_target_BA = self.net_target.q(batch.next_obs)
        return double_dqn_target(q_next_BA, q_next_target_BA, batch.rew, batch.done, self.config.gamma, allowed_BA)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        q_BA, logits_BA = self.net(batch.obs)
        q_data_B = q_BA.gather(1, batch.act[:, None]).squeeze(1)
        td_loss = F.smooth_l1_loss(q_data_B, self.td_target(batch))
        imitation_loss = F.nll_loss(F.log_softmax(logits_BA, dim=1), batch.act)
        logit_penalty = logits_BA.pow(2).mean()
        loss = td_loss + imitation_loss + self.config.logit_reg * logit_penalty
        return {
            "loss": loss,
            "td_loss": td_loss,
            "imitation_loss": imitation_loss,
            "logit_penalty": logit_penalty,
            "q_data": q_data_B.mean(),
        }

    def after_step(self) -> None:
        polyak_update(self.net_target, self.net, self.config.tau)

    def greedy(self, obs_BS: torch.Tensor) -> torch.Tensor:
        q_BA, logits_BA = self.net(obs_BS)
        return masked_argmax(q_BA, bcq_allowed(F.log_softmax(logits_BA, dim=1), self.config.threshold))
