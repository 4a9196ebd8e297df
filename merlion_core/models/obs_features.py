"""The observation input of every offline RL network: standardised, plus random Fourier features.

An MLP fed raw positions in [0, 1]^2 learns low frequencies first (spectral bias): on the maze
its critic smears the goal's value across the 0.05-thick wall, so the state just under the wall
looks almost as good as the state just above it, and every Q-learning method ends up pushing
into the wall (docs/results.md). Standardising the observation with the dataset's mean and
standard deviation and appending random Fourier features (Tancik et al. 2020)

    z = (s - mean) / std,   features(s) = [z, sin(z W), cos(z W)],   W_ij ~ N(0, scale^2)

gives the first layer high-frequency inputs. ``W`` is drawn once from the algorithm's seed and
kept (with mean and std) as buffers, so a checkpoint carries them. Only the first ``obs_dim``
input columns are transformed; the rest (latent actions, CVAE codes) pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from merlion_core.models.mlp import mlp, network_autocast


def check_feature_options(fourier_features: int, fourier_scale: float) -> None:
    """One-line errors for an algorithm config's feature options."""
    if fourier_features < 0:
        raise ValueError(f"fourier_features: must be >= 0, got {fourier_features}")
    if fourier_scale <= 0:
        raise ValueError(f"fourier_scale: must be > 0, got {fourier_scale}")


def fourier_features(z_BS: torch.Tensor, frequencies_SK: torch.Tensor) -> torch.Tensor:
    """[z, sin(z W), cos(z W)]: the standardised observation and its random Fourier features."""
    if frequencies_SK.shape[1] == 0:
        return z_BS
    projected_BK = z_BS @ frequencies_SK
    return torch.cat([z_BS, torch.sin(projected_BK), torch.cos(projected_BK)], dim=-1)


class ObservationFeatures(nn.Module):
    """x -> [features(x[:, :obs_dim]), x[:, obs_dim:]] with fixed (fitted, not trained) statistics."""

    frequencies: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    fitted: torch.Tensor

    def __init__(self, obs_dim: int, n_fourier: int, scale: float, seed: int) -> None:
        super().__init__()
        check_feature_options(n_fourier, scale)
        self.obs_dim = int(obs_dim)
        self.out_dim = self.obs_dim + 2 * int(n_fourier)
        generator = torch.Generator().manual_seed(int(seed) + 7919)
        self.register_buffer("frequencies", torch.randn(self.obs_dim, int(n_fourier), generator=generator) * scale)
        self.register_buffer("mean", torch.zeros(self.obs_dim))
        self.register_buffer("std", torch.ones(self.obs_dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x[..., : self.obs_dim] - self.mean) / self.std
        return torch.cat([fourier_features(z, self.frequencies), x[..., self.obs_dim :]], dim=-1)


def feature_mlp(features: ObservationFeatures, extra_in: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    """features -> MLP: a network whose input is [observation, ``extra_in`` more columns]."""
    return nn.Sequential(features, mlp(features.out_dim + extra_in, hidden, out_dim))


@torch.no_grad()
def fit_observation_features(module: nn.Module, obs_NS: torch.Tensor) -> None:
    """Set mean and std of every :class:`ObservationFeatures` inside ``module`` (target copies
    included) from the observations ``obs_NS``; constant columns keep std 1."""
    obs_NS = obs_NS.float()
    mean_S = obs_NS.mean(0)
    std_S = obs_NS.std(0, unbiased=False) if obs_NS.shape[0] > 1 else torch.ones_like(mean_S)
    std_S = torch.where(std_S > 1e-6, std_S, torch.ones_like(std_S))
    for child in module.modules():
        if isinstance(child, ObservationFeatures):
            child.mean.copy_(mean_S.to(child.mean.device))
            child.std.copy_(std_S.to(child.std.device))
            child.fitted.fill_(True)


def observation_features_fitted(module: nn.Module) -> bool:
    """True when every :class:`ObservationFeatures` in ``module`` has its statistics (or there is none)."""
    return all(bool(child.fitted) for child in module.modules() if isinstance(child, ObservationFeatures))


def feature_mlp_repeated(
    net: nn.Sequential, obs_BS: torch.Tensor, extra_XE: torch.Tensor, repeats: Sequence[int]
) -> torch.Tensor:
    """``net`` (a :func:`feature_mlp`) on rows that pair each observation with several extra inputs.

    The rows of ``extra_XE`` come in blocks: block k holds ``B * repeats[k]`` rows, observation b
    paired with its ``repeats[k]`` consecutive rows. The result equals
    ``net(cat([cat(obs.repeat_interleave(r) for r in repeats), extra_XE], -1))``, but the
    observation's features and its part of the first layer, W_obs features(s) + b, are computed
    once per observation and then repeated: for latent CQL's critic at the dialogue's shapes (31
    latents per state, 441 feature columns) about 2.4 times fewer multiply-adds.
    """
    features, body = net[0], net[1]
    first = body[0] if isinstance(body, nn.Sequential) else None
    if not isinstance(body, nn.Sequential) or not isinstance(first, nn.Linear):
        raise TypeError("feature_mlp_repeated: net must be a feature_mlp (features, then an MLP from a Linear)")
    if extra_XE.shape[0] != obs_BS.shape[0] * sum(repeats):
        raise ValueError(
            f"feature_mlp_repeated: {extra_XE.shape[0]} extra rows, expected "
            f"{obs_BS.shape[0]} observations x {sum(repeats)} (repeats {tuple(repeats)})"
        )
    features_BF = features(obs_BS)
    n_features = features_BF.shape[1]
    with network_autocast(obs_BS.device):  # the first layer in the scope's precision, like body[1:]
        hidden_obs_BH = nn.functional.linear(features_BF, first.weight[:, :n_features], first.bias)
        hidden_obs_XH = torch.cat([hidden_obs_BH.repeat_interleave(r, dim=0) for r in repeats])
        hidden_XH = hidden_obs_XH + nn.functional.linear(extra_XE, first.weight[:, n_features:])
    return body[1:](hidden_XH)
