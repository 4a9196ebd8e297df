"""Continuous BCQ on latent actions (MERLION paper, Alg. 1 / Eq. 1; Fujimoto et al. 2019, BCQ).

The logged discrete actions are mapped to latent actions e = phi(a; s) by a fixed, already
trained :class:`~merlion_core.representation.base.Representation`. BCQ then learns, in that
latent space (B = ``latent_bound``, derived from the data):

* a conditional VAE G(e | s): encoder (s, e) -> N(mu, sigma^2) over z (size 2 x dim by default),
  decoder (s, z) -> B tanh(.); at generation time z ~ N(0, 1) clipped to [-z_clip, z_clip],
* a perturbation actor xi(s, e) = phi B tanh(.), its output e + xi clipped to [-B, B],
* twin critics Q_1, Q_2(s, e); actor and critics have Polyak-averaged targets.

Losses (one step, all from the same parameters; each part trains only its own parameters):

* vae:    MSE(decode(s, z), e_data) + kl_weight * KL(N(mu, sigma^2) || N(0, 1)) (the authors'
  per-element means),
* critic: sum_i MSE(Q_i(s, e_data), y) with y = r + gamma (1 - done) max_j [lam min_i Q'_i(s', e'_j)
  + (1 - lam) max_i Q'_i(s', e'_j)] over ``n_target_samples`` perturbed VAE samples e'_j at s'
  (target actor, no gradients),
* actor:  -E[Q_1(s, xi-perturbed VAE decode at s)]; the VAE sample is detached and the critic is
  evaluated with detached weights, so only the actor receives gradients.

They are summed into ``loss``; their parameter sets are disjoint and their graphs do not cross, so
one backward + one Adam with a param group per part equals three separate optimizers. Acting:
``n_act_samples`` VAE samples per state are perturbed by the actor, the one with the largest Q_1
is kept (:meth:`LatentBCQ.select_latent`) and mapped to the nearest action under L1 over every
action's phi(a; s) (Eq. 1, :func:`l1_nearest`). The acting noise is a fixed set of z's, redrawn
from ``act_seed`` at each call and shared by the states of the batch, so an action is a
deterministic function of its state and the weights. Where a state meets several latents (the
n target samples, the acting candidates), the state's part of each network's first layer is
computed once per state and repeated (:func:`feature_mlp_repeated`): the same function, on a CPU
a dialogue-shaped step 1.3 times and acting about 1.4 times as fast (bench/latent_step.py).

The representation is kept as a plain attribute, not a submodule: the agent's ``state_dict``
(its checkpoint) holds only the RL networks and ``latent_bound``; load it into an instance
built with the same representation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from merlion_core.algos import latent
from merlion_core.algos.base import OfflineAlgorithm, frozen_copy, polyak_update, seeded
from merlion_core.algos.latent import attach_latent_space
from merlion_core.data.sampler import Batch
from merlion_core.lookup import l1_nearest
from merlion_core.models.obs_features import (
    ObservationFeatures,
    check_feature_options,
    feature_mlp,
    feature_mlp_repeated,
)
from merlion_core.representation.base import Representation

VAE_LOG_STD_MIN = -4.0
VAE_LOG_STD_MAX = 15.0


@dataclass(frozen=True)
class LatentBCQConfig:
    """Continuous BCQ on the latent actions of a fixed action representation."""

    lr: float = 1e-3
    """Adam learning rate of the VAE, the perturbation actor and the twin critics."""
    batch_size: int = 100
    """Transitions per minibatch (read by whoever builds the BatchSampler)."""
    gamma: float = 0.99
    """gamma: discount factor."""
    tau: float = 5e-3
    """tau: Polyak rate of the target actor and target critics after every step."""
    hidden_vae: tuple[int, ...] = (750, 750)
    """Hidden layer sizes of the VAE's encoder and of its decoder."""
    hidden_actor: tuple[int, ...] = (400, 300)
    """Hidden layer sizes of the perturbation actor."""
    hidden_critic: tuple[int, ...] = (400, 300)
    """Hidden layer sizes of each critic MLP."""
    vae_latent_dim: int | None = None
    """Size of the VAE's z; None = 2 x dim (the representation's dimension)."""
    z_clip: float = 0.5
    """Generated z ~ N(0, 1) is clipped to [-z_clip, z_clip] at decode time."""
    kl_weight: float = 0.5
    """Weight of the KL term in the VAE loss."""
    phi: float = 0.05
    """Perturbation scale: the actor adds at most phi * B per latent dimension."""
    lam: float = 0.75
    """lambda of the soft clipped double Q target: lam * min + (1 - lam) * max."""
    n_target_samples: int = 10
    """Perturbed VAE samples per next state in the critic target (the max over them is kept)."""
    n_act_samples: int = 100
    """Perturbed VAE samples per state when acting (the one with the largest Q_1 is kept)."""
    candidates: str = "vae"
    """Candidates: 'vae', perturbed VAE samples (Fujimoto et al.); 'behaviour', real actions with G(a|s)/max G > tau."""
    behaviour_tau: float = 0.3
    """tau of 'behaviour' candidates: the n_act_samples (n_target_samples) likeliest under G, kept if G/max G > tau."""
    latent_normalise: bool = True
    """Map each latent dimension's data range affinely to [-1/1.1, 1/1.1], box [-1, 1]^dim (docs/deviations.md)."""
    latent_bound: float = 0.0
    """B without normalisation, the box [-B, B]^dim; 0.0 = derive from the data (1.1 max |e| of logged latents)."""
    latent_bound_per_dim: bool = False
    """Without normalisation: one B per latent dimension, B_d = 1.1 max |e_d| of logged latents."""
    fourier_features: int = 32
    """Random Fourier features of the standardised observation fed to every network (0: standardised only)."""
    fourier_scale: float = 3.0
    """Standard deviation of the random Fourier frequencies (models/obs_features.py)."""
    seed: int = 0
    """Seed of the network initialisation and of the losses' sampling noise stream."""
    act_seed: int = 0
    """Seed of the acting noise, redrawn at every call (actions are deterministic given the weights)."""

    def __post_init__(self) -> None:
        check_feature_options(self.fourier_features, self.fourier_scale)
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma: must be in [0, 1], got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau: must be in (0, 1], got {self.tau}")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"lam: must be in [0, 1], got {self.lam}")
        if self.lr <= 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.n_target_samples < 1 or self.n_act_samples < 1:
            raise ValueError(
                f"n_target_samples, n_act_samples: must be >= 1, got {self.n_target_samples}, {self.n_act_samples}"
            )
        if self.phi < 0 or self.kl_weight < 0:
            raise ValueError(f"phi, kl_weight: must be >= 0, got {self.phi}, {self.kl_weight}")
        if self.z_clip <= 0:
            raise ValueError(f"z_clip: must be > 0, got {self.z_clip}")
        if self.vae_latent_dim is not None and self.vae_latent_dim < 1:
            raise ValueError(f"vae_latent_dim: must be >= 1 or None, got {self.vae_latent_dim}")
        for name in ("hidden_vae", "hidden_actor", "hidden_critic"):
            if any(int(h) < 1 for h in getattr(self, name)):
                raise ValueError(f"{name}: sizes must be >= 1, got {getattr(self, name)}")
        if self.latent_bound < 0:
            raise ValueError(f"latent_bound: must be >= 0 (0 = from the data), got {self.latent_bound}")
        if self.candidates not in ("vae", "behaviour"):
            raise ValueError(f"candidates: one of vae, behaviour, got {self.candidates!r}")
        if not 0.0 <= self.behaviour_tau < 1.0:
            raise ValueError(f"behaviour_tau: must be in [0, 1), got {self.behaviour_tau}")


# --- small pure pieces -----------------------------------------------------------------------------
def soft_clipped_double_q(q1: torch.Tensor, q2: torch.Tensor, lam: float) -> torch.Tensor:
    """lam * min(q1, q2) + (1 - lam) * max(q1, q2), elementwise (BCQ's target value)."""
    return lam * torch.minimum(q1, q2) + (1.0 - lam) * torch.maximum(q1, q2)


def vae_kl(mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Mean over elements of KL(N(mean, exp(log_std)^2) || N(0, 1)) (the authors' estimate)."""
    return (-0.5 * (1.0 + 2.0 * log_std - mean.pow(2) - (2.0 * log_std).exp())).mean()


def bcq_target(
    q_next_2BN: torch.Tensor,
    rew_B: torch.Tensor,
    done_B: torch.Tensor,
    gamma: float,
    lam: float,
    allowed_BN: torch.Tensor | None = None,
) -> torch.Tensor:
    """y = r + gamma (1 - done) max_j soft_clipped_double_q(Q'_1, Q'_2)(s', e'_j); q_next is [2, B, N];
    the max runs over the candidates ``allowed_BN`` (all when None)."""
    v_BN = soft_clipped_double_q(q_next_2BN[0], q_next_2BN[1], lam)
    if allowed_BN is not None:
        v_BN = v_BN.masked_fill(~allowed_BN, -torch.inf)
    v_B = v_BN.max(dim=1).values
    return rew_B + gamma * (1.0 - done_B) * v_B


def perturb(e_BD: torch.Tensor, raw_BD: torch.Tensor, phi: float, bound: torch.Tensor) -> torch.Tensor:
    """(e + phi B tanh(raw)) clipped to [-B, B]."""
    out = e_BD + phi * bound * torch.tanh(raw_BD)
    return torch.maximum(torch.minimum(out, bound), -bound)


# --- networks ---------------------------------------------------------------------------------------
class LatentVAE(nn.Module):
    """G(e | s): encoder (s, e) -> (mu, log_std) of z; decoder (s, z) -> B tanh(.) in [-B, B]^dim."""

    def __init__(self, features: ObservationFeatures, hidden: tuple[int, ...], dim: int, z_dim: int) -> None:
        super().__init__()
        self.dim, self.z_dim = dim, z_dim
        self.encoder = feature_mlp(features, dim, hidden, 2 * z_dim)
        self.decoder = feature_mlp(features, z_dim, hidden, dim)

    def encode(self, obs_BS: torch.Tensor, e_BD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean_BZ, log_std_BZ = self.encoder(torch.cat([obs_BS, e_BD], dim=-1)).chunk(2, dim=-1)
        return mean_BZ, log_std_BZ.clamp(VAE_LOG_STD_MIN, VAE_LOG_STD_MAX)

    def decode(
        self, obs_BS: torch.Tensor, z_XZ: torch.Tensor, bound: torch.Tensor, repeats: tuple[int, ...] = (1,)
    ) -> torch.Tensor:
        """B tanh(decoder(s, z)); ``repeats`` as in :func:`feature_mlp_repeated` (default: row b at state b)."""
        return bound * torch.tanh(feature_mlp_repeated(self.decoder, obs_BS, z_XZ, repeats))

    def forward(
        self, obs_BS: torch.Tensor, e_BD: torch.Tensor, bound: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction, mean, log_std), z reparameterised."""
        mean_BZ, log_std_BZ = self.encode(obs_BS, e_BD)
        noise = torch.randn(mean_BZ.shape, generator=generator, device=mean_BZ.device, dtype=mean_BZ.dtype)
        return self.decode(obs_BS, mean_BZ + log_std_BZ.exp() * noise, bound), mean_BZ, log_std_BZ

    def sample(
        self,
        obs_BS: torch.Tensor,
        bound: torch.Tensor,
        z_clip: float,
        generator: torch.Generator | None = None,
        per_state: int = 1,
    ) -> torch.Tensor:
        """``per_state`` generated latents per state, [B * per_state, dim] (state b's rows together):
        decode(s, clip(z, -z_clip, z_clip)), z ~ N(0, 1)."""
        z = torch.randn(
            obs_BS.shape[0] * per_state, self.z_dim, generator=generator, device=obs_BS.device, dtype=obs_BS.dtype
        ).clamp(-z_clip, z_clip)
        return self.decode(obs_BS, z, bound, (per_state,))


class PerturbationActor(nn.Module):
    """xi(s, e): (e + phi B tanh(f(s, e))) clipped to [-B, B]."""

    def __init__(self, features: ObservationFeatures, hidden: tuple[int, ...], dim: int, phi: float) -> None:
        super().__init__()
        self.phi = float(phi)
        self.net = feature_mlp(features, dim, hidden, dim)

    def forward(
        self, obs_BS: torch.Tensor, e_XD: torch.Tensor, bound: torch.Tensor, repeats: tuple[int, ...] = (1,)
    ) -> torch.Tensor:
        return perturb(e_XD, feature_mlp_repeated(self.net, obs_BS, e_XD, repeats), self.phi, bound)


class TwinCritic(nn.Module):
    """Q_1, Q_2(s, e) -> [2, X]."""

    def __init__(self, features: ObservationFeatures, hidden: tuple[int, ...], dim: int) -> None:
        super().__init__()
        self.q1 = feature_mlp(features, dim, hidden, 1)
        self.q2 = feature_mlp(features, dim, hidden, 1)

    def forward(self, obs_BS: torch.Tensor, e_XD: torch.Tensor, repeats: tuple[int, ...] = (1,)) -> torch.Tensor:
        """``repeats`` as in :func:`feature_mlp_repeated` (default: row b at state b)."""
        return torch.stack([feature_mlp_repeated(q, obs_BS, e_XD, repeats).squeeze(-1) for q in (self.q1, self.q2)])


class LatentBCQ(OfflineAlgorithm):
    """Acts with g(e*) = argmin_a ||e* - phi(a; s)||_1 (Eq. 1), e* the best perturbed VAE sample by Q_1."""

    # set by attach_latent_space (merlion_core/algos/latent.py): the frozen representation and the latent map
    representation: Representation
    dim: int
    latent_normalise: bool
    latent_bound: torch.Tensor
    latent_center: torch.Tensor
    latent_scale: torch.Tensor
    _bound_known: bool

    def __init__(
        self,
        config: LatentBCQConfig,
        n_actions: int,
        obs_dim: int,
        device: str = "auto",
        representation: Representation | None = None,
    ) -> None:
        super().__init__(config, n_actions, obs_dim, device)
        attach_latent_space(
            self, representation, config.latent_bound, config.latent_bound_per_dim, config.latent_normalise
        )
        if config.candidates == "behaviour" and not hasattr(self.representation, "behaviour_model"):
            raise ValueError(
                f"candidates='behaviour': the {self.representation.method} representation has no "
                "behaviour model G(a|s) (MERLION's has); use candidates='vae'"
            )
        self.z_dim = int(2 * self.dim if config.vae_latent_dim is None else config.vae_latent_dim)
        with seeded(config.seed):
            features = self.observation_features()
            self.vae = LatentVAE(features, tuple(config.hidden_vae), self.dim, self.z_dim)
            self.actor = PerturbationActor(features, tuple(config.hidden_actor), self.dim, config.phi)
            self.critic = TwinCritic(features, tuple(config.hidden_critic), self.dim)
        self.actor_target = frozen_copy(self.actor)
        self.critic_target = frozen_copy(self.critic)
        self.to(self.device)
        # Sampling noise of the losses comes from this seeded stream, not from the global RNG
        # (not part of the checkpoint: a loaded agent acts identically, its noise restarts).
        self.generator = torch.Generator(device=self.device).manual_seed(int(config.seed) + 1)

    def make_optimizer(self) -> torch.optim.Optimizer:
        """One Adam, a param group per part: VAE, actor, critics (all at ``lr``, as the authors)."""
        lr = self.config.lr
        return torch.optim.Adam(
            [
                {"params": list(self.vae.parameters()), "lr": lr},
                {"params": list(self.actor.parameters()), "lr": lr},
                {"params": list(self.critic.parameters()), "lr": lr},
            ],
            fused=True,
        )

    # --- latent space (shared with the other latent algorithm: merlion_core/algos/latent.py) ---
    fit_latent_bound = latent.fit_latent_bound
    embed = latent.embed
    to_actor_space = latent.to_actor_space
    to_representation_space = latent.to_representation_space
    prepare_data = latent.prepare_data
    bound_is_set = property(latent.bound_is_set)
    _bound = latent.bound

    # --- losses ---------------------------------------------------------------------------------
    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.config
        e_data_BD = self.embed(batch.obs, batch.act)
        if not self.bound_is_set:  # not fitted (no train_steps): derive the map from the first batch
            self.fit_latent_bound(e_data_BD)
        e_data_BD = self.to_actor_space(e_data_BD)  # the actor space (x = e without normalisation)
        bound = self._bound()
        gen = self.generator
        b = batch.obs.shape[0]

        # VAE loss (gradients only into the VAE; e_data carries none)
        recon_BD, mean_BZ, log_std_BZ = self.vae(batch.obs, e_data_BD, bound, gen)
        recon_loss = F.mse_loss(recon_BD, e_data_BD)
        kl = vae_kl(mean_BZ, log_std_BZ)
        vae_loss = recon_loss + cfg.kl_weight * kl

        # critic target (no gradients): n perturbed VAE samples per next state, max of the soft clip
        with torch.no_grad():
            n = cfg.n_target_samples  # each network's state part once per state, repeated for its n rows
            if cfg.candidates == "behaviour":  # real actions that G finds likely enough at s'
                idx_BN, allowed_BN = self.behaviour_candidates(batch.next_obs, n)
                n = idx_BN.shape[1]
                e_next = latent.embed_actions(self, batch.next_obs, idx_BN)
            else:
                e_next = self.actor_target(
                    batch.next_obs, self.vae.sample(batch.next_obs, bound, cfg.z_clip, gen, n), bound, (n,)
                )
                allowed_BN = None
            q_next_2BN = self.critic_target(batch.next_obs, e_next, (n,)).view(2, b, n)
            y_B = bcq_target(q_next_2BN, batch.rew, batch.done, cfg.gamma, cfg.lam, allowed_BN)

        # critic loss (gradients only into the critics)
        q_data_2B = self.critic(batch.obs, e_data_BD)
        critic_loss = F.mse_loss(q_data_2B, y_B.expand_as(q_data_2B), reduction="none").mean(1).sum()

        # actor loss: VAE sample detached, critic weights detached -> gradients only into the actor
        with torch.no_grad():
            e_gen_BD = self.vae.sample(batch.obs, bound, cfg.z_clip, gen)
        e_pert_BD = self.actor(batch.obs, e_gen_BD, bound)
        frozen = {k: v.detach() for k, v in self.critic.q1.named_parameters()}
        q1_B = functional_call(self.critic.q1, frozen, (torch.cat([batch.obs, e_pert_BD], dim=-1),)).squeeze(-1)
        actor_loss = -q1_B.mean()

        loss = vae_loss + critic_loss + actor_loss
        return {
            "loss": loss,
            "vae_loss": vae_loss,
            "recon_loss": recon_loss.detach(),
            "kl": kl.detach(),
            "critic_loss": critic_loss,
            "actor_loss": actor_loss,
            "q_data": q_data_2B.detach().mean(),
            "target": y_B.mean(),
        }

    def after_step(self) -> None:
        polyak_update(self.critic_target, self.critic, self.config.tau)
        polyak_update(self.actor_target, self.actor, self.config.tau)

    # --- acting ---------------------------------------------------------------------------------
    def act_noise(self) -> torch.Tensor:
        """[n_act_samples, z_dim] clipped z's of acting, drawn afresh from ``act_seed`` (same every call)."""
        cfg = self.config
        gen = torch.Generator(device=self.device).manual_seed(int(cfg.act_seed))
        z = torch.randn(cfg.n_act_samples, self.z_dim, generator=gen, device=self.device)
        return z.clamp(-cfg.z_clip, cfg.z_clip)

    @torch.no_grad()
    def candidates(self, obs_BS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(perturbed latents [B, N, dim], their Q_1 [B, N]) for the N = n_act_samples acting z's."""
        bound = self._bound()
        b, n = obs_BS.shape[0], self.config.n_act_samples
        z = self.act_noise().repeat(b, 1)  # state b's rows: b * n .. b * n + n - 1
        e = self.actor(obs_BS, self.vae.decode(obs_BS, z, bound, (n,)), bound, (n,))
        q1 = self.critic(obs_BS, e, (n,))[0]
        return e.view(b, n, self.dim), q1.view(b, n)

    @torch.no_grad()
    def select_latent(self, obs_BS: torch.Tensor) -> torch.Tensor:
        """[B, dim]: per state, the candidate latent with the largest Q_1 (first on ties)."""
        e_BND, q1_BN = self.candidates(obs_BS)
        best_B = q1_BN.argmax(dim=1)
        return e_BND[torch.arange(obs_BS.shape[0], device=obs_BS.device), best_B]

    def latent_policy(self, obs_BS: torch.Tensor) -> torch.Tensor:
        """The latent the deployed rule looks up (the best candidate), in the actor space."""
        if self.config.candidates == "behaviour":
            return latent.embed_actions(self, obs_BS, self.behaviour_choice(obs_BS)[:, None])
        return self.select_latent(obs_BS)

    @torch.no_grad()
    def behaviour_candidates(self, obs_BS: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids i64[B, K], allowed bool[B, K]): the K = min(k, |A|) actions most likely under the
        representation's G(a|s), allowed where G(a|s) / max G > ``behaviour_tau`` (the first always is)."""
        behaviour_model = self.representation.behaviour_model
        if not isinstance(behaviour_model, nn.Module):
            raise TypeError(
                f"candidates='behaviour': the {self.representation.method} representation has no behaviour model"
            )
        logits_BA = behaviour_model(obs_BS).float()
        top_BK, idx_BK = logits_BA.topk(min(k, self.n_actions), dim=1)
        allowed_BK = (top_BK - top_BK[:, :1]) > torch.log(torch.tensor(self.config.behaviour_tau))
        return idx_BK, allowed_BK

    @torch.no_grad()
    def behaviour_choice(self, obs_BS: torch.Tensor) -> torch.Tensor:
        """i64[B]: the allowed behaviour candidate with the largest Q_1 (``candidates='behaviour'``)."""
        idx_BK, allowed_BK = self.behaviour_candidates(obs_BS, self.config.n_act_samples)
        k = idx_BK.shape[1]
        q1_BK = self.critic(obs_BS, latent.embed_actions(self, obs_BS, idx_BK), (k,))[0].view(-1, k)
        return idx_BK.gather(1, q1_BK.masked_fill(~allowed_BK, -torch.inf).argmax(1, keepdim=True))[:, 0]

    def greedy(self, obs_BS: torch.Tensor) -> torch.Tensor:
        if self.config.candidates == "behaviour":  # a real action already: no lookup
            return self.behaviour_choice(obs_BS)
        e_hat_BD = self.to_representation_space(self.select_latent(obs_BS))
        idx_B1, _ = l1_nearest(e_hat_BD, representation=self.representation, obs_BS=obs_BS)
        return idx_B1[:, 0].to(torch.int64)
