"""MERLION's losses and pseudometric terms (paper Eq. 5-7, 26, A.3), one short function each.

Stop-gradients are where the paper puts them: the target d_hat (Eq. 7) is built from
stop-gradient embeddings e_bar and is itself a constant for the encoder loss; the
transition and reward losses (Eq. 26) train their models *and* the encoder (Alg. 2:
J(P_hat, phi), J(R_hat, phi)); the behaviour loss trains G only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F


def w2_diagonal_gaussians(
    mu_i: torch.Tensor, std_i: torch.Tensor, mu_j: torch.Tensor, std_j: torch.Tensor
) -> torch.Tensor:
    """W2(N(mu_i, diag std_i^2), N(mu_j, diag std_j^2)) per row (Eq. 7's W2, closed form):
    W2^2 = ||mu_i - mu_j||_2^2 + ||std_i - std_j||_2^2."""
    return torch.sqrt(((mu_i - mu_j) ** 2).sum(-1) + ((std_i - std_j) ** 2).sum(-1))


def ood_indicator(
    logits_BA: torch.Tensor, act_B: torch.Tensor, tau: float, max_logit_B: torch.Tensor | None = None
) -> torch.Tensor:
    """I_hat_beta(a | s) = 1 when G(a|s) / max_a' G(a'|s) <= tau, else 0 (A.3). ``max_logit_B``: the
    rows' largest logit when already at hand (:func:`behaviour_loss_and_max_logit`)."""
    if max_logit_B is None:
        max_logit_B = logits_BA.max(dim=1).values
    log_relative = logits_BA.gather(1, act_B[:, None]).squeeze(1) - max_logit_B
    return (log_relative <= torch.log(torch.as_tensor(tau, dtype=logits_BA.dtype))).to(logits_BA.dtype)


def pseudometric_target(
    r_i: torch.Tensor, r_hat_j: torch.Tensor, w2_ij: torch.Tensor, ood_j: torch.Tensor, gamma: float, p: float
) -> torch.Tensor:
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


class _CrossEntropyAndMax(torch.autograd.Function):
    """Mean cross-entropy of integer targets and the rows' max logit from one exp pass over the |A|
    logits; the backward writes softmax - one-hot into the saved exponentials (no second exp)."""

    @staticmethod
    def forward(ctx, logits_BA: torch.Tensor, act_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        max_B1 = logits_BA.amax(dim=1, keepdim=True)
        exp_BA = (logits_BA - max_B1).exp_()
        sum_B1 = exp_BA.sum(dim=1, keepdim=True)
        log_normaliser_B = (max_B1 + sum_B1.log()).squeeze(1)
        loss = (log_normaliser_B - logits_BA.gather(1, act_B[:, None]).squeeze(1)).mean()
        ctx.save_for_backward(exp_BA, sum_B1, act_B)
        ctx.mark_non_differentiable(max_B1)
        return loss, max_B1.squeeze(1)

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, _grad_max: torch.Tensor) -> tuple[torch.Tensor, None]:
        exp_BA, sum_B1, act_B = ctx.saved_tensors
        scale = grad_loss / exp_BA.shape[0]
        grad_BA = exp_BA / sum_B1 * scale  # softmax * scale
        rows = torch.arange(exp_BA.shape[0], device=exp_BA.device)
        grad_BA[rows, act_B] -= scale
        return grad_BA, None


def behaviour_loss_and_max_logit(logits_BA: torch.Tensor, act_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """J(G) = CrossEntropy(G(.|s), a_i) (Eq. 26), equal to :func:`behaviour_loss`, and the rows' max
    logit that I_hat (A.3) needs, computed together: the |A|-wide softmax is most of an encoder step
    on large action sets (docs/results.md, "Training speed")."""
    return _CrossEntropyAndMax.apply(logits_BA, act_B)


def sampled_softmax_loss(
    target_logit_B: torch.Tensor,
    negative_logits_BK: torch.Tensor,
    act_B: torch.Tensor,
    negatives_K: torch.Tensor,
    n_actions: int,
) -> torch.Tensor:
    """J(G) of Eq. 26 estimated with a sampled softmax whose cost does not grow with |A|.

    ``negatives_K`` are drawn uniformly with replacement from the |A| actions (proposal Q(a) = 1/|A|),
    shared by every row. The partition function Z(s) = sum_a exp(logit_a) is replaced by

        Z_hat = exp(logit_{a_i}) + sum_{k: a_k != a_i} exp(logit_{a_k} - log(K Q(a_k))),

    the logQ correction of importance-sampled softmax (Bengio & Senecal 2008; Jean et al. 2015,
    "On Using Very Large Target Vocabulary for Neural Machine Translation"): with accidental hits
    (a_k = a_i) removed, E[Z_hat] = Z exactly, and the gradient -d logit_{a_i} + d log Z_hat is a
    consistent estimate of the full softmax cross-entropy's gradient (its bias shrinks as 1/K)."""
    k = negatives_K.shape[0]
    correction = torch.log(torch.as_tensor(k / n_actions, dtype=negative_logits_BK.dtype))
    hit_BK = negatives_K[None, :] == act_B[:, None]
    corrected_BK = (negative_logits_BK - correction).masked_fill(hit_BK, -torch.inf)
    log_z_hat_B = torch.logsumexp(torch.cat([target_logit_B[:, None], corrected_BK], dim=1), dim=1)
    return (log_z_hat_B - target_logit_B).mean()


def ood_indicator_from_logit(logit_B: torch.Tensor, max_logit_B: torch.Tensor, tau: float) -> torch.Tensor:
    """I_hat_beta(a | s) (A.3) from the pair's logit and the row's largest logit: 1 when
    logit(a|s) - max_a' logit(a'|s) <= log tau (the same test as :func:`ood_indicator`)."""
    log_relative = logit_B - max_logit_B
    return (log_relative <= torch.log(torch.as_tensor(tau, dtype=logit_B.dtype))).to(logit_B.dtype)


def ood_indicator_bounded(
    logit_j_B: torch.Tensor,
    lower_B: torch.Tensor,
    upper: Callable[[torch.Tensor], torch.Tensor] | None,
    tau: float,
    row_max: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """I_hat_beta(a_j | s) (A.3), exact, asking for the exact max logit only where it can matter;
    returns (I_hat [B], share of rows whose exact max was asked for).

    ``lower_B <= max_a logit(a|s)``: a row with logit_j - lower_B <= log tau is out of distribution
    whatever the max is. ``upper(rows_R)`` (optional) bounds the max from above on the other rows: one
    with logit_j - upper > log tau is in distribution. ``row_max(rows_R)`` gives the exact max of the rest."""
    log_tau = torch.log(torch.as_tensor(tau, dtype=logit_j_B.dtype))
    open_B = logit_j_B - lower_B > log_tau
    max_B = lower_B.clone()
    rows_R = open_B.nonzero().squeeze(1)
    if rows_R.numel() and upper is not None:
        upper_R = upper(rows_R)
        decided_in = logit_j_B[rows_R] - upper_R > log_tau
        max_B[rows_R[decided_in]] = upper_R[decided_in]
        open_B[rows_R[decided_in]] = False
        rows_R = rows_R[~decided_in]
    if rows_R.numel():
        max_B[rows_R] = row_max(rows_R)
    return ood_indicator_from_logit(logit_j_B, max_B, tau), open_B.to(logit_j_B.dtype).mean()
