"""Transition-based action representations (Chandak et al. 2019), a baseline of paper section 5.1.

As in the public code of Chandak et al.: every action has a learned embedding E_a
(initialised U(-1, 1), used through tanh, default 2-D); a linear inverse-dynamics encoder maps
a transition (s, s') to a Gaussian over the latent action, whose sample z is squashed by tanh;
the logits over actions are the negative squared distances ||tanh(z) - tanh(E_a)||^2, and

    loss = CE(logits, a) / log|A| + 1e-2 * mean(tanh(E)^2) / dim + 1e-2 * KL(N(mu, sigma) || N(0, I)),

trained with Adam (lr 1e-2) on logged transitions. The representation is the state-independent
table tanh(E). The encoder reads [s, s' - s], each column standardised with the dataset's
statistics: a fixed invertible linear map of [s, s'], so the encoder is still linear in
(s, s'); it only spares Adam from learning the large weights that a step of at most 0.18 would
otherwise need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from merlion_core.models.mlp import resolve_device
from merlion_core.representation.base import ProgressFn, Representation, train_loop


@dataclass(frozen=True)
class TransitionConfig:
    """Chandak et al. 2019 inverse-dynamics action embeddings."""

    dim: int = 2
    """|E|: dimension of the action representation (public code: 2)."""
    steps: int = 5000
    """Gradient steps (the public code trained until the loss plateaued)."""
    batch_size: int = 256
    """Transitions per minibatch."""
    lr: float = 1e-2
    """Adam learning rate (public code: 1e-2)."""
    emb_reg: float = 1e-2
    """Weight of the embedding-norm penalty mean(tanh(E)^2) / dim (public code: 1e-2)."""
    kl_weight: float = 1e-2
    """Weight of KL(N(mu, sigma) || N(0, I)) of the inverse-dynamics Gaussian (public code: 1e-2)."""
    seed: int = 0
    """Seed of the initialisation and of minibatch sampling."""


class TransitionRepresentation(Representation):
    """Action table E[A, dim] (the representation is tanh(E)) plus the inverse-dynamics encoder."""

    method = "transition"
    in_mean: torch.Tensor
    in_std: torch.Tensor

    def __init__(self, n_actions: int, obs_dim: int, dim: int) -> None:
        super().__init__(n_actions, obs_dim, dim)
        self.embeddings = nn.Parameter(torch.empty(n_actions, dim).uniform_(-1.0, 1.0))
        self.encoder = nn.Linear(2 * obs_dim, 2 * dim)  # [s, s'] -> (mu, log sigma)
        self.register_buffer("in_mean", torch.zeros(2 * obs_dim))
        self.register_buffer("in_std", torch.ones(2 * obs_dim))

    def table(self) -> torch.Tensor:
        """e[A, dim] = tanh(E)."""
        return torch.tanh(self.embeddings)

    def embed(self, obs_BS: torch.Tensor, act_B: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.embeddings[act_B.to(self.embeddings.device).long()])

    def embed_chunk(self, obs_BS: torch.Tensor, actions_C: torch.Tensor) -> torch.Tensor:
        rows = torch.tanh(self.embeddings[actions_C.to(self.embeddings.device).long()])
        return rows[None].expand(obs_BS.shape[0], *rows.shape)

    def encode(self, obs_BS: torch.Tensor, next_obs_BS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log sigma) of the latent action that moved s to s'."""
        x = (torch.cat([obs_BS, next_obs_BS - obs_BS], dim=1) - self.in_mean) / self.in_std
        mu, log_std = self.encoder(x).chunk(2, dim=1)
        return mu, log_std.clamp(-10.0, 4.0)

    def losses(
        self,
        obs_BS: torch.Tensor,
        act_B: torch.Tensor,
        next_obs_BS: torch.Tensor,
        noise_BD: torch.Tensor,
        emb_reg: float,
        kl_weight: float,
    ) -> dict[str, torch.Tensor]:
        """The training loss and its parts; ``noise_BD`` is the reparameterisation noise."""
        mu, log_std = self.encode(obs_BS, next_obs_BS)
        z = torch.tanh(mu + log_std.exp() * noise_BD)
        table = self.table()
        # -||z - e_a||^2 expanded, so memory stays [B, A] rather than [B, A, dim]
        logits = 2 * z @ table.T - (table**2).sum(1)[None, :] - (z**2).sum(1, keepdim=True)  # [B, A]
        ce = F.cross_entropy(logits, act_B)
        reg = (table**2).mean() / self.dim
        kl = 0.5 * (mu**2 + (2 * log_std).exp() - 2 * log_std - 1).sum(1).mean()
        loss = ce / math.log(max(self.n_actions, 2)) + emb_reg * reg + kl_weight * kl
        return {"loss": loss, "ce": ce, "emb_reg": reg, "kl": kl}


def build(config: TransitionConfig, n_actions: int, obs_dim: int) -> TransitionRepresentation:
    """An untrained module, initialised deterministically from ``config.seed``."""
    if config.dim < 1:
        raise ValueError(f"transition: dim must be >= 1, got {config.dim}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return TransitionRepresentation(n_actions, obs_dim, config.dim)


def _standardiser(cols: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    x = np.concatenate([np.asarray(c, dtype=np.float64) for c in cols], axis=1)
    mean, std = x.mean(0), x.std(0)
    return torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(
        np.where(std > 1e-6, std, 1.0), dtype=torch.float32
    )


def fit(
    dataset: Any,
    config: TransitionConfig,
    *,
    device: str = "auto",
    progress: ProgressFn | None = None,
    checkpoint: Any = None,
) -> tuple[TransitionRepresentation, dict[str, float]]:
    """Train on every logged transition (the paper's data: random actions are best)."""
    if config.steps < 0 or config.batch_size < 1:
        raise ValueError("transition: steps must be >= 0 and batch_size >= 1")
    dev = resolve_device(device)
    obs, nxt = dataset.observations, dataset.next_observations
    rep = build(config, dataset.n_actions, dataset.obs_dim)
    rep.in_mean, rep.in_std = _standardiser([obs, np.asarray(nxt) - np.asarray(obs)])
    rep = rep.to(dev)
    acts = dataset.actions

    def loss_fn(i, gen):
        noise = torch.randn(len(i), config.dim, generator=gen)
        return rep.losses(
            torch.as_tensor(obs[i], device=dev),
            torch.as_tensor(acts[i], device=dev),
            torch.as_tensor(nxt[i], device=dev),
            noise.to(dev),
            config.emb_reg,
            config.kl_weight,
        )

    metrics = train_loop(rep, loss_fn, dataset.n_transitions, config, progress, checkpoint=checkpoint)
    return rep.eval(), metrics
