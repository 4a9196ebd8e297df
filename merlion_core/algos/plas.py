"""PLAS (Zhou et al. 2020, public code) for a discrete action set: a latent policy in a CVAE's latent space.

PLAS trains a state-conditional CVAE of the behaviour's actions and then a deterministic
policy s -> z in the CVAE's latent box [-max_latent, max_latent]^k; the action is the
decoder's output D(s, z), so the policy can only produce actions the behaviour model finds
likely. Discrete adaptation (docs/deviations.md):

* the CVAE's encoder q(z | s, a) reads [s, one-hot(a)] (an ``nn.Embedding`` row is the first
  layer's weights times one-hot(a)); its decoder D(s, z) outputs logits over all actions; the
  reconstruction term is cross-entropy instead of MSE (loss = CE + 0.5 KL, as the paper's
  MSE + 0.5 KL);
* twin critics Q_i(s, .) output one value per action; the TD target values the decoded action
  of the target policy, a' = argmax D(s', pi'(s')), with the soft clipped double Q
  (lambda min + (1 - lambda) max of the twin targets);
* the actor maximises the critics' value of the decoder's action distribution,
  E_s[sum_a softmax(D(s, pi(s)))_a Q_1(s, a)] (a differentiable stand-in for Q_1(s, D(s, pi(s))));
  the CVAE is frozen for the actor.

The CVAE, the critics and the actor are trained jointly from the first step (the authors
pre-train the CVAE; ``vae_warmup`` steps train only the CVAE first).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from merlion_core.algos.base import OfflineAlgorithm, frozen_copy, polyak_update, seeded
from merlion_core.data.sampler import Batch
from merlion_core.models.mlp import mlp
from merlion_core.models.obs_features import ObservationFeatures, check_feature_options, feature_mlp


@dataclass(frozen=True)
class PLASConfig:
    """PLAS with the authors' settings, adapted to discrete actions."""

    latent_dim: int = 8
    """k: CVAE latent size (authors: 2 x action size; here 8 for one discrete action)."""
    max_latent: float = 2.0
    """The latent policy's box: z = max_latent * tanh(.) (authors: 2)."""
    kl_weight: float = 0.5
    """Weight of KL(q(z|s,a) || N(0, I)) in the CVAE loss (authors: 0.5)."""
    lmbda: float = 0.75
    """lambda: soft clipped double Q, lambda min + (1 - lambda) max of the twin targets (authors: 0.75)."""
    gamma: float = 0.99
    """gamma: discount factor."""
    actor_lr: float = 1e-4
    """Adam learning rate of the latent policy (authors: 1e-4)."""
    critic_lr: float = 1e-3
    """Adam learning rate of the twin critics (authors: 1e-3)."""
    vae_lr: float = 1e-4
    """Adam learning rate of the CVAE (authors: 1e-4)."""
    tau: float = 0.005
    """Polyak rate of the target actor and critics (authors: 0.005)."""
    vae_warmup: int = 0
    """Steps at the start that train only the CVAE (the authors pre-train it separately)."""
    batch_size: int = 100
    """Transitions per minibatch (authors: 100)."""
    hidden_vae: tuple[int, ...] = (750, 750)
    """Hidden layer sizes of the CVAE encoder and decoder (authors: 750, 750)."""
    hidden_actor: tuple[int, ...] = (400, 300)
    """Hidden layer sizes of the latent policy (authors: 400, 300)."""
    hidden_critic: tuple[int, ...] = (400, 300)
    """Hidden layer sizes of each critic (authors: 400, 300)."""
    fourier_features: int = 32
    """Random Fourier features of the standardised observation fed to every network (0: standardised only)."""
    fourier_scale: float = 3.0
    """Standard deviation of the random Fourier frequencies (models/obs_features.py)."""
    seed: int = 0
    """Seed of the network initialisation."""

    def __post_init__(self) -> None:
        check_feature_options(self.fourier_features, self.fourier_scale)
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim: must be >= 1, got {self.latent_dim}")
        if self.max_latent <= 0:
            raise ValueError(f"max_latent: must be > 0, got {self.max_latent}")
        if not 0.0 <= self.lmbda <= 1.0:
            raise ValueError(f"lmbda: must be in [0, 1], got {self.lmbda}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma: must be in [0, 1], got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau: must be in (0, 1], got {self.tau}")
        if min(self.actor_lr, self.critic_lr, self.vae_lr) <= 0:
            raise ValueError("actor_lr, critic_lr, vae_lr: must be > 0")
        if self.vae_warmup < 0:
            raise ValueError(f"vae_warmup: must be >= 0, got {self.vae_warmup}")


def cvae_loss(
    logits_BA: torch.Tensor, act_B: torch.Tensor, mean_BK: torch.Tensor, log_std_BK: torch.Tensor, kl_weight: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, reconstruction, kl): CE(D(s, z), a) + kl_weight * KL(N(mu, sigma^2) || N(0, I)), batch means."""
    reconstruction = F.cross_entropy(logits_BA, act_B)
    kl = 0.5 * (mean_BK.pow(2) + (2 * log_std_BK).exp() - 1 - 2 * log_std_BK).sum(dim=1).mean()
    return reconstruction + kl_weight * kl, reconstruction, kl


def soft_clipped_double_q(q1_B: torch.Tensor, q2_B: torch.Tensor, lmbda: float) -> torch.Tensor:
    """lambda min(Q1, Q2) + (1 - lambda) max(Q1, Q2) (BCQ / PLAS target)."""
    return lmbda * torch.minimum(q1_B, q2_B) + (1 - lmbda) * torch.maximum(q1_B, q2_B)


class ActionCVAE(nn.Module):
    """q(z | s, a) and D(s, z) -> logits over actions."""

    def __init__(self, features: ObservationFeatures, n_actions: int, latent_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.obs_in = nn.Sequential(features, nn.Linear(features.out_dim, hidden[0]))
        self.action_in = nn.Embedding(n_actions, hidden[0])  # = first layer on one-hot(a), without the bias
        self.encoder_rest = mlp(hidden[0], hidden[1:], 2 * latent_dim)
        self.decoder = feature_mlp(features, latent_dim, hidden, n_actions)
        self.latent_dim = latent_dim

    def encode(self, obs_BS: torch.Tensor, act_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden_BH = F.relu(self.obs_in(obs_BS) + self.action_in(act_B))
        mean_BK, log_std_BK = self.encoder_rest(hidden_BH).chunk(2, dim=1)
        return mean_BK, log_std_BK.clamp(-4.0, 15.0)

    def decode(self, obs_BS: torch.Tensor, z_BK: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([obs_BS, z_BK], dim=1))


class PLAS(OfflineAlgorithm):
    """Acts with argmax D(s, pi(s)): the decoded action of the latent policy."""

    step: torch.Tensor

    def __init__(self, config: PLASConfig, n_actions: int, obs_dim: int, device: str = "auto") -> None:
        super().__init__(config, n_actions, obs_dim, device)
        with seeded(config.seed):
            features = self.observation_features()
            self.cvae = ActionCVAE(features, n_actions, config.latent_dim, config.hidden_vae)
            self.actor = feature_mlp(features, 0, config.hidden_actor, config.latent_dim)
            self.critic1 = feature_mlp(features, 0, config.hidden_critic, n_actions)
            self.critic2 = feature_mlp(features, 0, config.hidden_critic, n_actions)
        self.actor_target = frozen_copy(self.actor)
        self.critic1_target = frozen_copy(self.critic1)
        self.critic2_target = frozen_copy(self.critic2)
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        # host-side copy of ``step`` (re-read after loading weights): no device sync per step on a GPU
        self._steps_done = 0
        self.register_load_state_dict_post_hook(lambda module, _keys: setattr(module, "_steps_done", int(module.step)))
        self.to(self.device)
        # the CVAE's sampling noise comes from this seeded stream, not from the global RNG
        self.generator = torch.Generator(device=self.device).manual_seed(int(config.seed) + 1)

    def make_optimizer(self) -> torch.optim.Optimizer:
        """One Adam, a param group per part: CVAE (vae_lr), actor (actor_lr), twin critics (critic_lr)."""
        cfg = self.config
        return torch.optim.Adam(
            [
                {"params": self.cvae.parameters(), "lr": cfg.vae_lr},
                {"params": self.actor.parameters(), "lr": cfg.actor_lr},
                {"params": list(self.critic1.parameters()) + list(self.critic2.parameters()), "lr": cfg.critic_lr},
            ],
            fused=True,
        )

    def latent_action(self, actor: nn.Module, obs_BS: torch.Tensor) -> torch.Tensor:
        return self.config.max_latent * torch.tanh(actor(obs_BS))

    @torch.no_grad()
    def td_target(self, batch: Batch) -> torch.Tensor:
        """y = r + gamma (1 - done) softclip(Q'_1, Q'_2)(s', argmax D(s', pi'(s')))."""
        z_next_BK = self.latent_action(self.actor_target, batch.next_obs)
        next_act_B1 = self.cvae.decode(batch.next_obs, z_next_BK).argmax(dim=1, keepdim=True)
        q1_B = self.critic1_target(batch.next_obs).gather(1, next_act_B1).squeeze(1)
        q2_B = self.critic2_target(batch.next_obs).gather(1, next_act_B1).squeeze(1)
        return batch.rew + self.config.gamma * (1.0 - batch.done) * soft_clipped_double_q(q1_B, q2_B, self.config.lmbda)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        config = self.config
        mean_BK, log_std_BK = self.cvae.encode(batch.obs, batch.act)
        noise_BK = torch.randn(mean_BK.shape, generator=self.generator, device=mean_BK.device)
        z_BK = mean_BK + log_std_BK.exp() * noise_BK
        vae_loss, reconstruction, kl = cvae_loss(
            self.cvae.decode(batch.obs, z_BK), batch.act, mean_BK, log_std_BK, config.kl_weight
        )
        parts = {"vae_loss": vae_loss, "reconstruction": reconstruction, "kl": kl}
        if self._steps_done < config.vae_warmup:
            return {"loss": vae_loss, **parts}

        y_B = self.td_target(batch)
        act_B1 = batch.act[:, None]
        q1_data_B = self.critic1(batch.obs).gather(1, act_B1).squeeze(1)
        q2_data_B = self.critic2(batch.obs).gather(1, act_B1).squeeze(1)
        critic_loss = F.mse_loss(q1_data_B, y_B) + F.mse_loss(q2_data_B, y_B)

        # actor: the CVAE decoder and the critic are used with frozen weights (no gradient reaches them)
        decoder_params = dict(self.cvae.decoder.named_parameters())
        critic_params = dict(self.critic1.named_parameters())
        z_pi_BK = self.latent_action(self.actor, batch.obs)
        logits_BA = torch.func.functional_call(
            self.cvae.decoder,
            {k: v.detach() for k, v in decoder_params.items()},
            (torch.cat([batch.obs, z_pi_BK], dim=1),),
        )
        q_pi_BA = torch.func.functional_call(
            self.critic1, {k: v.detach() for k, v in critic_params.items()}, (batch.obs,)
        )
        actor_loss = -(F.softmax(logits_BA, dim=1) * q_pi_BA).sum(dim=1).mean()
        return {
            "loss": vae_loss + critic_loss + actor_loss,
            **parts,
            "critic_loss": critic_loss,
            "actor_loss": actor_loss,
            "q_data": q1_data_B.mean(),
        }

    def graph_phase(self) -> bool:
        """The CVAE warm-up (VAE loss only, no target updates) and the rest are two graphs."""
        return self._steps_done < self.config.vae_warmup

    def after_host_step(self) -> None:
        self._steps_done += 1

    def after_step(self) -> None:
        self.step += 1
        if self._steps_done >= self.config.vae_warmup:  # the host count moves on after this step
            polyak_update(self.actor_target, self.actor, self.config.tau)
            polyak_update(self.critic1_target, self.critic1, self.config.tau)
            polyak_update(self.critic2_target, self.critic2, self.config.tau)

    def greedy(self, obs_BS: torch.Tensor) -> torch.Tensor:
        return self.cvae.decode(obs_BS, self.latent_action(self.actor, obs_BS)).argmax(dim=1)
