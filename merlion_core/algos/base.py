"""The one base class of the offline RL algorithms, and the small pure pieces they share.

An :class:`OfflineAlgorithm` is an ``nn.Module`` holding its networks (target networks
included, so ``state_dict`` is a complete checkpoint of the weights) and its optimizer.
Subclasses implement :meth:`OfflineAlgorithm.losses` (one gradient step's loss and its
logged parts) and :meth:`OfflineAlgorithm.greedy` (the action chosen at each state);
:meth:`OfflineAlgorithm.after_step` updates target networks. ``update``, ``act`` and
``train_steps`` are shared.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from collections.abc import Iterator
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from merlion_core.data.sampler import Batch, BatchSampler
from merlion_core.models.cuda_graph import CapturedStep, fresh_generator, make_capturable
from merlion_core.models.mlp import resolve_device
from merlion_core.models.obs_features import ObservationFeatures, fit_observation_features, observation_features_fitted
from merlion_core.models.precision import compute_precision

ModuleT = TypeVar("ModuleT", bound=nn.Module)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with the CPU RNG seeded to ``seed``; the global RNG state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def masked_argmax(q_BA: torch.Tensor, allowed_BA: torch.Tensor | None = None) -> torch.Tensor:
    """i64[B]: argmax_a Q(s, a) over the allowed actions (all of them when ``allowed_BA`` is None)."""
    if allowed_BA is not None:
        q_BA = q_BA.masked_fill(~allowed_BA, -math.inf)
    return q_BA.argmax(dim=1)


def double_dqn_target(
    q_next_online_BA: torch.Tensor,
    q_next_target_BA: torch.Tensor,
    rew_B: torch.Tensor,
    done_B: torch.Tensor,
    gamma: float,
    allowed_BA: torch.Tensor | None = None,
) -> torch.Tensor:
    """y = r + gamma (1 - done) Q_target(s', argmax_{a' allowed} Q_online(s', a'))  (Double DQN)."""
    next_act_B = masked_argmax(q_next_online_BA, allowed_BA)
    q_next_B = q_next_target_BA.gather(1, next_act_B[:, None]).squeeze(1)
    return rew_B + gamma * (1.0 - done_B) * q_next_B


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """theta' <- tau theta + (1 - tau) theta'."""
    for p_target, p_online in zip(target.parameters(), online.parameters(), strict=True):
        p_target.lerp_(p_online, tau)


def frozen_copy(net: ModuleT) -> ModuleT:
    """A copy of ``net`` (same weights) that no optimizer updates: a target network."""
    target = copy.deepcopy(net)
    target.requires_grad_(False)
    return target


class OfflineAlgorithm(nn.Module):
    """Base class: learns a greedy policy over ``n_actions`` discrete actions from logged batches."""

    def __init__(self, config: Any, n_actions: int, obs_dim: int, device: str = "auto") -> None:
        super().__init__()
        if n_actions < 2:
            raise ValueError(f"n_actions: must be >= 2, got {n_actions}")
        if obs_dim < 1:
            raise ValueError(f"obs_dim: must be >= 1, got {obs_dim}")
        self.config = config
        self.n_actions = int(n_actions)
        self.obs_dim = int(obs_dim)
        self.device = resolve_device(device)
        self._features_ready = False  # python-side cache of "observation statistics are set"
        self._optimizer: torch.optim.Optimizer | None = None
        self.cuda_graph = True  # on CUDA, replay each gradient step as one CUDA graph (models/cuda_graph.py)
        self.precision = "fp32"  # networks' precision in gradient steps: fp32 or bf16 (models/precision.py)
        self._captured_steps: dict[Any, CapturedStep] = {}

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer of :meth:`make_optimizer`, built on first use: an agent loaded only to act
        (the app, ``merlion evaluate``) never builds one, and the first ``torch.optim`` optimizer
        of a process imports torch._dynamo (seconds)."""
        if self._optimizer is None:
            self._optimizer = self.make_optimizer()
        return self._optimizer

    def _graph_wanted(self) -> bool:
        return bool(self.cuda_graph) and self.device.type == "cuda"

    @property
    def step_mode(self) -> str:
        """How gradient steps run: ``eager``, ``graph`` (one CUDA graph a step), ``graph pending`` or
        ``eager (CUDA graph capture failed: ...)``."""
        if not self._graph_wanted():
            return "eager"
        return "; ".join(step.status for step in self._captured_steps.values()) or "graph pending"

    def observation_features(self) -> ObservationFeatures:
        """The input features of this algorithm's networks (config.fourier_features, fourier_scale, seed)."""
        cfg = self.config
        return ObservationFeatures(self.obs_dim, cfg.fourier_features, cfg.fourier_scale, cfg.seed)

    def prepare_observation_features(self, obs_NS: torch.Tensor) -> None:
        """Fit the networks' observation statistics from ``obs_NS`` unless they are set already
        (a loaded checkpoint carries them); a no-op after the first call."""
        if not self._features_ready:
            if not observation_features_fitted(self):
                fit_observation_features(self, obs_NS)
            self._features_ready = True

    def make_optimizer(self) -> torch.optim.Optimizer:
        """Adam (``config.lr``) over the trainable parameters (built on first use of ``optimizer``,
        after the algorithm has moved to its device)."""
        return torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=self.config.lr, fused=True)

    # --- implemented by subclasses -------------------------------------------------------------
    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{"loss": scalar to minimise, ...other logged scalars}`` for one batch."""
        raise NotImplementedError

    def greedy(self, obs_BS: torch.Tensor) -> torch.Tensor:
        """i64[B]: the policy's action at each state (called under ``no_grad``)."""
        raise NotImplementedError

    def after_step(self) -> None:
        """Hook run after each optimizer step (target network updates)."""

    def prepare_data(self, sampler: BatchSampler) -> None:
        """Hook run by :meth:`train_steps` before the first step, with the whole dataset at hand
        (the latent algorithms fit their latent map here)."""

    # --- shared ----------------------------------------------------------------------------------
    def gradient_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One eager gradient step: losses (networks in ``self.precision``), backward, optimizer step,
        target updates."""
        with compute_precision(self.precision):
            parts = self.losses(batch)
        self.optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        self.optimizer.step()
        self.after_step()
        return {key: value.detach() for key, value in parts.items()}

    def update_tensors(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step; returns the detached loss parts (no host sync after the first). On
        CUDA (``cuda_graph``), each phase's step is captured after 3 eager ones and replayed as one graph."""
        self.prepare_observation_features(batch.obs)  # without train_steps: from the first batch
        if not self._graph_wanted():
            parts = self.gradient_step(batch)
        else:
            phase = self.graph_phase()
            if phase not in self._captured_steps:
                generators = tuple(v for v in vars(self).values() if isinstance(v, torch.Generator))
                # before the phase's first step; also after a checkpoint restored non-capturable groups
                make_capturable(self.optimizer)
                self._captured_steps[phase] = CapturedStep(
                    lambda tensors: self.gradient_step(Batch(**tensors)),
                    self.device,
                    generators=generators,
                    params=tuple(self.parameters()),
                    on_failure=self._fresh_generators,
                )
            parts = self._captured_steps[phase]({f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)})
        self.after_host_step()
        return parts

    def _fresh_generators(self) -> None:
        """After a failed capture: every generator attribute continues in a new generator object."""
        for name, value in list(vars(self).items()):
            if isinstance(value, torch.Generator):
                setattr(self, name, fresh_generator(value))

    def graph_phase(self) -> Any:
        """A key of the step's host-side branches: each distinct key gets its own CUDA graph."""
        return None

    def after_host_step(self) -> None:
        """Host-side bookkeeping after each step (a replayed graph runs no Python: keep it out of
        ``losses`` / ``after_step``)."""

    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient step on ``batch``; returns its loss parts as floats."""
        return {key: float(value) for key, value in self.update_tensors(batch).items()}

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """int64[B]: greedy actions for the states f32[B, S]."""
        obs_BS = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)
        if obs_BS.ndim != 2 or obs_BS.shape[1] != self.obs_dim:
            raise ValueError(f"obs: expected shape [B, {self.obs_dim}], got {tuple(obs_BS.shape)}")
        return self.greedy(obs_BS).to("cpu", torch.int64).numpy()

    def train_steps(
        self, sampler: BatchSampler, steps: int, log_every: int = 100
    ) -> Iterator[tuple[int, dict[str, float]]]:
        """Run ``steps`` updates on batches from ``sampler``; every ``log_every`` steps and after the
        last one, yield ``(step, metrics)`` with the means of the loss parts since the last yield."""
        if steps < 0:
            raise ValueError(f"steps: must be >= 0, got {steps}")
        if log_every < 1:
            raise ValueError(f"log_every: must be >= 1, got {log_every}")
        self.prepare_observation_features(sampler.observations)  # the whole dataset's statistics
        self.prepare_data(sampler)
        sums: dict[str, torch.Tensor] = {}
        count = 0
        for step in range(1, steps + 1):
            for key, value in self.update_tensors(sampler.sample()).items():
                sums[key] = sums[key] + value if key in sums else value
            count += 1
            if step % log_every == 0 or step == steps:
                yield step, {key: float(value) / count for key, value in sums.items()}
                sums, count = {}, 0
