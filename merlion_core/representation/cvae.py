"""The paper's "CVAE" ablation: a conditional VAE over action representations, no distance objective.

- Encoder q(e | s, a): a learned action-id embedding concatenated with the standardised state
  -> MLP -> (mu, log sigma) of a Gaussian over e in R^dim (log sigma clamped to [-4, 15] as in
  the PLAS public code).
- Decoder: [standardised s, e ~ q] -> MLP -> standardised (s' - s, r), exactly as the
  reconstruction baseline (:mod:`merlion_core.representation.reconstruction`).
- Loss: MSE(next state) + reward_weight * MSE(reward) + beta * KL(q || N(0, I)), the KL averaged
  over the batch and the latent dimensions (PLAS convention). Default beta = 0.1, not PLAS's 0.5:
  on standardised (s' - s, r) targets beta = 0.5 collapses the posterior. Measured on random-action
  maze data (one seed): 64 actions, 3000 steps: next-state MSE 0.71 / KL 0.28 with beta 0.5,
  0.34 / 1.3 with beta 0.1 (reconstruction baseline: 0.35); 4096 actions, 3000 steps: 0.71 / 0.05
  with beta 0.5 (latent L1 vs true displacement distance correlation 0.03), 0.61 / 0.38 with
  beta 0.1, which reaches 0.29 / 0.96 (correlation 0.42) at the default 10k steps.

The representation is the encoder mean mu(s, a) (deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from merlion_core.representation.base import ProgressFn
from merlion_core.representation.reconstruction import EncoderDecoder, check_config, train

LOG_STD_MIN, LOG_STD_MAX = -4.0, 15.0


@dataclass(frozen=True)
class CVAEConfig:
    """Conditional VAE over (s, a) -> e, trained to reconstruct (s', r); no distance objective."""

    dim: int = 2
    """|E|: dimension of the action representation (the latent of the CVAE)."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of the encoder and of the decoder MLPs."""
    action_embed_dim: int = 32
    """Size of the learned action-id embedding fed to the encoder with the state."""
    beta: float = 0.1
    """beta: weight of KL(q(e | s, a) || N(0, I)), KL averaged over latent dims (PLAS / BCQ: 0.5; see module doc)."""
    reward_weight: float = 1.0
    """Weight of the reward MSE relative to the next-state MSE (both on standardised targets)."""
    steps: int = 10_000
    """Gradient steps."""
    batch_size: int = 256
    """Transitions per minibatch."""
    lr: float = 1e-3
    """Adam learning rate."""
    seed: int = 0
    """Seed of the initialisation, of minibatch sampling and of the latent noise."""


class CVAERepresentation(EncoderDecoder):
    """e = mu(s, a), the mean of the CVAE encoder."""

    method = "cvae"

    def __init__(self, n_actions: int, obs_dim: int, config: CVAEConfig) -> None:
        super().__init__(n_actions, obs_dim, config.dim, tuple(config.hidden), config.action_embed_dim, 2 * config.dim)
        self.beta = float(config.beta)
        self.reward_weight = float(config.reward_weight)

    def posterior(self, obs_BS: torch.Tensor, act_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log sigma) of q(e | s, a)."""
        mu, log_std = self.encode(obs_BS, act_B).chunk(2, dim=1)
        return mu, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def embed(self, obs_BS: torch.Tensor, act_B: torch.Tensor) -> torch.Tensor:
        return self.posterior(obs_BS, act_B)[0]

    def losses(
        self,
        obs_BS: torch.Tensor,
        act_B: torch.Tensor,
        rew_B: torch.Tensor,
        next_obs_BS: torch.Tensor,
        noise_BD: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training loss and its parts; ``noise_BD`` ~ N(0, I) reparameterises e (None: e = mu)."""
        mu, log_std = self.posterior(obs_BS, act_B)
        e = mu if noise_BD is None else mu + log_std.exp() * noise_BD
        pred = self.decode(obs_BS, e)
        next_mse, rew_mse = self.recon_losses(pred, self.targets(obs_BS, rew_B, next_obs_BS))
        kl = 0.5 * (mu**2 + (2 * log_std).exp() - 2 * log_std - 1).mean()
        recon = next_mse + self.reward_weight * rew_mse
        return {"loss": recon + self.beta * kl, "recon": recon, "next_mse": next_mse, "reward_mse": rew_mse, "kl": kl}


def build(config: CVAEConfig, n_actions: int, obs_dim: int) -> CVAERepresentation:
    """An untrained module, initialised deterministically from ``config.seed``."""
    check_config("cvae", config)
    if config.beta < 0:
        raise ValueError(f"cvae: beta must be >= 0, got {config.beta}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return CVAERepresentation(n_actions, obs_dim, config)


def fit(
    dataset: Any,
    config: CVAEConfig,
    *,
    device: str = "auto",
    progress: ProgressFn | None = None,
    checkpoint: Any = None,
) -> tuple[CVAERepresentation, dict[str, float]]:
    """Train the CVAE on the logged transitions; returns the encoder mean as representation."""
    rep = build(config, dataset.n_actions, dataset.obs_dim)
    return train(rep, dataset, config, device, progress, noise_dim=config.dim, checkpoint=checkpoint)  # type: ignore[return-value]
