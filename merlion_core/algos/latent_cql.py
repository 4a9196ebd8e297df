"""Continuous CQL on latent actions (MERLION paper, Alg. 1 / Eq. 1; Kumar et al. 2020, CQL(H) with SAC).

The logged discrete actions are mapped to latent actions e = phi(a; s) by a fixed, already
trained :class:`~merlion_core.representation.base.Representation`, then to the actor space
x = (e - c) / h, each dimension's data range mapped to [-1/1.1, 1/1.1] (``latent_normalise``,
:mod:`merlion_core.algos.latent`). SAC with the CQL(H) regulariser then learns, in that space,

* a tanh-Gaussian actor  s -> x_hat in [-B, B]^dim  (B = 1 normalised; else derived from the data),
* twin critics Q_1, Q_2(s, x) with Polyak-averaged targets,
* the SAC entropy temperature alpha_ent = exp(log_alpha), tuned towards entropy -dim.

Losses (one step, all from the same parameters; each part trains only its own parameters):

* critic:  sum_i MSE(Q_i(s, x_data), y) + alpha * sum_i cql_h_term(...) with the deterministic
  backup of the authors' launcher y = r + gamma (1 - done) min_i Q'_i(s', x'), x' ~ pi(s')
  (``backup_entropy`` adds SAC's - alpha_ent log pi(x' | s')); with ``target_on_actions`` x' is
  replaced by phi(a'; s') of the real action the acting rule picks for it. The CQL(H) log-sum-exp
  is importance-sampled over ``n_random`` proposals per state and ``n_policy`` policy samples at s
  and at s' (all valued at s), as in the authors' code. The proposals are, by ``cql_samples``,
  phi(a_j; s) of uniformly drawn real actions (log q = -log |A|: an estimate of the log-sum-exp
  over the real action set) or uniform latents in the box (Kumar et al.); ``n_behaviour`` more
  real actions may be drawn from the representation's behaviour model G(a | s) (log q = log G).
  ``cql_target_gap`` > 0 tunes alpha by the authors' Lagrange rule instead of fixing it.
* actor:   E[alpha_ent log pi(x | s) - min_i Q_i(s, x)],  x ~ pi(s) reparameterised, the critics
  evaluated with detached weights; for its first ``bc_steps`` steps E[alpha_ent log pi(x | s) -
  log pi(x_data | s)] instead (the authors' ``policy_eval_start``).
* temperature: -E[log_alpha (log pi(x | s) + target_entropy)] (log pi detached).

The losses are summed into ``loss``; since their parameter sets are disjoint and their graphs do
not cross, one backward + one Adam with a param group per part equals separate optimizers.
Acting: the Wolpertinger rule over the ``knn_k`` real actions nearest (L1 over every action's
phi(a; s), Eq. 1) to the actor's mean latent c + h B tanh(mu(s)); k = 1 is the paper's lookup.

Each network runs once per role in a step, and the state's part of each network is computed once
per state, not once per sampled latent (:func:`feature_mlp_repeated`; bench/latent_step.py).

The representation is kept as a plain attribute, not a submodule: the agent's ``state_dict``
(its checkpoint) holds only the RL networks and the latent map; load it into an instance
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
from merlion_core.algos.base import OfflineAlgorithm, frozen_copy, polyak_update, seeded
from merlion_core.algos.latent import attach_latent_space
from merlion_core.data.sampler import Batch
from merlion_core.models.obs_features import (
    ObservationFeatures,
    check_feature_options,
    feature_mlp,
    feature_mlp_repeated,
)
from merlion_core.representation.base import Representation

LOG_STD_MIN = -20.0
LOG_STD_MAX = 2.0
CQL_SAMPLES = ("real", "box", "both")


@dataclass(frozen=True)
class LatentCQLConfig:
    """Continuous CQL(H) + SAC on the latent actions of a fixed action representation."""

    alpha: float = 5.0
    """alpha: weight of the CQL(H) term (authors' Gym-MuJoCo setting without Lagrange tuning: 5.0)."""
    cql_target_gap: float = 0.0
    """tau of CQL-Lagrange: alpha tuned so the CQL(H) gap stays at this value (0 = fixed alpha)."""
    n_random: int = 10
    """Proposals per state in the importance-sampled log-sum-exp (real actions or box points: cql_samples)."""
    cql_samples: str = "both"
    """CQL(H) proposals: 'real' = phi(a_j; s), a_j uniform over A; 'box' = uniform latents in [-B, B]^dim; 'both'."""
    n_behaviour: int = 0
    """Extra real actions per state drawn from the representation's G(a|s) for the log-sum-exp (MERLION only)."""
    n_policy: int = 10
    """Policy samples per state, at s and again at s', in the importance-sampled log-sum-exp."""
    gamma: float = 0.99
    """gamma: discount factor."""
    policy_lr: float = 1e-4
    """Adam learning rate of the actor."""
    q_lr: float = 3e-4
    """Adam learning rate of the twin critics (and of alpha's Lagrange multiplier)."""
    entropy_lr: float = 1e-4
    """Adam learning rate of log_alpha (the authors' code uses the policy lr)."""
    tau: float = 5e-3
    """tau: Polyak rate of the target critics after every step."""
    batch_size: int = 256
    """Transitions per minibatch (read by whoever builds the BatchSampler)."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of the actor and of each critic MLP."""
    latent_normalise: bool = True
    """Map each latent dimension's data range affinely to [-1/1.1, 1/1.1], box [-1, 1]^dim (docs/deviations.md)."""
    latent_bound: float = 0.0
    """B without normalisation, the box [-B, B]^dim; 0.0 = derive from the data (1.1 max |e| of logged latents)."""
    latent_bound_per_dim: bool = False
    """Without normalisation: one B per latent dimension, B_d = 1.1 max |e_d| of logged latents."""
    backup_entropy: bool = False
    """Keep SAC's entropy bonus -alpha_ent log pi(x'|s') in the critic's target (authors' default: off)."""
    bc_steps: int = 2000
    """policy_eval_start: the actor clones behaviour, alpha_ent log pi - log pi(x_data|s), for this many first steps."""
    knn_k: int = 1
    """k of the Wolpertinger acting rule: the critic's best of the k actions nearest the actor's latent (1 = Eq. 1)."""
    target_on_actions: bool = False
    """Value the target at phi(a'; s') of the real action the acting rule picks for x' ~ pi(s'), not at x'."""
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
        if self.alpha < 0 or self.cql_target_gap < 0:
            raise ValueError(f"alpha, cql_target_gap: must be >= 0, got {self.alpha}, {self.cql_target_gap}")
        if self.n_random < 1 or self.n_policy < 1 or self.n_behaviour < 0:
            raise ValueError(
                f"n_random, n_policy: must be >= 1 and n_behaviour >= 0, got {self.n_random}, "
                f"{self.n_policy}, {self.n_behaviour}"
            )
        if self.cql_samples not in CQL_SAMPLES:
            raise ValueError(f"cql_samples: one of {', '.join(CQL_SAMPLES)}, got {self.cql_samples!r}")
        if self.bc_steps < 0 or self.knn_k < 1:
            raise ValueError(f"bc_steps: must be >= 0 and knn_k >= 1, got {self.bc_steps}, {self.knn_k}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma: must be in [0, 1], got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau: must be in (0, 1], got {self.tau}")
        for name in ("policy_lr", "q_lr", "entropy_lr", "init_entropy_alpha"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.latent_bound < 0:
            raise ValueError(f"latent_bound: must be >= 0 (0 = from the data), got {self.latent_bound}")


def cql_h_term(
    q_rand_BN: torch.Tensor,
    log_density_rand_BN: torch.Tensor,
    q_pi_BM: torch.Tensor,
    log_pi_BM: torch.Tensor,
    q_data_B: torch.Tensor,
) -> torch.Tensor:
    """E_s[logsumexp(Q(s, e_rand) - log u(e_rand), Q(s, e_pi) - log pi(e_pi | s)) - Q(s, e_data)].

    The importance-sampled CQL(H) estimate (Kumar et al. 2020, App. F): the log-sum-exp runs over
    the N proposal and M policy samples of each state together; the result is the batch mean.
    """
    logits_BK = torch.cat([q_rand_BN - log_density_rand_BN, q_pi_BM - log_pi_BM], dim=1)
    return (torch.logsumexp(logits_BK, dim=1) - q_data_B).mean()


def deterministic_backup(
    rew_B: torch.Tensor, done_B: torch.Tensor, q_next_2B: torch.Tensor, gamma: float
) -> torch.Tensor:
    """y = r + gamma (1 - done) min_i Q'_i(s', x'): CQL's backup without the entropy term (Kumar et al.
    2020, Eq. 3 / their launcher's default)."""
    return rew_B + gamma * (1.0 - done_B) * q_next_2B.min(0).values


def bc_actor_loss(alpha_ent: torch.Tensor, log_pi_B: torch.Tensor, log_pi_data_B: torch.Tensor) -> torch.Tensor:
    """E[alpha_ent log pi(x | s) - log pi(x_data | s)]: the actor's loss in its first ``policy_eval_start``
    steps (Kumar et al.'s released CQL)."""
    return (alpha_ent * log_pi_B - log_pi_data_B).mean()


class TanhGaussianActor(nn.Module):
    """pi(x | s): x = B tanh(u), u ~ N(mu(s), sigma(s)^2) per latent dimension."""

    def __init__(self, features: ObservationFeatures, hidden: tuple[int, ...], dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.net = feature_mlp(features, 0, hidden, 2 * dim)

    def forward(self, obs_BS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu_BD, log_std_BD = self.net(obs_BS).chunk(2, dim=-1)
        return mu_BD, log_std_BD.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(
        self, obs_BS: torch.Tensor, bound: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_BD, log pi(x | s)_B), reparameterised (differentiable in the actor's weights)."""
        mu_BD, log_std_BD = self(obs_BS)
        return self.sample_from(mu_BD, log_std_BD, bound, generator)

    @staticmethod
    def log_prob_u(
        u_BD: torch.Tensor, mu_BD: torch.Tensor, log_std_BD: torch.Tensor, bound: torch.Tensor
    ) -> torch.Tensor:
        """log pi(B tanh(u) | s)_B: the Gaussian density of u less log |d x / d u|."""
        log_normal_BD = -0.5 * ((u_BD - mu_BD) / log_std_BD.exp()) ** 2 - log_std_BD - 0.5 * math.log(2 * math.pi)
        # log |d x / d u| = log B + log(1 - tanh(u)^2) = log B + 2 (log 2 - u - softplus(-2u))  (stable)
        log_jac_BD = torch.log(bound) + 2.0 * (math.log(2.0) - u_BD - F.softplus(-2.0 * u_BD))
        return (log_normal_BD - log_jac_BD).sum(-1)

    @staticmethod
    def sample_from(
        mu_BD: torch.Tensor, log_std_BD: torch.Tensor, bound: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`sample` given the actor's outputs (rows may repeat a state's mu and log sigma)."""
        noise_BD = torch.randn(mu_BD.shape, generator=generator, device=mu_BD.device, dtype=mu_BD.dtype)
        u_BD = mu_BD + log_std_BD.exp() * noise_BD
        return bound * torch.tanh(u_BD), TanhGaussianActor.log_prob_u(u_BD, mu_BD, log_std_BD, bound)

    def log_prob(self, obs_BS: torch.Tensor, x_BD: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
        """log pi(x | s)_B of given latents inside the box (clamped 1e-5 short of its faces)."""
        mu_BD, log_std_BD = self(obs_BS)
        u_BD = torch.atanh((x_BD / bound).clamp(-1.0 + 1e-5, 1.0 - 1e-5))
        return self.log_prob_u(u_BD, mu_BD, log_std_BD, bound)

    def mean(self, obs_BS: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
        """The deterministic latent B tanh(mu(s))."""
        return bound * torch.tanh(self(obs_BS)[0])


class TwinCritic(nn.Module):
    """Q_1, Q_2(s, x) -> [2, X]."""

    def __init__(self, features: ObservationFeatures, hidden: tuple[int, ...], dim: int) -> None:
        super().__init__()
        self.q1 = feature_mlp(features, dim, hidden, 1)
        self.q2 = feature_mlp(features, dim, hidden, 1)

    def forward(self, obs_BS: torch.Tensor, e_XD: torch.Tensor, repeats: tuple[int, ...] = (1,)) -> torch.Tensor:
        """Rows of ``e_XD`` in blocks of ``B * repeats[k]``, each state with its ``repeats[k]``
        consecutive latents (:func:`feature_mlp_repeated`; the default pairs row b with state b)."""
        return torch.stack([feature_mlp_repeated(q, obs_BS, e_XD, repeats).squeeze(-1) for q in (self.q1, self.q2)])


class LatentCQL(OfflineAlgorithm):
    """Acts with the Wolpertinger rule over the ``knn_k`` actions nearest the actor's mean latent (k = 1: Eq. 1)."""

    # set by attach_latent_space (merlion_core/algos/latent.py): the frozen representation and the latent map
    representation: Representation
    dim: int
    latent_normalise: bool
    latent_bound: torch.Tensor
    latent_center: torch.Tensor
    latent_scale: torch.Tensor
    _bound_known: bool
    updates: torch.Tensor

    def __init__(
        self,
        config: LatentCQLConfig,
        n_actions: int,
        obs_dim: int,
        device: str = "auto",
        representation: Representation | None = None,
    ) -> None:
        super().__init__(config, n_actions, obs_dim, device)
        attach_latent_space(
            self, representation, config.latent_bound, config.latent_bound_per_dim, config.latent_normalise
        )
        if config.n_behaviour and not hasattr(self.representation, "behaviour_model"):
            raise ValueError(
                f"n_behaviour: the {self.representation.method} representation has no behaviour "
                "model G(a|s) to draw from (MERLION's has); set n_behaviour=0"
            )
        self.target_entropy = float(-self.dim if config.target_entropy is None else config.target_entropy)
        with seeded(config.seed):
            features = self.observation_features()
            self.actor = TanhGaussianActor(features, tuple(config.hidden), self.dim)
            self.critic = TwinCritic(features, tuple(config.hidden), self.dim)
        self.critic_target = frozen_copy(self.critic)
        self.log_alpha = nn.Parameter(
            torch.tensor(math.log(config.init_entropy_alpha)), requires_grad=config.auto_entropy
        )
        if config.cql_target_gap > 0:  # CQL-Lagrange's log alpha' (trained); otherwise a fixed buffer
            self.log_alpha_prime = nn.Parameter(torch.zeros(()))
        else:
            self.register_buffer("log_alpha_prime", torch.zeros(()))
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))  # gradient steps so far
        self._host_updates: int | None = 0
        self.register_load_state_dict_post_hook(lambda module, _keys: setattr(module, "_host_updates", None))
        self.to(self.device)
        # Sampling noise of the losses comes from this seeded stream, not from the global RNG
        # (not part of the checkpoint: a loaded agent acts identically, its noise restarts).
        self.generator = torch.Generator(device=self.device).manual_seed(int(config.seed) + 1)

    def make_optimizer(self) -> torch.optim.Optimizer:
        """One Adam, a param group per part: actor (policy_lr), critics (q_lr), log_alpha (entropy_lr),
        the Lagrange multiplier (q_lr, when tuned)."""
        groups = [
            {"params": list(self.actor.parameters()), "lr": self.config.policy_lr},
            {"params": list(self.critic.parameters()), "lr": self.config.q_lr},
        ]
        if self.log_alpha.requires_grad:
            groups.append({"params": [self.log_alpha], "lr": self.config.entropy_lr})
        if self.log_alpha_prime.requires_grad:
            groups.append({"params": [self.log_alpha_prime], "lr": self.config.q_lr})
        return torch.optim.Adam(groups, fused=True)

    # --- latent space (shared with the other latent algorithm: merlion_core/algos/latent.py) ---
    fit_latent_bound = latent.fit_latent_bound
    embed = latent.embed
    to_actor_space = latent.to_actor_space
    to_representation_space = latent.to_representation_space
    embed_actions = latent.embed_actions
    prepare_data = latent.prepare_data
    bound_is_set = property(latent.bound_is_set)
    _bound = latent.bound

    @property
    def n_updates(self) -> int:
        """Gradient steps taken (a host-side copy of the ``updates`` buffer: no sync per step)."""
        if self._host_updates is None:
            self._host_updates = int(self.updates)
        return self._host_updates

    @property
    def in_bc_phase(self) -> bool:
        """Whether the next step trains the actor by behaviour cloning (its first ``bc_steps``)."""
        return self.n_updates < self.config.bc_steps

    def graph_phase(self) -> bool:
        return self.in_bc_phase

    def after_host_step(self) -> None:
        self._host_updates = self.n_updates + 1
        self.updates.fill_(self._host_updates)

    # --- losses ---------------------------------------------------------------------------------
    @property
    def n_proposals(self) -> int:
        """CQL(H) proposals per state: ``n_random`` of each kind in ``cql_samples``, plus ``n_behaviour``."""
        cfg = self.config
        return cfg.n_random * (2 if cfg.cql_samples == "both" else 1) + cfg.n_behaviour

    def cql_proposals(
        self, obs_BS: torch.Tensor, n: int, bound: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x[B * K, D], log q[B, K]): CQL(H)'s proposals at each state, state-major: ``n`` uniform real
        actions' phi(a_j; s) (log q = -log |A|) and / or ``n`` box points (log q = -log vol), by
        ``cql_samples``, then ``n_behaviour`` real actions from G(a|s) (log q = log G(a|s))."""
        b, cfg = obs_BS.shape[0], self.config
        parts, log_qs = [], []
        if cfg.cql_samples in ("real", "both"):
            act_BN = torch.randint(0, self.n_actions, (b, n), generator=gen, device=self.device)
            parts.append(self.embed_actions(obs_BS, act_BN).view(b, n, -1))
            log_qs.append(torch.full((b, n), -math.log(self.n_actions), device=self.device))
        if cfg.cql_samples in ("box", "both"):
            parts.append(
                ((torch.rand(b * n, self.dim, generator=gen, device=self.device) * 2.0 - 1.0) * bound).view(b, n, -1)
            )
            log_2b = torch.log(2.0 * bound)
            log_qs.append((-(log_2b.sum() if bound.ndim else self.dim * log_2b)).expand(b, n))
        if cfg.n_behaviour:
            behaviour_model = self.representation.behaviour_model
            if not isinstance(behaviour_model, nn.Module):
                raise TypeError(f"n_behaviour: the {self.representation.method} representation has no behaviour model")
            log_g_BA = torch.log_softmax(behaviour_model(obs_BS).float(), dim=1)
            act_BM = torch.multinomial(log_g_BA.exp(), cfg.n_behaviour, replacement=True, generator=gen)
            parts.append(self.embed_actions(obs_BS, act_BM).view(b, cfg.n_behaviour, -1))
            log_qs.append(log_g_BA.gather(1, act_BM))
        x = torch.cat(parts, dim=1)
        return x.reshape(b * x.shape[1], -1), torch.cat(log_qs, dim=1)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.config
        e_data_BD = self.embed(batch.obs, batch.act)
        if not self.bound_is_set:  # not fitted (no train_steps): derive the map from the first batch
            self.fit_latent_bound(e_data_BD)
        x_data_BD = self.to_actor_space(e_data_BD)
        bound = self._bound()
        alpha_ent = self.log_alpha.exp().detach()
        b = batch.obs.shape[0]

        gen = self.generator
        n, m = self.n_proposals, cfg.n_policy
        # policy samples without gradients, from one actor pass over s' and s: x' at s' (the target),
        # and m CQL(H) samples at s and m at s' (valued at s), each state's mu and sigma repeated
        with torch.no_grad():
            mu_2BD, log_std_2BD = self.actor(torch.cat([batch.next_obs, batch.obs]))
            mu_next, mu_cur = mu_2BD.split([b, b])
            log_std_next, log_std_cur = log_std_2BD.split([b, b])
            x_nopg, log_pi_nopg = self.actor.sample_from(
                torch.cat([mu_next, mu_cur.repeat_interleave(m, dim=0), mu_next.repeat_interleave(m, dim=0)]),
                torch.cat(
                    [log_std_next, log_std_cur.repeat_interleave(m, dim=0), log_std_next.repeat_interleave(m, dim=0)]
                ),
                bound,
                gen,
            )
            x_next_BD, x_cur, x_nxt = x_nopg.split([b, b * m, b * m])
            log_pi_next_B, log_pi_cur, log_pi_nxt = log_pi_nopg.split([b, b * m, b * m])
            if cfg.target_on_actions:  # the real action the acting rule would take for x'
                a_next_B = latent.wolpertinger(self, batch.next_obs, x_next_BD, cfg.knn_k, self.critic_target)
                x_next_BD = self.embed_actions(batch.next_obs, a_next_B[:, None])
            q_next_2B = self.critic_target(batch.next_obs, x_next_BD)
            y_B = deterministic_backup(batch.rew, batch.done, q_next_2B, cfg.gamma)
            if cfg.backup_entropy:
                y_B = y_B - cfg.gamma * (1.0 - batch.done) * alpha_ent * log_pi_next_B
            x_prop, log_q_BN = self.cql_proposals(batch.obs, cfg.n_random, bound, gen)
            log_pi_BM = torch.cat([log_pi_cur.view(b, m), log_pi_nxt.view(b, m)], dim=1)

        # actor sample (reparameterised)
        x_pi_BD, log_pi_B = self.actor.sample(batch.obs, bound, gen)

        # critic loss (gradients only into the critics): every critic input of the step in one pass,
        # each state's part of the first layer computed once for its 1 + n + 2m latents
        q_2N = self.critic(batch.obs, torch.cat([x_data_BD, x_prop, x_cur, x_nxt]), repeats=(1, n, m, m))
        q_data_2B, q_rand_2X, q_cur_2X, q_nxt_2X = q_2N.split([b, b * n, b * m, b * m], dim=1)
        td_loss = F.mse_loss(q_data_2B, y_B.expand_as(q_data_2B), reduction="none").mean(1).sum()
        q_rand_2BN = q_rand_2X.reshape(2, b, n)
        q_pi_2BM = torch.cat([q_cur_2X.reshape(2, b, m), q_nxt_2X.reshape(2, b, m)], dim=2)
        gaps = [cql_h_term(q_rand_2BN[i], log_q_BN, q_pi_2BM[i], log_pi_BM, q_data_2B[i]) for i in range(2)]
        cql_loss = sum(gaps)
        if not isinstance(cql_loss, torch.Tensor):  # sum() of the two twins' tensors; 0 only for no critics
            raise RuntimeError("latent CQL: no CQL(H) gap terms")
        if self.log_alpha_prime.requires_grad:  # CQL-Lagrange: alpha' >= 0 keeps the gap near the target
            alpha_prime = self.log_alpha_prime.exp().clamp(0.0, 1e6)
            critic_loss = td_loss + alpha_prime.detach() * (cql_loss - 2 * cfg.cql_target_gap)
            alpha_prime_loss = -alpha_prime * (cql_loss.detach() - 2 * cfg.cql_target_gap) / 2
        else:
            alpha_prime = torch.tensor(cfg.alpha, device=self.device)
            critic_loss = td_loss + cfg.alpha * cql_loss
            alpha_prime_loss = torch.zeros((), device=self.device)

        # actor loss (critics evaluated with detached weights: no gradient reaches them)
        if self.in_bc_phase:
            actor_loss = bc_actor_loss(alpha_ent, log_pi_B, self.actor.log_prob(batch.obs, x_data_BD, bound))
        else:
            frozen = {k: v.detach() for k, v in self.critic.named_parameters()}
            q_pi_B = functional_call(self.critic, frozen, (batch.obs, x_pi_BD)).min(0).values
            actor_loss = (alpha_ent * log_pi_B - q_pi_B).mean()

        # temperature loss (gradient only into log_alpha)
        if self.log_alpha.requires_grad:
            entropy_loss = -(self.log_alpha * (log_pi_B.detach() + self.target_entropy)).mean()
        else:
            entropy_loss = torch.zeros((), device=self.device)

        loss = critic_loss + actor_loss + entropy_loss + alpha_prime_loss
        return {
            "loss": loss,
            "critic_loss": critic_loss,
            "td_loss": td_loss,
            "cql_loss": cql_loss,
            "actor_loss": actor_loss,
            "entropy_loss": entropy_loss,
            "entropy_alpha": alpha_ent,
            "cql_alpha": alpha_prime.detach(),
            "log_pi": log_pi_B.detach().mean(),
            "q_data": q_data_2B.detach().mean(),
            "target": y_B.mean(),
        }

    def after_step(self) -> None:
        polyak_update(self.critic_target, self.critic, self.config.tau)

    def latent_policy(self, obs_BS: torch.Tensor) -> torch.Tensor:
        """The actor's deterministic latent B tanh(mu(s)), in the actor space."""
        return self.actor.mean(obs_BS, self._bound())

    def greedy(self, obs_BS: torch.Tensor) -> torch.Tensor:
        return latent.wolpertinger(self, obs_BS, self.latent_policy(obs_BS), self.config.knn_k, self.critic)
