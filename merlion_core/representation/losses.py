"""MERLION's losses and pseudometric terms (paper Eq. 5-7, 26, A.3), one short function each.

Stop-gradients are where the paper puts them: the target d_hat (Eq. 7) is built from
stop-gradient embeddings e_bar and is itself a constant for the encoder loss; the
transition and reward losses (Eq. 26) train their models *and* the encoder (Alg. 2:
J(P_hat, phi), J(R_hat, phi)); the behaviour loss trains G only.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def w2_diagonal_gaussians(mu_i: torch.Tensor, std_i: torch.Tensor, mu_j: torch.Tensor, std_j: torch.Tensor) -> torch.Tensor:
    """W2(N(mu_i, diag std_i^2), N(mu_j, diag std_j^2)) per row (Eq. 7's W2, closed form):
    W2^2 = ||mu_i - mu_j||_2^2 + ||std_i - std_j||_2^2."""
    return torch.sqrt(((mu_i - mu_j) ** 2).sum(-1) + ((std_i - std_j) ** 2).sum(-1))


def ood_indicator(logits_BA: torch.Tensor, act_B: torch.Tensor, tau: float) -> torch.Tensor:
    """I_hat_beta(a | s) = 1 when G(a|s) / max_a' G(a'|s) <= tau, else 0 (A.3)."""
    log_relative = logits_BA.gather(1, act_B[:, None]).squeeze(1) - logits_BA.max(dim=1).values
    return (log_relative <= torch.log(torch.as_tensor(tau, dtype=logits_BA.dtype))).to(logits_BA.dtype)


def pseudometric_target(r_i: torch.Tensor, r_hat_j: torch.Tensor, w2_ij: torch.Tensor, ood_j: torch.Tensor,
                        gamma: float, p: float) -> torch.Tensor:
    """d_hat(a_i, a_j | s) = |r_i - R_hat(s, e_bar_j)| + gamma * W2 + p * I_hat(a_j | s) (Eq. 7)."""
    return (r_i - r_hat_j).abs() + gamma * w2_ij + p * ood_j


def encoder_loss(e_i: torch.Tensor, e_j: torch.Tensor, d_hat: torch.Tensor) -> torch.Tensor:
    """J(phi) = E[(||e_i - e_j||_1 - d_hat)^2] with d_hat a constant (Eq. 6)."""
    return (((e_i - e_j).abs().sum(-1) - d_hat.detach()) ** 2).mean()


def transition_loss(mu: torch.Tensor, std: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """J(P_hat, phi) (Eq. 26): Gaussian negative log-likelihood of s' (mean over dimensions).

    The paper writes a squared error on the mean; the NLL has the same mean gradient up to
    the 1/std^2 weight and also fits std, which W2 needs (docs/deviations.md). Written out (same
    value and gradient as ``F.gaussian_nll_loss(mu, next_obs, std**2, eps=1e-6)``), since that
    function checks ``var >= 0`` on the host: a device sync that a CUDA graph cannot capture."""
    var = std**2
    var = var + (var.clamp(min=1e-6) - var).detach()  # clamped value, unclamped gradient (as torch does)
    return (0.5 * (torch.log(var) + (mu - next_obs) ** 2 / var)).mean()


def reward_loss(r_hat: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """J(R_hat, phi) = E[(R_hat(s, e_i) - r_i)^2] (Eq. 26)."""
    return F.mse_loss(r_hat, r)


def behaviour_loss(logits_BA: torch.Tensor, act_B: torch.Tensor) -> torch.Tensor:
    """J(G) = CrossEntropy(G(.|s), a_i) (Eq. 26)."""
    return F.cross_entropy(logits_BA, act_B)
