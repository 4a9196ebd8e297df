"""Fitted Q evaluation (FQE; Le, Voloshin & Yue 2019) of a deterministic target policy.

Q is regressed on y = r + gamma (1 - terminal) Q_target(s', pi(s')) over the held-out transitions,
with a target network (Polyak-averaged, or copied every k steps) standing in for the paper's
"previous iterate"; the estimate is the mean over episodes of Q(s_0, pi(s_0)). Timeouts are
truncations, not terminal states: the target bootstraps through them, so FQE estimates the
infinite-horizon discounted value. The loss is the squared error (the paper's least squares):
a Huber loss estimates something between the conditional median and mean of y, which is biased
for evaluation whenever rewards are noisy or skewed. Q is learned in units of max |r| (targets
divided by it, outputs multiplied back), so the learning rate suits any reward scale.

Intervals: H = K + 1 independent networks (:mod:`merlion_core.ope.heads`) are trained together.
Head 0 sees every held-out episode with weight 1 and gives the estimate; head k >= 1 weighs each
transition by the count of its episode in head k's multinomial resample of the episodes (an
episode bootstrap, Efron & Tibshirani 1993), and its estimate weighs the initial states the same
way. ci95 is the 2.5 / 97.5 percentile of the K head estimates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from merlion_core.algos.base import frozen_copy, polyak_update
from merlion_core.models.mlp import resolve_device
from merlion_core.models.obs_features import check_feature_options
from merlion_core.ope.episodes import EpisodeTable
from merlion_core.ope.heads import BatchedQHeads
from merlion_core.ope.result import OPEEstimate, ProgressFn, bootstrap_counts, percentile_interval

CHUNK = 4096
"""Observations per forward pass when evaluating a fitted Q function."""


@dataclass(frozen=True)
class FQEConfig:
    """Fitted Q evaluation with K bootstrap heads."""

    gamma: float = 0.99
    """Discount factor (1.0 only when every episode ends in a terminal state)."""
    steps: int = 10_000
    """Gradient steps (each on one minibatch, all heads at once)."""
    batch_size: int = 256
    """Transitions per minibatch, drawn uniformly with replacement (the same rows for every head)."""
    lr: float = 3e-4
    """Adam learning rate."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of each head's MLP."""
    tau: float = 0.005
    """Polyak rate of the target network after every step (used when hard_update_every is 0)."""
    hard_update_every: int = 100
    """Copy the network into the target every this many steps (FQE's iterations, as in d3rlpy); 0: Polyak with tau."""
    n_bootstrap: int = 20
    """K: bootstrap heads besides head 0 (0: no interval)."""
    fourier_features: int = 32
    """Random Fourier features of the standardised observation per head (0: standardised only)."""
    fourier_scale: float = 3.0
    """Standard deviation of the random Fourier frequencies."""
    seed: int = 0
    """Seed of the initialisation, the bootstrap resamples and the minibatches."""

    def __post_init__(self) -> None:
        check_feature_options(self.fourier_features, self.fourier_scale)
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma: must be in [0, 1], got {self.gamma}")
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau: must be in (0, 1], got {self.tau}")
        if self.hard_update_every < 0 or self.n_bootstrap < 0:
            raise ValueError("hard_update_every and n_bootstrap: must be >= 0")


def fqe_target(rew_B: torch.Tensor, done_B: torch.Tensor, q_next_pi_HB: torch.Tensor, gamma: float) -> torch.Tensor:
    """y = r + gamma (1 - terminal) Q_target(s', pi(s')): FQE's regression target (Le, Voloshin & Yue 2019)."""
    return rew_B + gamma * (1.0 - done_B) * q_next_pi_HB


def weighted_squared_error(q_HB: torch.Tensor, y_HB: torch.Tensor, w_HB: torch.Tensor) -> torch.Tensor:
    """sum_h mean_b w_hb (Q_h(s_b, a_b) - y_hb)^2: each head's (bootstrap-weighted) least squares."""
    return (w_HB * (q_HB - y_HB).square()).mean(1).sum()


class FittedQ:
    """A fitted Q function: Q(s, a) and V(s) = Q(s, pi(s)) of head 0 (or any head) for arrays."""

    def __init__(self, heads: BatchedQHeads, q_scale: float, device: torch.device) -> None:
        self.heads = heads
        self.q_scale = float(q_scale)
        self.device = device

    @property
    def n_heads(self) -> int:
        return self.heads.n_heads

    @torch.no_grad()
    def q(self, obs: np.ndarray, actions: np.ndarray, head: int = 0) -> np.ndarray:
        """float64[N]: Q_head(s_n, a_n)."""
        obs = np.asarray(obs, dtype=np.float32)
        actions = np.asarray(actions, dtype=np.int64)
        if obs.ndim != 2 or obs.shape[1] != self.heads.obs_dim or actions.shape != (obs.shape[0],):
            raise ValueError(
                f"q: expected obs [N, {self.heads.obs_dim}] and actions [N], got {obs.shape} and {actions.shape}"
            )
        if not 0 <= head < self.n_heads:
            raise ValueError(f"head: must be in [0, {self.n_heads}), got {head}")
        parts = [
            self.heads.selected(
                torch.as_tensor(obs[i : i + CHUNK], device=self.device),
                torch.as_tensor(actions[i : i + CHUNK], device=self.device),
                slice(head, head + 1),
            )[0]
            .double()
            .cpu()
            for i in range(0, obs.shape[0], CHUNK)
        ]
        return (torch.cat(parts).numpy() if parts else np.zeros(0)) * self.q_scale

    def v(self, obs: np.ndarray, policy_actions: np.ndarray, head: int = 0) -> np.ndarray:
        """float64[N]: V(s_n) = Q_head(s_n, pi(s_n)), given the target policy's actions pi(s_n)."""
        return self.q(obs, policy_actions, head)

    @torch.no_grad()
    def q_values(self, obs: np.ndarray, head: int = 0) -> np.ndarray:
        """float64[N, A]: every action's Q value under one head."""
        obs = np.asarray(obs, dtype=np.float32)
        parts = [
            self.heads(torch.as_tensor(obs[i : i + CHUNK], device=self.device), slice(head, head + 1))[0].double().cpu()
            for i in range(0, obs.shape[0], CHUNK)
        ]
        return (torch.cat(parts).numpy() if parts else np.zeros((0, self.heads.n_actions))) * self.q_scale

    @torch.no_grad()
    def all_heads(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """float64[H, N]: Q_h(s_n, a_n) for every head (the initial states)."""
        obs = np.asarray(obs, dtype=np.float32)
        actions = np.asarray(actions, dtype=np.int64)
        step = max(1, CHUNK // self.n_heads)
        parts = [
            self.heads.selected(
                torch.as_tensor(obs[i : i + step], device=self.device),
                torch.as_tensor(actions[i : i + step], device=self.device),
            )
            .double()
            .cpu()
            for i in range(0, obs.shape[0], step)
        ]
        return (torch.cat(parts, dim=1).numpy() if parts else np.zeros((self.n_heads, 0))) * self.q_scale


def _check_inputs(shape: tuple[int, ...], arrays: dict[str, np.ndarray], n_actions: int, table: EpisodeTable) -> None:
    n = shape[0]
    for name, arr in arrays.items():
        if name == "next_observations" and arr.shape[1:] != shape[1:]:
            raise ValueError(f"next_observations: shape {arr.shape} differs from observations shape {shape}")
        if arr.shape[0] != n:
            raise ValueError(f"{name}: length {arr.shape[0]} differs from observations length {n}")
    if table.n_transitions != n or int(table.ends[-1]) != n - 1:
        raise ValueError(
            f"table: its episodes cover {table.n_transitions} transitions, expected all {n} (complete episodes)"
        )
    for name in ("actions", "next_actions_N"):
        if arrays[name].min() < 0 or arrays[name].max() >= n_actions:
            raise ValueError(f"{name}: ids must be in [0, {n_actions})")


def fitted_q_evaluation(
    observations: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    next_observations: np.ndarray,
    terminals: np.ndarray,
    next_actions_N: np.ndarray,
    initial_actions_E: np.ndarray,
    table: EpisodeTable,
    n_actions: int,
    config: FQEConfig = FQEConfig(),
    progress: ProgressFn | None = None,
    device: str = "auto",
    initial_observations_E: np.ndarray | None = None,
) -> tuple[OPEEstimate, FittedQ]:
    """FQE of pi on held-out complete episodes: (estimate with bootstrap-head interval, fitted Q).

    ``next_actions_N`` = pi(s'_n) for every transition, ``initial_actions_E`` = pi(s_0) for every
    episode of ``table`` (whose first observation is ``observations[table.starts]``).
    """
    obs = np.asarray(observations, dtype=np.float32)
    if obs.ndim != 2 or obs.shape[0] == 0:
        raise ValueError(f"observations: expected a non-empty [N, S] array, got shape {obs.shape}")
    arrays: dict[str, np.ndarray] = {
        "actions": np.asarray(actions, np.int64),
        "rewards": np.asarray(rewards, np.float32),
        "next_observations": np.asarray(next_observations, np.float32),
        "terminals": np.asarray(terminals, bool),
        "next_actions_N": np.asarray(next_actions_N, np.int64),
    }
    _check_inputs(obs.shape, arrays, n_actions, table)
    initial_actions_E = np.asarray(initial_actions_E, np.int64)
    if initial_actions_E.shape != (table.n_episodes,):
        raise ValueError(f"initial_actions_E: expected shape ({table.n_episodes},), got {initial_actions_E.shape}")
    if initial_actions_E.min() < 0 or initial_actions_E.max() >= n_actions:
        raise ValueError(f"initial_actions_E: ids must be in [0, {n_actions})")
    if config.gamma >= 1.0 and not arrays["terminals"][table.ends].all():
        raise ValueError("gamma: 1.0 needs every episode to end in a terminal (a bootstrapped time limit diverges)")
    dev = resolve_device(device)
    n_heads, n_episodes = config.n_bootstrap + 1, table.n_episodes
    counts_KE = bootstrap_counts(n_episodes, config.n_bootstrap, config.seed)
    weights_HE = np.concatenate([np.ones((1, n_episodes)), counts_KE])
    weights_HN = torch.as_tensor(weights_HE[:, table.episode_of_transition()], dtype=torch.float32, device=dev)
    q_scale = float(np.abs(arrays["rewards"]).max()) or 1.0

    heads = BatchedQHeads(
        n_heads, obs.shape[1], n_actions, config.hidden, config.fourier_features, config.fourier_scale, config.seed
    ).to(dev)
    obs_NS = torch.as_tensor(obs, device=dev)
    heads.fit_statistics(obs_NS)
    target = frozen_copy(heads)
    next_NS = torch.as_tensor(arrays["next_observations"], device=dev)
    act_N = torch.as_tensor(arrays["actions"], device=dev)
    next_act_N = torch.as_tensor(arrays["next_actions_N"], device=dev)
    rew_N = torch.as_tensor(arrays["rewards"] / q_scale, device=dev)
    done_N = torch.as_tensor(arrays["terminals"], dtype=torch.float32, device=dev)
    optimizers = heads.optimizers(config.lr)
    generator = torch.Generator().manual_seed(config.seed + 1)
    every = max(1, config.steps // 100)
    recent = torch.zeros(min(100, config.steps), device=dev)
    for step in range(config.steps):
        idx = torch.randint(0, obs.shape[0], (config.batch_size,), generator=generator).to(dev)
        with torch.no_grad():
            y_HB = fqe_target(rew_N[idx], done_N[idx], target.selected(next_NS[idx], next_act_N[idx]), config.gamma)
        loss = weighted_squared_error(heads.selected(obs_NS[idx], act_N[idx]), y_HB, weights_HN[:, idx])
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        if config.hard_update_every:
            if (step + 1) % config.hard_update_every == 0:
                target.load_state_dict(heads.state_dict())
        else:
            polyak_update(target, heads, config.tau)
        recent[step % recent.numel()] = loss.detach()
        if progress is not None and ((step + 1) % every == 0 or step + 1 == config.steps):
            progress(step + 1, config.steps)

    heads.eval()
    fitted = FittedQ(heads, q_scale, dev)
    initial = obs[table.starts] if initial_observations_E is None else np.asarray(initial_observations_E, np.float32)
    if initial.shape != (table.n_episodes, obs.shape[1]):
        raise ValueError(
            f"initial_observations_E: expected shape ({table.n_episodes}, {obs.shape[1]}), got {initial.shape}"
        )
    q0_HE = fitted.all_heads(initial, initial_actions_E)
    head_values_H = (q0_HE * weights_HE).sum(1) / weights_HE.sum(1)
    details = {
        "estimator": "fqe",
        "gamma": config.gamma,
        "steps": config.steps,
        "loss": "mse",
        "final_loss": float(recent.mean()) * q_scale**2 / n_heads,
        "q_scale": q_scale,
        "n_heads": n_heads,
        "head_values": [float(v) for v in head_values_H],
        "n_episodes": n_episodes,
        "n_transitions": int(obs.shape[0]),
        "interval": "percentile of episode-bootstrap heads" if config.n_bootstrap else "none",
    }
    return (
        OPEEstimate(
            value=float(head_values_H[0]),
            ci95=percentile_interval(head_values_H[1:]),
            per_episode=q0_HE[0],
            details=details,
        ),
        fitted,
    )
