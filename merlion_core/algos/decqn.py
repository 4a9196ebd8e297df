"""DecQN-CQL and DecQN-BCQ (Beeson, Ireland & Montana, TMLR 2024): offline Q-learning on a
factorised discrete action space A = A_1 x ... x A_K, |A_i| = n_i (``action_factors``).

One MLP on the state outputs n_1 + ... + n_K values: K utility heads U_i(s, .). The value of a
flat action a = (a_1..a_K) (its big-endian mixed radix id, :mod:`merlion_core.envs.factors`) is the
DecQN decomposition (Seyde et al. 2023; Beeson et al.'s value decomposition)

    Q(s, a) = (1/K) sum_i U_i(s, a_i)                                            (decoupled_q)

so the greedy action is the per-sub-action argmax. The TD target, as in the authors' code
(Algorithms/DecQN*.py), maximises each sub-action's target utility and averages over sub-actions:

    y = r + gamma (1 - done) (1/K) sum_i max_{a_i} U'_i(s', a_i)                  (decqn_target)

U' a Polyak-averaged target network; ``double_q`` instead picks a_i by the online U_i and values
it with U'_i (Double DQN per sub-action, as this project's flat ``dcql`` / ``dbcq`` do). Both
losses use Huber TD on Q(s, a_data):

* DecQN-CQL adds alpha * E_s[(1/K) sum_i (logsumexp_{a_i} U_i(s, .) - U_i(s, a_i_data))], the
  CQL(H) term per sub-action, averaged over sub-actions as the authors' code does.
* DecQN-BCQ trains one imitation head per sub-action, pi_i(a_i | s) (a second MLP, mean NLL over
  sub-actions + ``logit_reg`` mean(logits^2) as in discrete_bcq.py), and lets sub-action a_i be
  chosen only where pi_i(a_i | s) / max_b pi_i(b | s) > threshold, when acting and in the target.

Sub-action sizes may differ: the heads are padded to the largest n_i with -inf (never chosen,
zero weight in every log-sum-exp and softmax).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from merlion_core.algos.base import OfflineAlgorithm, frozen_copy, polyak_update, seeded
from merlion_core.data.sampler import Batch
from merlion_core.envs.factors import check_factors, decode_mixed_radix, encode_mixed_radix, mixed_radix_strides
from merlion_core.models.obs_features import ObservationFeatures, check_feature_options, feature_mlp


def _check_common(config: Any) -> None:
    check_feature_options(config.fourier_features, config.fourier_scale)
    if not 0.0 <= config.gamma <= 1.0:
        raise ValueError(f"gamma: must be in [0, 1], got {config.gamma}")
    if not 0.0 < config.tau <= 1.0:
        raise ValueError(f"tau: must be in (0, 1], got {config.tau}")
    if config.lr <= 0:
        raise ValueError(f"lr: must be > 0, got {config.lr}")
    if config.action_factors:
        check_factors(config.action_factors)


@dataclass(frozen=True)
class DecQNCQLConfig:
    """DecQN-CQL. alpha, lr, gamma, tau, batch size and hidden sizes are the TMLR code's (maze and DMC
    examples); the observation features and seed are this project's (as DiscreteCQLConfig)."""

    alpha: float = 0.25
    """alpha: weight of the per-sub-action CQL(H) term (TMLR code, maze and DMC examples: 0.25)."""
    gamma: float = 0.99
    """gamma: discount factor (TMLR: 0.99)."""
    lr: float = 3e-4
    """Adam learning rate (TMLR: 3e-4)."""
    tau: float = 0.005
    """tau: Polyak rate of the target network U' after every step (TMLR: 0.005)."""
    batch_size: int = 256
    """Transitions per minibatch (TMLR: 256; read by whoever builds the BatchSampler)."""
    hidden: tuple[int, ...] = (512, 512)
    """Hidden layer sizes of the utility network's MLP body (TMLR: 512, 512)."""
    double_q: bool = False
    """False: target max_{a_i} U'_i(s', a_i) (TMLR code); True: a_i = argmax U_i(s', .) valued by U'_i (Double DQN)."""
    action_factors: tuple[int, ...] = ()
    """n_1..n_K: sub-action sizes; () = the env's declared factorisation."""
    fourier_features: int = 32
    """Random Fourier features of the standardised observation fed to every network (0: standardised only)."""
    fourier_scale: float = 3.0
    """Standard deviation of the random Fourier frequencies (models/obs_features.py)."""
    seed: int = 0
    """Seed of the network initialisation."""

    def __post_init__(self) -> None:
        _check_common(self)
        if self.alpha < 0:
            raise ValueError(f"alpha: must be >= 0, got {self.alpha}")


@dataclass(frozen=True)
class DecQNBCQConfig:
    """DecQN-BCQ. threshold (maze example), lr, gamma, tau, batch size and hidden sizes are the TMLR
    code's; logit_reg, the observation features and seed are this project's discrete BCQ's."""

    threshold: float = 0.25
    """tau (BCQ threshold): sub-action a_i is masked where pi_i(a_i|s) / max pi_i <= threshold (TMLR maze: 0.25)."""
    gamma: float = 0.99
    """gamma: discount factor (TMLR: 0.99)."""
    lr: float = 3e-4
    """Adam learning rate of the utility and imitation networks (TMLR: 3e-4)."""
    tau: float = 0.005
    """Polyak rate of the target network U' after every step (TMLR: 0.005)."""
    logit_reg: float = 1e-2
    """Weight of mean(logits^2) on the imitation heads (discrete BCQ, Fujimoto et al.: 1e-2; TMLR code: none)."""
    batch_size: int = 256
    """Transitions per minibatch (TMLR: 256; read by whoever builds the BatchSampler)."""
    hidden: tuple[int, ...] = (512, 512)
    """Hidden layer sizes of the utility MLP and of the imitation MLP (TMLR: 512, 512)."""
    double_q: bool = False
    """False: target max over allowed a_i of U'_i(s', a_i) (TMLR code); True: allowed argmax of U_i valued by U'_i."""
    action_factors: tuple[int, ...] = ()
    """n_1..n_K: sub-action sizes; () = the env's declared factorisation."""
    fourier_features: int = 32
    """Random Fourier features of the standardised observation fed to every network (0: standardised only)."""
    fourier_scale: float = 3.0
    """Standard deviation of the random Fourier frequencies (models/obs_features.py)."""
    seed: int = 0
    """Seed of the network initialisation."""

    def __post_init__(self) -> None:
        _check_common(self)
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold: must be in [0, 1), got {self.threshold}")
        if self.logit_reg < 0:
            raise ValueError(f"logit_reg: must be >= 0, got {self.logit_reg}")


# --- the paper's pieces ---------------------------------------------------------------------------


def decoupled_q(u_BKN: torch.Tensor, sub_BK: torch.Tensor) -> torch.Tensor:
    """Q(s, a) = (1/K) sum_i U_i(s, a_i): the DecQN value decomposition (Beeson et al. 2024, Seyde et al. 2023)."""
    return u_BKN.gather(2, sub_BK[..., None]).squeeze(2).mean(1)


def decqn_target(
    u_next_target_BKN: torch.Tensor,
    rew_B: torch.Tensor,
    done_B: torch.Tensor,
    gamma: float,
    u_next_online_BKN: torch.Tensor | None = None,
    allowed_BKN: torch.Tensor | None = None,
) -> torch.Tensor:
    """y = r + gamma (1 - done) (1/K) sum_i U'_i(s', a'_i), a'_i the best allowed sub-action of U'_i
    (the authors' DecQN target) or, given ``u_next_online_BKN``, of the online U_i (Double DQN)."""
    chooser_BKN = u_next_target_BKN if u_next_online_BKN is None else u_next_online_BKN
    next_sub_BK = greedy_sub_actions(chooser_BKN, allowed_BKN)
    return rew_B + gamma * (1.0 - done_B) * decoupled_q(u_next_target_BKN, next_sub_BK)


def decoupled_cql_regulariser(u_BKN: torch.Tensor, sub_BK: torch.Tensor) -> torch.Tensor:
    """E_s[(1/K) sum_i (logsumexp_{a_i} U_i(s, a_i) - U_i(s, a_i_data))]: CQL(H) per sub-action,
    averaged over sub-actions (Beeson et al. 2024, DecQN-CQL; the authors' code takes the mean)."""
    u_data_BK = u_BKN.gather(2, sub_BK[..., None]).squeeze(2)
    return (torch.logsumexp(u_BKN, dim=2) - u_data_BK).mean()


def sub_action_allowed(log_pi_BKN: torch.Tensor, threshold: float) -> torch.Tensor:
    """bool[B, K, N]: pi_i(a_i | s) / max_b pi_i(b | s) > threshold per sub-action (DecQN-BCQ's filter;
    each sub-action's most likely value is always allowed, padding never)."""
    return (log_pi_BKN - log_pi_BKN.max(dim=2, keepdim=True).values).exp() > threshold


def greedy_sub_actions(u_BKN: torch.Tensor, allowed_BKN: torch.Tensor | None = None) -> torch.Tensor:
    """i64[B, K]: argmax_{a_i allowed} U_i(s, a_i) for every sub-action i."""
    if allowed_BKN is not None:
        u_BKN = u_BKN.masked_fill(~allowed_BKN, -math.inf)
    return u_BKN.argmax(dim=2)


# --- networks -------------------------------------------------------------------------------------------


class SubActionLayout(nn.Module):
    """The factorisation as tensors (non-persistent buffers: rebuilt from the config, never saved):
    flat ids <-> sub-actions, and the K heads' n_1 + ... + n_K outputs -> [B, K, max n_i]."""

    strides: torch.Tensor
    factors: torch.Tensor
    index: torch.Tensor
    valid: torch.Tensor

    def __init__(self, factors: tuple[int, ...]) -> None:
        super().__init__()
        self.sizes = check_factors(factors)
        self.n_outputs = sum(self.sizes)
        self.ragged = len(set(self.sizes)) > 1
        width = max(self.sizes)
        starts = [sum(self.sizes[:k]) for k in range(len(self.sizes))]
        offsets = torch.arange(width)
        valid = offsets[None, :] < torch.tensor(self.sizes)[:, None]
        index = torch.where(valid, torch.tensor(starts)[:, None] + offsets[None, :], 0)
        self.register_buffer("strides", torch.tensor(mixed_radix_strides(self.sizes)), persistent=False)
        self.register_buffer("factors", torch.tensor(self.sizes), persistent=False)
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("valid", valid, persistent=False)

    def split(self, values_BF: torch.Tensor) -> torch.Tensor:
        """[B, K, max n_i]: head i's values in row i, padded with -inf."""
        values_BKN = values_BF[:, self.index]
        return values_BKN.masked_fill(~self.valid, -math.inf) if self.ragged else values_BKN

    def decode(self, ids_B: torch.Tensor) -> torch.Tensor:
        """i64[B, K]: the sub-actions of flat ids (unchecked: the dataset's ids are < n_actions)."""
        return decode_mixed_radix(ids_B, self.strides, self.factors)

    def encode(self, sub_BK: torch.Tensor) -> torch.Tensor:
        """i64[B]: the flat ids of sub-actions."""
        return encode_mixed_radix(sub_BK, self.strides)


class UtilityImitationNet(nn.Module):
    """DecQN-BCQ's two MLPs on the state: the utilities and the imitation logits (n_1 + ... + n_K each)."""

    def __init__(self, features: ObservationFeatures, hidden: tuple[int, ...], n_outputs: int) -> None:
        super().__init__()
        self.utility = feature_mlp(features, 0, hidden, n_outputs)
        self.imitation = feature_mlp(features, 0, hidden, n_outputs)

    def forward(self, obs_BS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(utilities_BF, logits_BF)."""
        return self.utility(obs_BS), self.imitation(obs_BS)


def _layout(name: str, factors: tuple[int, ...], n_actions: int) -> SubActionLayout:
    if not factors:
        raise ValueError(
            f"{name}: action_factors is empty; it needs a factorised action space: set action_factors "
            "(n_1..n_K) or train on an env that declares one (maze, multistep-maze)"
        )
    layout = SubActionLayout(check_factors(factors, f"{name}: action_factors"))
    if math.prod(layout.sizes) != n_actions:
        raise ValueError(
            f"{name}: action_factors {layout.sizes} give {math.prod(layout.sizes)} actions, "
            f"but there are n_actions={n_actions}"
        )
    return layout


# --- the algorithms -------------------------------------------------------------------------------------


class DecQNCQL(OfflineAlgorithm):
    """Acts with argmax_{a_i} U_i(s, a_i) per sub-action."""

    def __init__(self, config: DecQNCQLConfig, n_actions: int, obs_dim: int, device: str = "auto") -> None:
        super().__init__(config, n_actions, obs_dim, device)
        self.layout = _layout("decqn-cql", tuple(config.action_factors), n_actions)
        with seeded(config.seed):
            self.u = feature_mlp(self.observation_features(), 0, config.hidden, self.layout.n_outputs)
        self.u_target = frozen_copy(self.u)
        self.to(self.device)

    def utilities(self, obs_BS: torch.Tensor, target: bool = False) -> torch.Tensor:
        """[B, K, max n_i]: U_i(s, .) of the online (or target) network."""
        return self.layout.split((self.u_target if target else self.u)(obs_BS))

    @torch.no_grad()
    def td_target(self, batch: Batch) -> torch.Tensor:
        """y_B = r + gamma (1 - done) (1/K) sum_i U'_i(s', a'_i) (:func:`decqn_target`)."""
        online = self.utilities(batch.next_obs) if self.config.double_q else None
        target = self.utilities(batch.next_obs, target=True)
        return decqn_target(target, batch.rew, batch.done, self.config.gamma, online)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        u_BKN = self.utilities(batch.obs)
        sub_BK = self.layout.decode(batch.act)
        q_data_B = decoupled_q(u_BKN, sub_BK)
        td_loss = F.smooth_l1_loss(q_data_B, self.td_target(batch))
        cql_loss = decoupled_cql_regulariser(u_BKN, sub_BK)
        loss = td_loss + self.config.alpha * cql_loss
        return {"loss": loss, "td_loss": td_loss, "cql_loss": cql_loss, "q_data": q_data_B.mean()}

    def after_step(self) -> None:
        polyak_update(self.u_target, self.u, self.config.tau)

    def greedy(self, obs_BS: torch.Tensor) -> torch.Tensor:
        return self.layout.encode(greedy_sub_actions(self.utilities(obs_BS)))


class DecQNBCQ(OfflineAlgorithm):
    """Acts with argmax U_i(s, a_i) over the sub-actions a_i that imitation head i allows."""

    def __init__(self, config: DecQNBCQConfig, n_actions: int, obs_dim: int, device: str = "auto") -> None:
        super().__init__(config, n_actions, obs_dim, device)
        self.layout = _layout("decqn-bcq", tuple(config.action_factors), n_actions)
        with seeded(config.seed):
            self.net = UtilityImitationNet(self.observation_features(), config.hidden, self.layout.n_outputs)
        self.net_target = frozen_copy(self.net)
        self.to(self.device)

    def heads(self, obs_BS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(U_BKN, log pi_BKN, raw imitation logits_BF) of the online network."""
        u_BF, logits_BF = self.net(obs_BS)
        return self.layout.split(u_BF), F.log_softmax(self.layout.split(logits_BF), dim=2), logits_BF

    @torch.no_grad()
    def td_target(self, batch: Batch) -> torch.Tensor:
        """y_B = r + gamma (1 - done) (1/K) sum_i U'_i(s', a'_i), a'_i among the allowed sub-actions."""
        u_next_BKN, log_pi_next_BKN, _ = self.heads(batch.next_obs)
        allowed_BKN = sub_action_allowed(log_pi_next_BKN, self.config.threshold)
        target = self.layout.split(self.net_target.utility(batch.next_obs))
        online = u_next_BKN if self.config.double_q else None
        return decqn_target(target, batch.rew, batch.done, self.config.gamma, online, allowed_BKN)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        u_BKN, log_pi_BKN, logits_BF = self.heads(batch.obs)
        sub_BK = self.layout.decode(batch.act)
        q_data_B = decoupled_q(u_BKN, sub_BK)
        td_loss = F.smooth_l1_loss(q_data_B, self.td_target(batch))
        imitation_loss = -log_pi_BKN.gather(2, sub_BK[..., None]).mean()  # mean NLL over states and sub-actions
        logit_penalty = logits_BF.pow(2).mean()
        loss = td_loss + imitation_loss + self.config.logit_reg * logit_penalty
        return {
            "loss": loss,
            "td_loss": td_loss,
            "imitation_loss": imitation_loss,
            "logit_penalty": logit_penalty,
            "q_data": q_data_B.mean(),
        }

    def after_step(self) -> None:
        polyak_update(self.net_target, self.net, self.config.tau)

    def greedy(self, obs_BS: torch.Tensor) -> torch.Tensor:
        u_BKN, log_pi_BKN, _ = self.heads(obs_BS)
        allowed_BKN = sub_action_allowed(log_pi_BKN, self.config.threshold)
        return self.layout.encode(greedy_sub_actions(u_BKN, allowed_BKN))
