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
    |A|-way output cheap).

    The logits are ``h_BH @ W_AH.T + b_A`` with h the last hidden layer (:meth:`features`), so a
    subset of actions costs only its rows of W (:meth:`logits_of`, :meth:`pair_logits`) and the
    largest logit is found ``chunk`` actions at a time (:meth:`chunked_max_logit`)."""

    UPPER_BOUND_BACKOFF_MAX = 64
    """Most steps :meth:`upper_bound_due` skips the upper bound after tries that decided no row."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (128, 64)) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, n_actions)
        self._upper_backoff = 0  # steps to skip after the next useless try (0, 1, 2, 4, ... 64)
        self._upper_idle = 0  # steps still to skip

    def upper_bound_due(self) -> bool:
        """Whether this step should try :meth:`max_logit_upper_bound` (three passes over W) on its open
        rows. After a try that decided no row it is skipped for 1, then 2, 4, ... up to 64 steps, and
        tried every step again once it decides one. Skipping only sends more rows to the exact scan:
        the OOD indicator is the same either way (on a trained G the bound sits far above the max)."""
        if self._upper_idle > 0:
            self._upper_idle -= 1
            return False
        return True

    def record_upper_bound(self, decided_rows: int) -> None:
        """Report how many rows a try of the upper bound decided (the schedule of :meth:`upper_bound_due`)."""
        if decided_rows > 0:
            self._upper_backoff = 0
        else:
            self._upper_backoff = min(max(1, 2 * self._upper_backoff), self.UPPER_BOUND_BACKOFF_MAX)
        self._upper_idle = self._upper_backoff

    def forward(self, obs_BS: torch.Tensor) -> torch.Tensor:
        return self.net(obs_BS)

    @property
    def output(self) -> nn.Linear:
        """The |A|-way output layer (W_AH, b_A)."""
        layer = self.net[-1]
        assert isinstance(layer, nn.Linear)
        return layer

    def features(self, obs_BS: torch.Tensor) -> torch.Tensor:
        """h_BH: the last hidden layer (after its activation)."""
        return self.net[:-1](obs_BS)

    def logits_of(self, h_BH: torch.Tensor, actions_K: torch.Tensor, sparse: bool = False) -> torch.Tensor:
        """logits_BK of the actions ``actions_K`` (shared by every row); ``sparse``: W's gradient is a
        sparse tensor touching only those rows."""
        w_KH = F.embedding(actions_K, self.output.weight, sparse=sparse)
        return h_BH @ w_KH.T + self.output.bias[actions_K]

    def pair_logits(self, h_BH: torch.Tensor, act_B: torch.Tensor, sparse: bool = False) -> torch.Tensor:
        """logit_B of action ``act_B[i]`` at row i."""
        w_BH = F.embedding(act_B, self.output.weight, sparse=sparse)
        return (h_BH * w_BH).sum(-1) + self.output.bias[act_B]

    @torch.no_grad()
    def max_logit_upper_bound(self, h_BH: torch.Tensor) -> torch.Tensor:
        """U_B >= max_a logit(a | s), from one pass over W (O(|A| H), not O(B |A| H)): with w_bar the mean
        row, logit_a = w_bar.h + (w_a - w_bar).h + b_a <= w_bar.h + ||h|| max_a ||w_a - w_bar|| + max_a b_a.
        Tight when G is nearly flat, where a lower bound decides nothing."""
        weight_AH, bias_A = self.output.weight, self.output.bias
        w_bar_H = weight_AH.mean(dim=0)
        # ||w_a - w_bar||^2 - ||w_bar||^2, without an [A, H] temporary
        sq_A = torch.linalg.vector_norm(weight_AH, dim=1) ** 2 - 2.0 * (weight_AH @ w_bar_H)
        radius = (sq_A.max() + w_bar_H @ w_bar_H).clamp(min=0.0).sqrt()
        return h_BH @ w_bar_H + torch.linalg.vector_norm(h_BH, dim=1) * radius + bias_A.max()

    @torch.no_grad()
    def chunked_max_logit(self, h_BH: torch.Tensor, chunk: int) -> torch.Tensor:
        """max_a logit(a | s) per row, exact, scanning ``chunk`` actions at a time: no [B, |A|] tensor
        beyond [B, chunk] is ever held."""
        if chunk < 1:
            raise ValueError(f"BehaviourModel.chunked_max_logit: chunk must be >= 1, got {chunk}")
        weight_AH, bias_A = self.output.weight, self.output.bias
        best_B = torch.full((h_BH.shape[0],), -torch.inf, dtype=h_BH.dtype, device=h_BH.device)
        for start in range(0, weight_AH.shape[0], chunk):
            part_BC = torch.addmm(bias_A[start : start + chunk], h_BH, weight_AH[start : start + chunk].T)
            best_B = torch.maximum(best_B, part_BC.amax(dim=1))
        return best_B
