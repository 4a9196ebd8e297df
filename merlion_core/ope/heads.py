"""H independent Q networks evaluated in one batched call (the bootstrap heads of FQE).

Each head is its own MLP: weights [H, in, out] per layer, applied with ``torch.baddbmm`` to a
[H, B, in] input, so the heads share no trained parameter (a shared trunk would correlate their
errors and shrink the bootstrap interval). The input is the standardised observation plus, per
head, its own random Fourier features (Tancik et al. 2020; as models/obs_features.py); the
standardisation statistics are fitted from the data, not trained. Initialisation is
``nn.Linear``'s (uniform in +-1/sqrt(fan_in)), drawn per head from one seeded generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

FULL_OUTPUT_MAX_ACTIONS = 64
"""Up to this many actions, :meth:`BatchedQHeads.selected` computes every output and gathers (faster)."""


class BatchedQHeads(nn.Module):
    """Q_h(s, .) for heads h = 0..H-1: observations f32[B, S] -> Q values f32[H, B, A]."""

    frequencies: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        n_heads: int,
        obs_dim: int,
        n_actions: int,
        hidden: Sequence[int],
        n_fourier: int,
        fourier_scale: float,
        seed: int,
    ) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(int(seed))
        self.n_heads, self.obs_dim, self.n_actions = int(n_heads), int(obs_dim), int(n_actions)
        frequencies = torch.randn(n_heads, obs_dim, n_fourier, generator=generator) * fourier_scale
        self.register_buffer("frequencies", frequencies)
        self.register_buffer("mean", torch.zeros(obs_dim))
        self.register_buffer("std", torch.ones(obs_dim))
        sizes = [obs_dim + 2 * n_fourier, *hidden]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            bound = 1.0 / math.sqrt(fan_in)
            self.weights.append(
                nn.Parameter((torch.rand(n_heads, fan_in, fan_out, generator=generator) * 2 - 1) * bound)
            )
            self.biases.append(nn.Parameter((torch.rand(n_heads, 1, fan_out, generator=generator) * 2 - 1) * bound))
        # the output layer, one row per action: [A, H * K] weights and [A, H] biases, so one action's
        # parameters of every head are one row (a sparse gradient touches only the batch's actions)
        k = sizes[-1]
        bound = 1.0 / math.sqrt(k)
        self.out_weight = nn.Parameter((torch.rand(n_actions, n_heads * k, generator=generator) * 2 - 1) * bound)
        self.out_bias = nn.Parameter((torch.rand(n_actions, n_heads, generator=generator) * 2 - 1) * bound)

    @property
    def sparse_output(self) -> bool:
        """Whether training reads only the chosen actions' output rows (sparse gradients, SparseAdam)."""
        return self.n_actions > FULL_OUTPUT_MAX_ACTIONS

    def optimizers(self, lr: float) -> list[torch.optim.Optimizer]:
        """Adam for the hidden layers; for many actions lazy Adam (SparseAdam: only the rows of the
        batch's actions move) for the output rows, else Adam for everything."""
        trunk = [*self.weights, *self.biases]
        if not self.sparse_output:
            return [torch.optim.Adam([*trunk, self.out_weight, self.out_bias], lr=lr)]
        return [torch.optim.Adam(trunk, lr=lr), torch.optim.SparseAdam([self.out_weight, self.out_bias], lr=lr)]

    @torch.no_grad()
    def fit_statistics(self, obs_NS: torch.Tensor) -> None:
        """Set the standardisation mean and std from ``obs_NS`` (constant columns keep std 1)."""
        std = obs_NS.std(0, unbiased=False) if obs_NS.shape[0] > 1 else torch.ones_like(self.std)
        self.mean.copy_(obs_NS.mean(0))
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def hidden(self, obs_BS: torch.Tensor, heads: slice = slice(None)) -> torch.Tensor:
        """f32[H', B, K]: the last hidden layer of the selected heads."""
        z_BS = (obs_BS - self.mean) / self.std
        freq = self.frequencies[heads]
        n_heads = freq.shape[0]
        x = z_BS.expand(n_heads, *z_BS.shape)
        if freq.shape[2]:
            projected = torch.matmul(x, freq)
            x = torch.cat([x, torch.sin(projected), torch.cos(projected)], dim=-1)
        for weight, bias in zip(self.weights, self.biases, strict=True):
            x = torch.relu(torch.baddbmm(bias[heads], x, weight[heads]))
        return x

    def _output_AHK(self) -> torch.Tensor:
        return self.out_weight.view(self.n_actions, self.n_heads, -1)

    def forward(self, obs_BS: torch.Tensor, heads: slice = slice(None)) -> torch.Tensor:
        """f32[H', B, A]: every action's Q value under the selected heads."""
        weight_HKA = self._output_AHK()[:, heads].permute(1, 2, 0)
        bias_H1A = self.out_bias[:, heads].t().unsqueeze(1)
        return torch.baddbmm(bias_H1A, self.hidden(obs_BS, heads), weight_HKA)

    def selected(self, obs_BS: torch.Tensor, actions_B: torch.Tensor, heads: slice = slice(None)) -> torch.Tensor:
        """f32[H', B]: Q_h(s_b, a_b); for many actions only the chosen actions' output rows are read
        (as a sparse embedding lookup when all heads train, so their gradient is sparse)."""
        if not self.sparse_output:
            q_HBA = self(obs_BS, heads)
            return q_HBA.gather(2, actions_B.view(1, -1, 1).expand(q_HBA.shape[0], -1, 1)).squeeze(2)
        h_HBK = self.hidden(obs_BS, heads)
        if heads == slice(None):
            rows_BHK = F.embedding(actions_B, self.out_weight, sparse=True).view(actions_B.shape[0], self.n_heads, -1)
            bias_BH = F.embedding(actions_B, self.out_bias, sparse=True)
        else:
            rows_BHK = self._output_AHK().index_select(0, actions_B)[:, heads]
            bias_BH = self.out_bias.index_select(0, actions_B)[:, heads]
        return (h_HBK * rows_BHK.transpose(0, 1)).sum(-1) + bias_BH.t()
