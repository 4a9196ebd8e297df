"""The behaviour model mu(a | s), for datasets that log no propensities.

A softmax classifier over the n_actions ids, an MLP on the standardised observation (plus random
Fourier features, as the agents' networks: models/obs_features.py), fit by cross-entropy on the
logged (s, a) pairs with Adam on seeded uniform minibatches. The importance ratios of
:mod:`merlion_core.ope.importance` divide by mu(a_t | s_t), so :meth:`BehaviourModel.probability`
clamps it below at ``min_probability`` (an absolute floor: every ratio is then at most
1 / min_probability). With the default 1e-4 the floor stays under the uniform probability of up
to 10,000 actions, so it only catches a classifier's overconfident near-zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from merlion_core.algos.base import seeded
from merlion_core.models.mlp import resolve_device
from merlion_core.models.obs_features import (
    ObservationFeatures,
    check_feature_options,
    feature_mlp,
    fit_observation_features,
)
from merlion_core.ope.result import ProgressFn

CHUNK = 4096
"""Observations per forward pass when evaluating probabilities (bounds the [chunk, n_actions] logits)."""


@dataclass(frozen=True)
class BehaviourModelConfig:
    """Softmax MLP classifier of the logged action given the observation."""

    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of the classifier MLP."""
    steps: int = 5000
    """Adam steps (one minibatch each)."""
    batch_size: int = 256
    """Transitions per minibatch, drawn uniformly with replacement."""
    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam (L2) weight decay."""
    fourier_features: int = 32
    """Random Fourier features of the standardised observation (0: standardised observation only)."""
    fourier_scale: float = 3.0
    """Standard deviation of the random Fourier frequencies."""
    min_probability: float = 1e-4
    """Absolute floor of the returned probabilities (caps each importance ratio at 1 / min_probability)."""
    seed: int = 0
    """Seed of the initialisation and of the minibatches."""

    def __post_init__(self) -> None:
        check_feature_options(self.fourier_features, self.fourier_scale)
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: must be >= 0, got {self.weight_decay}")
        if not 0.0 < self.min_probability < 1.0:
            raise ValueError(f"min_probability: must be in (0, 1), got {self.min_probability}")


def cross_entropy(logits_BA: torch.Tensor, actions_B: torch.Tensor) -> torch.Tensor:
    """-E[log softmax(f(s))_a]: the classifier's maximum-likelihood loss."""
    return F.cross_entropy(logits_BA, actions_B)


class BehaviourModel:
    """A fitted mu(a | s): :meth:`probabilities` for every action, :meth:`probability` of given ones."""

    def __init__(
        self, net: nn.Sequential, n_actions: int, config: BehaviourModelConfig, device: torch.device, final_loss: float
    ) -> None:
        self.net = net
        self.n_actions = int(n_actions)
        self.config = config
        self.device = device
        self.final_loss = float(final_loss)
        """Mean cross-entropy of the last 100 steps' minibatches."""

    @torch.no_grad()
    def probabilities(self, obs: np.ndarray) -> np.ndarray:
        """float64[B, A]: softmax probabilities, unclamped (rows sum to 1)."""
        obs = _check_obs(obs, self.net)
        parts = [
            torch.softmax(self.net(torch.as_tensor(obs[i : i + CHUNK], device=self.device)).double(), dim=1).cpu()
            for i in range(0, obs.shape[0], CHUNK)
        ]
        return torch.cat(parts).numpy() if parts else np.zeros((0, self.n_actions))

    @torch.no_grad()
    def probability(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """float64[B]: mu(a_b | s_b), clamped below at ``config.min_probability``."""
        obs = _check_obs(obs, self.net)
        actions = np.asarray(actions, dtype=np.int64)
        if actions.shape != (obs.shape[0],):
            raise ValueError(f"actions: expected shape ({obs.shape[0]},), got {actions.shape}")
        if actions.size and (actions.min() < 0 or actions.max() >= self.n_actions):
            raise ValueError(f"actions: ids must be in [0, {self.n_actions})")
        parts = []
        for i in range(0, obs.shape[0], CHUNK):  # chunks of rows, for memory: [CHUNK, A] logits at a time
            logits = self.net(torch.as_tensor(obs[i : i + CHUNK], device=self.device))
            act = torch.as_tensor(actions[i : i + CHUNK], device=self.device)
            log_p = torch.log_softmax(logits.double(), dim=1).gather(1, act[:, None]).squeeze(1)
            parts.append(log_p.exp().cpu())
        p = torch.cat(parts).numpy() if parts else np.zeros(0)
        return np.maximum(p, self.config.min_probability)


def _check_obs(obs: np.ndarray, net: nn.Sequential) -> np.ndarray:
    obs = np.asarray(obs, dtype=np.float32)
    obs_dim = net[0].obs_dim
    if obs.ndim != 2 or obs.shape[1] != obs_dim:
        raise ValueError(f"obs: expected shape [B, {obs_dim}], got {obs.shape}")
    return obs


def fit_behaviour_model(
    obs: np.ndarray,
    actions: np.ndarray,
    n_actions: int,
    config: BehaviourModelConfig = BehaviourModelConfig(),
    progress: ProgressFn | None = None,
    device: str = "auto",
) -> BehaviourModel:
    """Fit mu(a | s) to the logged pairs (obs f32[N, S], actions i64[N]) by cross-entropy."""
    obs = np.asarray(obs, dtype=np.float32)
    actions = np.asarray(actions, dtype=np.int64)
    if obs.ndim != 2 or obs.shape[0] == 0:
        raise ValueError(f"obs: expected a non-empty [N, S] array, got shape {obs.shape}")
    if actions.shape != (obs.shape[0],):
        raise ValueError(f"actions: expected shape ({obs.shape[0]},), got {actions.shape}")
    if n_actions < 2 or actions.min() < 0 or actions.max() >= n_actions:
        raise ValueError(f"actions: ids must be in [0, n_actions={n_actions}) with n_actions >= 2")
    dev = resolve_device(device)
    with seeded(config.seed):
        net = feature_mlp(
            ObservationFeatures(obs.shape[1], config.fourier_features, config.fourier_scale, config.seed),
            0,
            config.hidden,
            n_actions,
        ).to(dev)
    obs_NS = torch.as_tensor(obs, device=dev)
    act_N = torch.as_tensor(actions, device=dev)
    fit_observation_features(net, obs_NS)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)
    generator = torch.Generator().manual_seed(config.seed + 1)
    every = max(1, config.steps // 100)
    recent = torch.zeros(min(100, config.steps), device=dev)
    for step in range(config.steps):
        idx = torch.randint(0, obs.shape[0], (config.batch_size,), generator=generator).to(dev)
        loss = cross_entropy(net(obs_NS[idx]), act_N[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        recent[step % recent.numel()] = loss.detach()
        if progress is not None and ((step + 1) % every == 0 or step + 1 == config.steps):
            progress(step + 1, config.steps)
    net.eval()
    return BehaviourModel(net, n_actions, config, dev, float(recent.mean()))
