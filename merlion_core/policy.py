"""Policies over the real (discrete) action set, and the latent policy of MERLION Eq. 1.

A :class:`Policy` is anything with ``act(obs f32[B, S]) -> int64[B]``. :class:`LatentPolicy`
turns a continuous actor (``obs_BS -> e_hat_BD``) into one: the real action is the L1
nearest neighbour of e_hat among phi(a; s) for every action a at that state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from merlion_core.lookup import l1_nearest
from merlion_core.representation.base import DEFAULT_CHUNK, Representation


@runtime_checkable
class Policy(Protocol):
    """Anything that picks one action id per state of a batch."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        """obs f32[B, S] -> actions int64[B]."""
        ...


class LatentPolicy:
    """g(actor(s)) with g(e_hat) = argmin_a ||e_hat - phi(a; s)||_1 (paper Eq. 1).

    Neither the actor nor the representation is switched to eval mode here: callers that
    use dropout or batch norm should call ``.eval()`` on them first.
    """

    def __init__(
        self,
        actor: Callable[[torch.Tensor], torch.Tensor],
        representation: Representation,
        device: str | torch.device = "cpu",
        chunk: int = DEFAULT_CHUNK,
    ) -> None:
        self.actor = actor
        self.representation = representation
        self.device = torch.device(device)
        self.chunk = int(chunk)

    @property
    def n_actions(self) -> int:
        return self.representation.n_actions

    def act(self, obs: np.ndarray) -> np.ndarray:
        """obs f32[B, S] -> int64[B]: the action nearest (L1) to the actor's latent output."""
        obs = np.asarray(obs, dtype=np.float32)
        if obs.ndim != 2 or obs.shape[1] != self.representation.obs_dim:
            raise ValueError(f"LatentPolicy.act: obs must be [B, {self.representation.obs_dim}], got {obs.shape}")
        with torch.no_grad():
            obs_BS = torch.as_tensor(obs, device=self.device)
            e_hat_BD = self.actor(obs_BS)
            if tuple(e_hat_BD.shape) != (obs.shape[0], self.representation.dim):
                raise ValueError(
                    f"LatentPolicy.act: actor output must be [{obs.shape[0]}, "
                    f"{self.representation.dim}], got {tuple(e_hat_BD.shape)}"
                )
            idx_BK, _ = l1_nearest(e_hat_BD, representation=self.representation, obs_BS=obs_BS, chunk=self.chunk)
        return idx_BK[:, 0].cpu().numpy().astype(np.int64, copy=False)

    def __call__(self, obs: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """The ``(states, rng) -> actions`` form used by ``envs.rollout`` (``rng`` is unused)."""
        return self.act(obs)
