"""Behaviour cloning: a classifier over all actions, trained with cross-entropy on the logged actions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from merlion_core.algos.base import OfflineAlgorithm, seeded
from merlion_core.data.sampler import Batch
from merlion_core.models.obs_features import check_feature_options, feature_mlp


@dataclass(frozen=True)
class BCConfig:
    """Behaviour cloning: pi(a | s) = softmax(f(s)), maximise log pi(a_data | s)."""

    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of the classifier MLP f."""
    lr: float = 1e-3
    """Adam learning rate."""
    batch_size: int = 256
    """Transitions per minibatch (read by whoever builds the BatchSampler)."""
    fourier_features: int = 32
    """Random Fourier features of the standardised observation fed to every network (0: standardised only)."""
    fourier_scale: float = 3.0
    """Standard deviation of the random Fourier frequencies (models/obs_features.py)."""
    seed: int = 0
    """Seed of the network initialisation."""

    def __post_init__(self) -> None:
        check_feature_options(self.fourier_features, self.fourier_scale)
        if self.lr <= 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")


class BC(OfflineAlgorithm):
    """Acts with argmax_a pi(a | s)."""

    def __init__(self, config: BCConfig, n_actions: int, obs_dim: int, device: str = "auto") -> None:
        super().__init__(config, n_actions, obs_dim, device)
        with seeded(config.seed):
            self.policy = feature_mlp(self.observation_features(), 0, config.hidden, n_actions)
        self.to(self.device)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits_BA = self.policy(batch.obs)
        loss = F.cross_entropy(logits_BA, batch.act)  # -E[log pi(a_data | s)]
        accuracy = (logits_BA.argmax(1) == batch.act).float().mean()
        return {"loss": loss, "accuracy": accuracy}

    def greedy(self, obs_BS: torch.Tensor) -> torch.Tensor:
        return self.policy(obs_BS).argmax(1)
