"""The models of Algorithm 2: transition P_hat(s'|s, e), reward R_hat(s, e), behaviour G(a|s)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from merlion_core.models.mlp import mlp

MIN_STD = 1e-3


class TransitionModel(nn.Module):
    """P_hat(s' | s, e): a diagonal Gaussian, mean = s + predicted change, so W2 is closed-form."""

    def __init__(self, obs_dim: int, dim: int, hidden: Sequence[int] = (128, 128)) -> None:
        super().__init__()
        self.net = mlp(obs_dim + dim, hidden, 2 * obs_dim)

    def forward(self, obs_BS: torch.Tensor, e_BD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        delta, raw_std = self.net(torch.cat([obs_BS, e_BD], -1)).chunk(2, -1)
        return obs_BS + delta, F.softplus(raw_std) + MIN_STD


class RewardModel(nn.Module):
    """R_hat(s, e): a scalar reward prediction."""

    def __init__(self, obs_dim: int, dim: int, hidden: Sequence[int] = (128, 128)) -> None:
        super().__init__()
        self.net = mlp(obs_dim + dim, hidden, 1)

    def forward(self, obs_BS: torch.Tensor, e_BD: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs_BS, e_BD], -1)).squeeze(-1)


class BehaviourModel(nn.Module):
    """G(a | s) ~ pi_beta(a | s): logits over every action (a narrow last hidden layer keeps the
    |A|-way output cheap)."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (128, 64)) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, n_actions)

    def forward(self, obs_BS: torch.Tensor) -> torch.Tensor:
        return self.net(obs_BS)
