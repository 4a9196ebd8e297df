"""IQL on latent actions (Kostrikov, Nair & Levine, ICLR 2022, in the MERLION paper's latent space, Eq. 1).

The logged discrete actions are mapped to latent actions e = phi(a; s) by a fixed, already trained
:class:`~merlion_core.representation.base.Representation`, then to the actor space x = (e - c) / h,
each dimension's data range mapped to [-1/1.1, 1/1.1] (``latent_normalise``,
:mod:`merlion_core.algos.latent`). IQL's three losses (the functions of
:mod:`merlion_core.algos.discrete_iql`) then run on x of the logged action only:

* V(s): expectile regression towards min_i Q'_i(s, x_data) of the Polyak-averaged target twins (Eq. 5);
* twin critics Q_i(s, x) (latent CQL's :class:`TwinCritic`): MSE towards r + gamma (1 - done) V(s') (Eq. 6);
* the policy pi(x | s), latent CQL's :class:`TanhGaussianActor` bounded to the box [-B, B]^dim
  (B = 1 normalised): advantage-weighted log-likelihood of the logged latents, weights
  min(exp(beta (min_i Q'_i(s, x_data) - V(s))), max_weight) (Eq. 7); its log sigma is floored at
  ``log_std_min`` in this loss, as the authors' policy floors it, so that a state with one logged
  action cannot drive the likelihood to infinity.

No loss samples the policy or queries Q at a latent the data did not log. The losses are summed
into ``loss``; their parameter sets are disjoint and no gradient crosses, so one backward + one Adam
equals separate optimizers. Acting: the policy's mean latent B tanh(mu(s)), mapped back to the
representation space and looked up to the nearest real action (L1 over every action's phi(a; s),
Eq. 1); ``knn_k`` > 1 keeps the critics' best of the k nearest (Wolpertinger, as latent CQL).

The representation is a plain attribute, not a submodule: the agent's ``state_dict`` holds only the
RL networks and the latent map; load it into an instance built with the same representation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from merlion_core.algos import latent
from merlion_core.algos.base import OfflineAlgorithm, frozen_copy, polyak_update, seeded
from merlion_core.algos.discrete_iql import (
    awr_policy_loss,
    awr_weights,
    check_iql_options,
    q_loss,
    value_backup,
    value_loss,
)
from merlion_core.algos.latent import attach_latent_space
from merlion_core.algos.latent_cql import LOG_STD_MAX, TanhGaussianActor, TwinCritic
from merlion_core.data.sampler import Batch
from merlion_core.models.obs_features import check_feature_options, feature_mlp
from merlion_core.representation.base import Representation


@dataclass(frozen=True)
class LatentIQLConfig:
    """IQL on the latent actions of a fixed action representation: expectile V, twin Q(s, x), AWR policy over x."""

    expectile: float = 0.7
    """tau (IQL Eq. 5): expectile of V; authors 0.7 (locomotion, kitchen, adroit), 0.9 only for antmaze."""
    beta: float = 3.0
    """beta (IQL Eq. 7): inverse temperature of the advantage weights (authors: 3.0 locomotion, 10.0 antmaze)."""
    max_weight: float = 100.0
    """Clip of the advantage weight exp(beta A) (authors' code: 100)."""
    gamma: float = 0.99
    """gamma: discount factor."""
    lr: float = 3e-4
    """Adam learning rate of the critics, V and the policy (authors: 3e-4 for all three)."""
    tau: float = 0.005
    """Polyak rate of the target critics after every step (authors' code: 0.005; not the paper's expectile tau)."""
    batch_size: int = 256
    """Transitions per minibatch (authors: 256; read by whoever builds the BatchSampler)."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of the policy, of V and of each critic MLP (authors: 256, 256)."""
    log_std_min: float = -5.0
    """Floor of the policy's log sigma in the weighted likelihood (authors' policy: -5)."""
    latent_normalise: bool = True
    """Map each latent dimension's data range affinely to [-1/1.1, 1/1.1], box [-1, 1]^dim (docs/deviations.md)."""
    latent_bound: float = 0.0
    """B without normalisation, the box [-B, B]^dim; 0.0 = derive from the data (1.1 max |e| of logged latents)."""
    latent_bound_per_dim: bool = False
    """Without normalisation: one B per latent dimension, B_d = 1.1 max |e_d| of logged latents."""
    knn_k: int = 1
    """k of the Wolpertinger acting rule: the critics' best of the k actions nearest the policy's mean (1 = Eq. 1)."""
    fourier_features: int = 32
    """Random Fourier features of the standardised observation fed to every network (0: standardised only)."""
    fourier_scale: float = 3.0
    """Standard deviation of the random Fourier frequencies (models/obs_features.py)."""
    seed: int = 0
    """Seed of the network initialisation."""

    def __post_init__(self) -> None:
        check_iql_options(self.expectile, self.beta, self.max_weight, self.gamma, self.tau, self.lr)
        check_feature_options(self.fourier_features, self.fourier_scale)
        if self.knn_k < 1:
            raise ValueError(f"knn_k: must be >= 1, got {self.knn_k}")
        if not self.log_std_min < LOG_STD_MAX:
            raise ValueError(f"log_std_min: must be < {LOG_STD_MAX}, got {self.log_std_min}")
        if self.latent_bound < 0:
            raise ValueError(f"latent_bound: must be >= 0 (0 = from the data), got {self.latent_bound}")


class LatentIQL(OfflineAlgorithm):
    """Acts with the real action nearest the policy's mean latent (Eq. 1; Wolpertinger over ``knn_k``)."""

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
        config: LatentIQLConfig,
        n_actions: int,
        obs_dim: int,
        device: str = "auto",
        representation: Representation | None = None,
    ) -> None:
        super().__init__(config, n_actions, obs_dim, device)
        attach_latent_space(
            self, representation, config.latent_bound, config.latent_bound_per_dim, config.latent_normalise
        )
        with seeded(config.seed):
            features = self.observation_features()
            self.actor = TanhGaussianActor(features, tuple(config.hidden), self.dim)
            self.critic = TwinCritic(features, tuple(config.hidden), self.dim)
            self.value = feature_mlp(features, 0, tuple(config.hidden), 1)
        self.critic_target = frozen_copy(self.critic)
        self.to(self.device)

    # --- latent space (shared with the other latent algorithms: merlion_core/algos/latent.py) ---
    fit_latent_bound = latent.fit_latent_bound
    embed = latent.embed
    to_actor_space = latent.to_actor_space
    to_representation_space = latent.to_representation_space
    embed_actions = latent.embed_actions
    prepare_data = latent.prepare_data
    bound_is_set = property(latent.bound_is_set)
    _bound = latent.bound

    def state_value(self, obs_BS: torch.Tensor) -> torch.Tensor:
        """V(s)_B."""
        return self.value(obs_BS).squeeze(-1)

    def policy_log_prob(self, obs_BS: torch.Tensor, x_BD: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
        """log pi(x | s)_B of latents inside the box (clamped 1e-5 short of its faces), log sigma floored
        at ``log_std_min``."""
        mu_BD, log_std_BD = self.actor(obs_BS)
        u_BD = torch.atanh((x_BD / bound).clamp(-1.0 + 1e-5, 1.0 - 1e-5))
        return self.actor.log_prob_u(u_BD, mu_BD, log_std_BD.clamp(min=self.config.log_std_min), bound)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg, b = self.config, batch.obs.shape[0]
        e_data_BD = self.embed(batch.obs, batch.act)
        if not self.bound_is_set:  # not fitted (no train_steps): derive the map from the first batch
            self.fit_latent_bound(e_data_BD)
        x_data_BD = self.to_actor_space(e_data_BD)
        with torch.no_grad():
            q_target_B = self.critic_target(batch.obs, x_data_BD).min(0).values
        v_B, v_next_B = self.state_value(torch.cat([batch.obs, batch.next_obs])).split([b, b])
        y_B = value_backup(batch.rew, batch.done, v_next_B.detach(), cfg.gamma)
        v_loss = value_loss(q_target_B, v_B, cfg.expectile)
        q_data_2B = self.critic(batch.obs, x_data_BD)
        critic_loss = q_loss(q_data_2B, y_B)
        weights_B = awr_weights(q_target_B, v_B, cfg.beta, cfg.max_weight)
        log_pi_B = self.policy_log_prob(batch.obs, x_data_BD, self._bound())
        policy_loss = awr_policy_loss(weights_B, log_pi_B)
        return {
            "loss": v_loss + critic_loss + policy_loss,
            "value_loss": v_loss,
            "q_loss": critic_loss,
            "policy_loss": policy_loss,
            "q_data": q_data_2B.detach().mean(),
            "v_data": v_B.detach().mean(),
            "awr_weight": weights_B.mean(),
            "log_pi_data": log_pi_B.detach().mean(),
        }

    def after_step(self) -> None:
        polyak_update(self.critic_target, self.critic, self.config.tau)

    def latent_policy(self, obs_BS: torch.Tensor) -> torch.Tensor:
        """The policy's mean latent B tanh(mu(s)), in the actor space."""
        return self.actor.mean(obs_BS, self._bound())

    def greedy(self, obs_BS: torch.Tensor) -> torch.Tensor:
        return latent.wolpertinger(self, obs_BS, self.latent_policy(obs_BS), self.config.knn_k, self.critic)
