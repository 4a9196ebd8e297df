"""What the latent-space algorithms (latent CQL, latent BCQ) share: the frozen representation,
the latent bound B and the embedding of logged actions.

Plain functions bound as methods by both classes (no second base class): ``attach_latent_space``
in ``__init__``, then ``fit_latent_bound`` / ``embed`` / ``bound_is_set`` / ``_bound``.
"""

from __future__ import annotations

import torch

from merlion_core.representation.base import Representation


def attach_latent_space(algo: torch.nn.Module, representation: Representation | None, latent_bound: float,
                        per_dim: bool = False) -> None:
    """Check and keep ``representation`` (a plain attribute: frozen, not in the state_dict), set
    ``algo.dim`` and register the ``latent_bound`` buffer (0 = derive it from the data; ``per_dim``:
    one bound per latent dimension, a [dim] buffer, derived from the data)."""
    name = type(algo).__name__
    if representation is None:
        raise ValueError(f"{name}: needs a trained `representation` (it defines the latent action space)")
    if representation.n_actions != algo.n_actions or representation.obs_dim != algo.obs_dim:
        raise ValueError(f"{name}: representation is for {representation.n_actions} actions / obs_dim "
                         f"{representation.obs_dim}, the algorithm for {algo.n_actions} / {algo.obs_dim}")
    object.__setattr__(algo, "representation", representation.to(algo.device).eval())
    algo.dim = int(representation.dim)
    if per_dim and latent_bound > 0:
        raise ValueError(f"{name}: latent_bound_per_dim derives the bounds from the data; leave latent_bound at 0")
    algo.register_buffer("latent_bound", torch.zeros(algo.dim) if per_dim else torch.tensor(float(latent_bound)))
    algo._bound_known = latent_bound > 0  # host-side cache: no device sync per step
    algo.register_load_state_dict_post_hook(lambda module, _keys: setattr(module, "_bound_known", False))


@torch.no_grad()
def fit_latent_bound(self, e_data: torch.Tensor) -> float:
    """Set B = 1.1 max |e| over a sample of logged latents ``e_data`` [N, dim] (a [dim] bound:
    B_d = 1.1 max |e_d| per dimension); returns the largest B."""
    if e_data.ndim != 2 or e_data.shape[1] != self.dim or e_data.shape[0] == 0:
        raise ValueError(f"fit_latent_bound: expected [N>0, {self.dim}] latents, got {tuple(e_data.shape)}")
    bound = 1.1 * (e_data.abs().amax(0) if self.latent_bound.ndim else e_data.abs().max())
    if not bool(torch.isfinite(bound).all()) or not bool((bound > 0).all()):
        raise ValueError(f"fit_latent_bound: the latents give an unusable bound {bound.tolist()}")
    self.latent_bound.copy_(bound)
    self._bound_known = True
    return float(bound.max())


@torch.no_grad()
def embed(self, obs_BS: torch.Tensor, act_B: torch.Tensor) -> torch.Tensor:
    """e = phi(a; s) of logged actions, from the frozen representation."""
    return self.representation.embed(obs_BS, act_B).float()


def bound_is_set(self) -> bool:
    """Whether B > 0 (given in the config, fitted, or loaded)."""
    if not self._bound_known:
        self._bound_known = bool((self.latent_bound > 0).all())
    return self._bound_known


def bound(self) -> torch.Tensor:
    """B as a tensor (scalar, or [dim] per dimension); a clear error when it was never set."""
    if not bound_is_set(self):
        raise RuntimeError(f"{type(self).__name__}: latent_bound is not set; call fit_latent_bound(e_data) "
                           "or give config.latent_bound > 0")
    return self.latent_bound
