"""The state-conditional action encoder phi(a; s) -> e in R^d (paper 4.2, Fig. 1 b).

An action-id embedding and the state are each projected to the hidden width, added, and
passed through an MLP. Because the two projections are added, ``embed_chunk`` projects the
states once and the action table once and combines them by broadcasting: no Python loop
over actions, and memory bounded by the chunk size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from merlion_core.models.mlp import mlp


class ActionEncoder(nn.Module):
    """phi(a; s): e_BD from obs_BS and action ids act_B."""

    def __init__(
        self, n_actions: int, obs_dim: int, dim: int, action_embed_dim: int = 32, hidden: Sequence[int] = (128, 128)
    ) -> None:
        super().__init__()
        self.action_table = nn.Embedding(n_actions, action_embed_dim)
        self.action_proj = nn.Linear(action_embed_dim, hidden[0])
        self.state_proj = nn.Linear(obs_dim, hidden[0], bias=False)
        self.head = mlp(hidden[0], hidden[1:], dim)

    def forward(self, obs_BS: torch.Tensor, act_B: torch.Tensor) -> torch.Tensor:
        h_BH = torch.relu(self.state_proj(obs_BS) + self.action_proj(self.action_table(act_B)))
        return self.head(h_BH)

    def embed_chunk(self, obs_BS: torch.Tensor, actions_C: torch.Tensor) -> torch.Tensor:
        """e_BCD for the actions ``actions_C`` at every state."""
        s_B1H = self.state_proj(obs_BS)[:, None, :]
        a_1CH = self.action_proj(self.action_table(actions_C))[None, :, :]
        return self.head(torch.relu(s_B1H + a_1CH))
