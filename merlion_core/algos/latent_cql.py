"""Continuous CQL on latent actions (MERLION paper, Alg. 1 / Eq. 1; Kumar et al. 2020, CQL(H) with SAC).

The logged discrete actions are mapped to latent actions e = phi(a; s) by a fixed, already
trained :class:`~merlion_core.representation.base.Representation`. SAC with the CQL(H)
regulariser then learns, in that latent space,

* a tanh-Gaussian actor  s -> e_hat in [-B, B]^dim  (B = ``latent_bound``, derived from the data),
* twin critics Q_1, Q_2(s, e) with Polyak-averaged targets,
* the SAC entropy temperature alpha_ent = exp(log_alpha), tuned towards entropy -dim.

Losses (one step, all from the same parameters; each part trains only its own parameters):

* critic:  sum_i MSE(Q_i(s, e_data), y) + alpha * sum_i cql_h_term(...) with
  y = r + gamma (1 - done) (min_i Q'_i(s', e') - alpha_ent log pi(e' | s')),  e' ~ pi(s');
  the CQL(H) log-sum-exp is importance-sampled over ``n_random`` uniform latents in [-B, B]^dim
  and ``n_policy`` policy samples at s and at s' (all valued at s), as in the authors' code.
* actor:   E[alpha_ent log pi(e | s) - min_i Q_i(s, e)],  e ~ pi(s) reparameterised; the critics
  are evaluated with detached weights, so no gradient reaches them.
* temperature: -E[log_alpha (log pi(e | s) + target_entropy)] (log pi detached).

The three losses are summed into ``loss``; since their parameter sets are disjoint and their
graphs do not cross, one backward + one Adam with a param group per part (policy lr, Q lr,
entropy lr) equals three separate optimizers. Acting: the actor's mean latent B tanh(mu(s)) is mapped to the
nearest action under L1 over every action's phi(a; s) (Eq. 1, :func:`l1_nearest`).

Each network runs once per role in a step (one actor pass for all gradient-free samples, one
critic pass over the logged, uniform and policy latents): a third fewer operations than a call
per term (721 -> 487 per step), and on a GPU a step costs about its operation count
(models/cuda_graph.py). The state's part of each network is computed once per state, not once
per sampled latent: the actor runs on s and s' and its mu, sigma are repeated for the m samples;
the critics' first layer splits into W_s features(s) + W_e e (:func:`feature_mlp_repeated`).
The function is the same; on a CPU the step is about twice as fast (bench/latent_step.py).

The representation is kept as a plain attribute, not a submodule: the agent's ``state_dict``
(its checkpoint) holds only the RL networks and ``latent_bound``; load it into an instance
built with the same representation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from merlion_core.algos import latent
from merlion_core.algos.latent import attach_latent_space
from merlion_core.algos.base import OfflineAlgorithm, frozen_copy, polyak_update, seeded
from merlion_core.data.sampler import Batch
from merlion_core.lookup import l1_nearest
from merlion_core.models.obs_features import (ObservationFeatures, check_feature_options, feature_mlp,
                                              feature_mlp_repeated)
from merlion_core.representation.base import Representation

LOG_STD_MIN = -20.0
LOG_STD_MAX = 2.0


@dataclass(frozen=True)
class LatentCQLConfig:
    """Continuous CQL(H) + SAC on the latent actions of a fixed action representation."""

    alpha: float = 5.0
    """alpha: weight of the CQL(H) term (authors' Gym-MuJoCo setting without Lagrange tuning: 5.0)."""
    n_random: int = 10
    """Uniform random latents per state in the importance-sampled log-sum-exp."""
    n_policy: int = 10
    """Policy samples per state, at s and again at s', in the importance-sampled log-sum-exp."""
    gamma: float = 0.99
    """gamma: discount factor."""
    policy_lr: float = 1e-4
    """Adam learning rate of the actor."""
    q_lr: float = 3e-4
    """Adam learning rate of the twin critics."""
    entropy_lr: float = 1e-4
    """Adam learning rate of log_alpha (the authors' code uses the policy lr)."""
    tau: float = 5e-3
    """tau: Polyak rate of the target critics after every step."""
    batch_size: int = 256
    """Transitions per minibatch (read by whoever builds the BatchSampler)."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of the actor and of each critic MLP."""
    latent_bound: float = 0.0
    """B, the actor's output box [-B, B]^dim; 0.0 = derive from the data (1.1 max |e| of logged latents)."""
    latent_bound_per_dim: bool = False
    """One B per latent dimension, B_d = 1.1 max |e_d| of logged latents (no paper symbol; docs/deviations.md)."""
    backup_entropy: bool = True
    """Keep the SAC entropy bonus -alpha_ent log pi(e'|s') in the critic's target (False: the plain CQL backup)."""
    auto_entropy: bool = True
    """Tune the SAC temperature towards ``target_entropy``; False keeps it at ``init_entropy_alpha``."""
    target_entropy: float | None = None
    """Target entropy of the automatic tuning; None = -dim (the representation's dimension)."""
    init_entropy_alpha: float = 1.0
    """Initial (or, without tuning, fixed) SAC temperature alpha_ent."""
    fourier_features: int = 32
    """Random Fourier features of the standardised observation fed to every network (0: standardised only)."""
    fourier_scale: float = 3.0
    """Standard deviation of the random Fourier frequencies (models/obs_features.py)."""
    seed: int = 0
    """Seed of the network initialisation and of the losses' sampling noise stream."""

    def __post_init__(self) -> None:
        check_feature_options(self.fourier_features, self.fourier_scale)
        if self.alpha < 0:
            raise ValueError(f"alpha: must be >= 0, got {self.alpha}")
        if self.n_random < 1 or self.n_policy < 1:
            raise ValueError(f"n_random, n_policy: must be >= 1, got {self.n_random}, {self.n_policy}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma: must be in [0, 1], got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau: must be in (0, 1], got {self.tau}")
        for name in ("policy_lr", "q_lr", "entropy_lr", "init_entropy_alpha"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.latent_bound < 0:
            raise ValueError(f"latent_bound: must be >= 0 (0 = from the data), got {self.latent_bound}")


def cql_h_term(q_rand_BN: torch.Tensor, log_density_rand_BN: torch.Tensor, q_pi_BM: torch.Tensor,
               log_pi_BM: torch.Tensor, q_data_B: torch.Tensor) -> torch.Tensor:
    """E_s[logsumexp(Q(s, e_rand) - log u(e_rand), Q(s, e_pi) - log pi(e_pi | s)) - Q(s, e_data)].

    The importance-sampled CQL(H) estimate (Kumar et al. 2020, App. F): the log-sum-exp runs over
    the N random and M policy samples of each state together; the result is the batch mean.
    """
    logits_BK = torch.cat([q_rand_BN - log_density_rand_BN, q_pi_BM - log_pi_BM], dim=1)
    return (torch.logsumexp(logits_BK, dim=1) - q_data_B).mean()


class TanhGaussianActor(nn.Module):
    """pi(e | s): e = B tanh(u), u ~ N(mu(s), sigma(s)^2) per latent dimension."""

    def __init__(self, features: ObservationFeatures, hidden: tuple[int, ...], dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.net = feature_mlp(features, 0, hidden, 2 * dim)

    def forward(self, obs_BS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu_BD, log_std_BD = self.net(obs_BS).chunk(2, dim=-1)
        return mu_BD, log_std_BD.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs_BS: torch.Tensor, bound: torch.Tensor,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(e_BD, log pi(e | s)_B), reparameterised (differentiable in the actor's weights)."""
        return self.sample_from(*self(obs_BS), bound, generator)

    @staticmethod
    def sample_from(mu_BD: torch.Tensor, log_std_BD: torch.Tensor, bound: torch.Tensor,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`sample` given the actor's outputs (rows may repeat a state's mu and log sigma)."""
        noise_BD = torch.randn(mu_BD.shape, generator=generator, device=mu_BD.device, dtype=mu_BD.dtype)
        u_BD = mu_BD + log_std_BD.exp() * noise_BD
        log_normal_BD = -0.5 * noise_BD**2 - log_std_BD - 0.5 * math.log(2 * math.pi)
        # log |d e / d u| = log B + log(1 - tanh(u)^2) = log B + 2 (log 2 - u - softplus(-2u))  (stable)
        log_jac_BD = torch.log(bound) + 2.0 * (math.log(2.0) - u_BD - F.softplus(-2.0 * u_BD))
        return bound * torch.tanh(u_BD), (log_normal_BD - log_jac_BD).sum(-1)

    def mean(self, obs_BS: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
        """The deterministic latent B tanh(mu(s))."""
        return bound * torch.tanh(self(obs_BS)[0])


class TwinCritic(nn.Module):
    """Q_1, Q_2(s, e) -> [2, X]."""

    def __init__(self, features: ObservationFeatures, hidden: tuple[int, ...], dim: int) -> None:
        super().__init__()
        self.q1 = feature_mlp(features, dim, hidden, 1)
        self.q2 = feature_mlp(features, dim, hidden, 1)

    def forward(self, obs_BS: torch.Tensor, e_XD: torch.Tensor, repeats: tuple[int, ...] = (1,)) -> torch.Tensor:
        """Rows of ``e_XD`` in blocks of ``B * repeats[k]``, each state with its ``repeats[k]``
        consecutive latents (:func:`feature_mlp_repeated`; the default pairs row b with state b)."""
        return torch.stack([feature_mlp_repeated(q, obs_BS, e_XD, repeats).squeeze(-1) for q in (self.q1, self.q2)])


class LatentCQL(OfflineAlgorithm):
    """Acts with g(B tanh(mu(s))) = argmin_a ||B tanh(mu(s)) - phi(a; s)||_1 (Eq. 1)."""

    def __init__(self, config: LatentCQLConfig, n_actions: int, obs_dim: int, device: str = "auto",
                 representation: Representation | None = None) -> None:
        super().__init__(config, n_actions, obs_dim, device)
        attach_latent_space(self, representation, config.latent_bound, config.latent_bound_per_dim)
        self.target_entropy = float(-self.dim if config.target_entropy is None else config.target_entropy)
        with seeded(config.seed):
            features = self.observation_features()
            self.actor = TanhGaussianActor(features, tuple(config.hidden), self.dim)
            self.critic = TwinCritic(features, tuple(config.hidden), self.dim)
        self.critic_target = frozen_copy(self.critic)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(config.init_entropy_alpha)),
                                      requires_grad=config.auto_entropy)
        self.to(self.device)
        # Sampling noise of the losses comes from this seeded stream, not from the global RNG
        # (not part of the checkpoint: a loaded agent acts identically, its noise restarts).
        self.generator = torch.Generator(device=self.device).manual_seed(int(config.seed) + 1)

    def make_optimizer(self) -> torch.optim.Optimizer:
        """One Adam, a param group per part: actor (policy_lr), critics (q_lr), log_alpha (entropy_lr)."""
        groups = [{"params": list(self.actor.parameters()), "lr": self.config.policy_lr},
                  {"params": list(self.critic.parameters()), "lr": self.config.q_lr}]
        if self.log_alpha.requires_grad:
            groups.append({"params": [self.log_alpha], "lr": self.config.entropy_lr})
        return torch.optim.Adam(groups)

    # --- latent space (shared with the other latent algorithm: merlion_core/algos/latent.py) ---
    fit_latent_bound = latent.fit_latent_bound
    embed = latent.embed
    bound_is_set = property(latent.bound_is_set)
    _bound = latent.bound

    # --- losses ---------------------------------------------------------------------------------
    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.config
        e_data_BD = self.embed(batch.obs, batch.act)
        if not self.bound_is_set:  # not fitted: derive B from the first batch's latents
            self.fit_latent_bound(e_data_BD)
        bound = self._bound()
        alpha_ent = self.log_alpha.exp().detach()
        b = batch.obs.shape[0]

        gen = self.generator
        n, m = cfg.n_random, cfg.n_policy
        # policy samples without gradients, from one actor pass over s' and s: e' at s' (the target),
        # and m CQL(H) samples at s and m at s' (valued at s), each state's mu and sigma repeated
        with torch.no_grad():
            mu_2BD, log_std_2BD = self.actor(torch.cat([batch.next_obs, batch.obs]))
            mu_next, mu_cur = mu_2BD.split([b, b])
            log_std_next, log_std_cur = log_std_2BD.split([b, b])
            e_nopg, log_pi_nopg = self.actor.sample_from(
                torch.cat([mu_next, mu_cur.repeat_interleave(m, dim=0), mu_next.repeat_interleave(m, dim=0)]),
                torch.cat([log_std_next, log_std_cur.repeat_interleave(m, dim=0),
                           log_std_next.repeat_interleave(m, dim=0)]), bound, gen)
            e_next_BD, e_cur, e_nxt = e_nopg.split([b, b * m, b * m])
            log_pi_next_B, log_pi_cur, log_pi_nxt = log_pi_nopg.split([b, b * m, b * m])
            q_next_B = self.critic_target(batch.next_obs, e_next_BD).min(0).values
            entropy_bonus_B = alpha_ent * log_pi_next_B if cfg.backup_entropy else torch.zeros_like(q_next_B)
            y_B = batch.rew + cfg.gamma * (1.0 - batch.done) * (q_next_B - entropy_bonus_B)
            # uniform CQL(H) samples in the box [-B, B]^dim (B scalar or per dimension)
            e_rand = (torch.rand(b * n, self.dim, generator=gen, device=self.device) * 2.0 - 1.0) * bound
            log_2b = torch.log(2.0 * bound)
            log_density_rand_BN = (-(log_2b.sum() if bound.ndim else self.dim * log_2b)).expand(b, n)
            log_pi_BM = torch.cat([log_pi_cur.view(b, m), log_pi_nxt.view(b, m)], dim=1)

        # actor sample (reparameterised)
        e_pi_BD, log_pi_B = self.actor.sample(batch.obs, bound, gen)

        # critic loss (gradients only into the critics): every critic input of the step in one pass,
        # each state's part of the first layer computed once for its 1 + n + 2m latents
        q_2N = self.critic(batch.obs, torch.cat([e_data_BD, e_rand, e_cur, e_nxt]), repeats=(1, n, m, m))
        q_data_2B, q_rand_2X, q_cur_2X, q_nxt_2X = q_2N.split([b, b * n, b * m, b * m], dim=1)
        td_loss = F.mse_loss(q_data_2B, y_B.expand_as(q_data_2B), reduction="none").mean(1).sum()
        q_rand_2BN = q_rand_2X.reshape(2, b, n)
        q_pi_2BM = torch.cat([q_cur_2X.reshape(2, b, m), q_nxt_2X.reshape(2, b, m)], dim=2)
        cql_loss = sum(cql_h_term(q_rand_2BN[i], log_density_rand_BN, q_pi_2BM[i], log_pi_BM, q_data_2B[i])
                       for i in range(2))
        critic_loss = td_loss + cfg.alpha * cql_loss

        # actor loss (critics evaluated with detached weights: no gradient reaches them)
        frozen = {k: v.detach() for k, v in self.critic.named_parameters()}
        q_pi_B = functional_call(self.critic, frozen, (batch.obs, e_pi_BD)).min(0).values
        actor_loss = (alpha_ent * log_pi_B - q_pi_B).mean()

        # temperature loss (gradient only into log_alpha)
        if self.log_alpha.requires_grad:
            entropy_loss = -(self.log_alpha * (log_pi_B.detach() + self.target_entropy)).mean()
        else:
            entropy_loss = torch.zeros((), device=self.device)

        loss = critic_loss + actor_loss + entropy_loss
        return {"loss": loss, "critic_loss": critic_loss, "td_loss": td_loss, "cql_loss": cql_loss,
                "actor_loss": actor_loss, "entropy_loss": entropy_loss, "entropy_alpha": alpha_ent,
                "log_pi": log_pi_B.detach().mean(), "q_data": q_data_2B.detach().mean()}

    def after_step(self) -> None:
        polyak_update(self.critic_target, self.critic, self.config.tau)

    def greedy(self, obs_BS: torch.Tensor) -> torch.Tensor:
        e_hat_BD = self.actor.mean(obs_BS, self._bound())
        idx_B1, _ = l1_nearest(e_hat_BD, representation=self.representation, obs_BS=obs_BS)
        return idx_B1[:, 0].to(torch.int64)
