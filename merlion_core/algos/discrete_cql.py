"""Discrete CQL (Kumar et al. 2020; as d3rlpy's DiscreteCQL): Double DQN + the CQL(H) regulariser.

loss = Huber(Q(s, a), y) + alpha * E_s[logsumexp_a Q(s, a) - Q(s, a_data)], with the Double DQN
target y = r + gamma (1 - done) Q'(s', argmax_a' Q(s', a')), Q' a Polyak-averaged target network.
The log-sum-exp runs over all actions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from merlion_core.algos.base import OfflineAlgorithm, double_dqn_target, frozen_copy, polyak_update, seeded
from merlion_core.data.sampler import Batch
from merlion_core.models.obs_features import check_feature_options, feature_mlp


@dataclass(frozen=True)
class DiscreteCQLConfig:
    """Discrete CQL: Double DQN (Huber TD, Polyak target) plus alpha times the CQL(H) term."""

    alpha: float = 0.5
    """alpha: weight of the CQL(H) term (paper: searched 0.1..0.9, best 0.5; 0.3 dialogue)."""
    gamma: float = 0.99
    """gamma: discount factor."""
    lr: float = 3e-4
    """Adam learning rate (the non-Atari setting of discrete BCQ; d3rlpy's Atari setting is 6.25e-5)."""
    tau: float = 0.005
    """tau: Polyak rate of the target network after every step (instead of d3rlpy's hard copy every 8000)."""
    batch_size: int = 64
    """Transitions per minibatch (read by whoever builds the BatchSampler)."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of the Q network MLP."""
    fourier_features: int = 32
    """Random Fourier features of the standardised observation fed to every network (0: standardised only)."""
    fourier_scale: float = 3.0
    """Standard deviation of the random Fourier frequencies (models/obs_features.py)."""
    seed: int = 0
    """Seed of the network initialisation."""

    def __post_init__(self) -> None:
        check_feature_options(self.fourier_features, self.fourier_scale)
        if self.alpha < 0:
            raise ValueError(f"alpha: must be >= 0, got {self.alpha}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma: must be in [0, 1], got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau: must be in (0, 1], got {self.tau}")
        if self.lr <= 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")


def cql_regulariser(q_BA: torch.Tensor, act_B: torch.Tensor) -> torch.Tensor:
    """E_s[logsumexp_a Q(s, a) - Q(s, a_data)]: pushes Q down everywhere and up on the logged action."""
    q_data_B = q_BA.gather(1, act_B[:, None]).squeeze(1)
    return (torch.logsumexp(q_BA, dim=1) - q_data_B).mean()


class DiscreteCQL(OfflineAlgorithm):
    """Acts with argmax_a Q(s, a)."""

    def __init__(self, config: DiscreteCQLConfig, n_actions: int, obs_dim: int, device: str = "auto") -> None:
        super().__init__(config, n_actions, obs_dim, device)
        with seeded(config.seed):
            self.q = feature_mlp(self.observation_features(), 0, config.hidden, n_actions)
        self.q_target = frozen_copy(self.q)
        self.to(self.device)

    @torch.no_grad()
    def td_target(self, batch: Batch) -> torch.Tensor:
        """y_B = r + gamma (1 - done) Q'(s', argmax_a' Q(s', a'))."""
        return double_dqn_target(
            self.q(batch.next_obs), self.q_target(batch.next_obs), batch.rew, batch.done, self.config.gamma
        )

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        q_BA = self.q(batch.obs)
        q_data_B = q_BA.gather(1, batch.act[:, None]).squeeze(1)
        td_loss = F.smooth_l1_loss(q_data_B, self.td_target(batch))
        cql_loss = cql_regulariser(q_BA, batch.act)
        loss = td_loss + self.config.alpha * cql_loss
        return {"loss": loss, "td_loss": td_loss, "cql_loss": cql_loss, "q_data": q_data_B.mean()}

    def after_step(self) -> None:
        polyak_update(self.q_target, self.q, self.config.tau)

    def greedy(self, obs_BS: torch.Tensor) -> torch.Tensor:
        return self.q(obs_BS).argmax(1)
