"""What the latent-space algorithms (latent CQL, latent BCQ) share: the frozen representation,
the map between the representation's latents and the actor's box, and real actions' latents.

Two spaces:

* the **representation space**, e = phi(a; s), where the L1 lookup of Eq. 1 runs;
* the **actor space**, x, where the actor, the critics and the VAE work, inside the box
  [-B, B]^dim. ``latent_normalise`` (the default) maps each dimension affinely,
  x_d = (e_d - c_d) / h_d, with c the centre of the data's phi range and h = 1.1 x its half-width:
  the logged latents fill [-1/1.1, 1/1.1]^dim and B = 1, so the tanh bound, CQL's uniform density
  2^-dim and SAC's target entropy -dim keep their meaning in every environment. Without it
  (the earlier tables), x = e and B = 1.1 max |e| (or one B per dimension).

Plain functions bound as methods by both classes (no second base class): ``attach_latent_space``
in ``__init__``, then ``fit_latent_bound`` / ``embed`` / ``to_actor_space`` / ``to_representation_space``
/ ``bound_is_set`` / ``_bound`` / ``prepare_data``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from merlion_core.representation.base import Representation

MARGIN = 1.1
"""The box's margin over the data's range (B = 1.1 max |e|; the normalised range is 1.1 x the data's)."""
FIT_SAMPLE = 20_000
"""Logged (s, a) pairs, evenly spaced over the dataset, that fit the latent map before training."""


class LatentAgent(Protocol):
    """What ``attach_latent_space`` reads and sets on a latent algorithm (LatentCQL, LatentBCQ)."""

    n_actions: int
    obs_dim: int
    device: torch.device
    dim: int
    latent_normalise: bool
    _bound_known: bool

    def register_buffer(self, name: str, tensor: torch.Tensor | None, persistent: bool = True) -> None: ...

    def register_load_state_dict_post_hook(self, hook: Callable[..., None]) -> object: ...


def attach_latent_space(
    algo: LatentAgent,
    representation: Representation | None,
    latent_bound: float,
    per_dim: bool = False,
    normalise: bool = False,
) -> None:
    """Check and keep ``representation`` (a plain attribute: frozen, not in the state_dict), set
    ``algo.dim`` and register the map's buffers: ``latent_bound`` (0 = derive it from the data;
    ``per_dim``: one bound per dimension) and, with ``normalise``, ``latent_center`` and
    ``latent_scale`` (c and h, fitted from the data; the bound is then 1)."""
    name = type(algo).__name__
    if representation is None:
        raise ValueError(f"{name}: needs a trained `representation` (it defines the latent action space)")
    if representation.n_actions != algo.n_actions or representation.obs_dim != algo.obs_dim:
        raise ValueError(
            f"{name}: representation is for {representation.n_actions} actions / obs_dim "
            f"{representation.obs_dim}, the algorithm for {algo.n_actions} / {algo.obs_dim}"
        )
    object.__setattr__(algo, "representation", representation.to(algo.device).eval())
    algo.dim = int(representation.dim)
    if per_dim and latent_bound > 0:
        raise ValueError(f"{name}: latent_bound_per_dim derives the bounds from the data; leave latent_bound at 0")
    if normalise and (per_dim or latent_bound > 0):
        raise ValueError(
            f"{name}: latent_normalise maps the data's range to [-1, 1] itself; "
            "leave latent_bound at 0 and latent_bound_per_dim off"
        )
    algo.latent_normalise = bool(normalise)
    algo.register_buffer("latent_bound", torch.zeros(algo.dim) if per_dim else torch.tensor(float(latent_bound)))
    if normalise:
        algo.register_buffer("latent_center", torch.zeros(algo.dim))
        algo.register_buffer("latent_scale", torch.zeros(algo.dim))
    algo._bound_known = latent_bound > 0  # host-side cache: no device sync per step
    algo.register_load_state_dict_post_hook(lambda module, _keys: setattr(module, "_bound_known", False))


@torch.no_grad()
def fit_latent_bound(self, e_data: torch.Tensor) -> float:
    """Fit the map from a sample of logged latents ``e_data`` [N, dim] in the representation space:
    with ``latent_normalise``, c = (max + min) / 2 and h = 1.1 (max - min) / 2 per dimension and B = 1;
    otherwise B = 1.1 max |e| (a [dim] bound: B_d = 1.1 max |e_d|). Returns the largest B (or h)."""
    if e_data.ndim != 2 or e_data.shape[1] != self.dim or e_data.shape[0] == 0:
        raise ValueError(f"fit_latent_bound: expected [N>0, {self.dim}] latents, got {tuple(e_data.shape)}")
    if self.latent_normalise:
        low, high = e_data.amin(0), e_data.amax(0)
        scale = MARGIN * (high - low) / 2
        if not bool(torch.isfinite(scale).all()):
            raise ValueError(f"fit_latent_bound: the latents give an unusable range {scale.tolist()}")
        # a dimension the data never moves along gets a unit half-width (any x maps to the same e)
        scale = torch.where(scale > 1e-8, scale, torch.ones_like(scale))
        self.latent_center.copy_((high + low) / 2)
        self.latent_scale.copy_(scale)
        self.latent_bound.fill_(1.0)
        self._bound_known = True
        return float(scale.max())
    bound = MARGIN * (e_data.abs().amax(0) if self.latent_bound.ndim else e_data.abs().max())
    if not bool(torch.isfinite(bound).all()) or not bool((bound > 0).all()):
        raise ValueError(f"fit_latent_bound: the latents give an unusable bound {bound.tolist()}")
    self.latent_bound.copy_(bound)
    self._bound_known = True
    return float(bound.max())


@torch.no_grad()
def embed(self, obs_BS: torch.Tensor, act_B: torch.Tensor) -> torch.Tensor:
    """e = phi(a; s) of logged actions, from the frozen representation (the representation space)."""
    return self.representation.embed(obs_BS, act_B).float()


def to_actor_space(self, e_XD: torch.Tensor) -> torch.Tensor:
    """x = (e - c) / h with ``latent_normalise``, else x = e."""
    return (e_XD - self.latent_center) / self.latent_scale if self.latent_normalise else e_XD


def to_representation_space(self, x_XD: torch.Tensor) -> torch.Tensor:
    """e = c + h x with ``latent_normalise``, else e = x (the inverse of :func:`to_actor_space`)."""
    return self.latent_center + self.latent_scale * x_XD if self.latent_normalise else x_XD


@torch.no_grad()
def embed_actions(self, obs_BS: torch.Tensor, act_BK: torch.Tensor) -> torch.Tensor:
    """x[B * K, D]: the actor-space latents of K real actions per state, phi(act_BK[b, k]; s_b),
    rows state-major (state b's K latents consecutive, as :func:`feature_mlp_repeated` expects)."""
    k = act_BK.shape[1]
    e = self.representation.embed(obs_BS.repeat_interleave(k, dim=0), act_BK.reshape(-1)).float()
    return to_actor_space(self, e)


def prepare_data(self, sampler) -> None:
    """Fit the latent map before training from up to ``FIT_SAMPLE`` logged pairs spread evenly over
    the dataset (one batch's range would understate it); a loaded or configured map is kept."""
    if bound_is_set(self):
        return
    n = int(sampler.n)
    idx = torch.linspace(0, n - 1, min(n, FIT_SAMPLE), device=sampler.observations.device).long()
    self.fit_latent_bound(embed(self, sampler.observations[idx], sampler.actions[idx]))


def bound_is_set(self) -> bool:
    """Whether B > 0 (given in the config, fitted, or loaded)."""
    if not self._bound_known:
        self._bound_known = bool((self.latent_bound > 0).all())
    return self._bound_known


def bound(self) -> torch.Tensor:
    """B as a tensor (scalar, or [dim] per dimension); a clear error when it was never set."""
    if not bound_is_set(self):
        raise RuntimeError(
            f"{type(self).__name__}: latent_bound is not set; call fit_latent_bound(e_data) "
            "or give config.latent_bound > 0"
        )
    return self.latent_bound


@torch.no_grad()
def wolpertinger(self, obs_BS: torch.Tensor, x_hat_BD: torch.Tensor, k: int, critic) -> torch.Tensor:
    """i64[B]: among the ``k`` real actions nearest (L1, Eq. 1, in the representation space) to each
    actor-space latent, the one ``critic(obs, x_candidates, repeats=(k,))`` values highest (the
    minimum over the twins); k = 1 is the plain Eq. 1 lookup (Dulac-Arnold et al. 2015)."""
    from merlion_core.lookup import l1_nearest

    k = min(int(k), self.n_actions)
    idx_BK, _ = l1_nearest(
        to_representation_space(self, x_hat_BD), representation=self.representation, obs_BS=obs_BS, k=k
    )
    if k == 1:
        return idx_BK[:, 0]
    q_BK = critic(obs_BS, embed_actions(self, obs_BS, idx_BK), repeats=(k,)).min(0).values.view(-1, k)
    return idx_BK.gather(1, q_BK.argmax(1, keepdim=True))[:, 0]
