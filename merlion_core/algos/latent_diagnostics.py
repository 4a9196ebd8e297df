"""What a latent agent's critic and lookup do, measured on dataset states (issue: latent RL tied to
real actions). Every latent CQL / BCQ / IQL run reports these beside its learning curve:

* ``q_data`` against ``mc_return``: the critics' mean value of the logged latents, min_i Q_i(s, x_data),
  and the mean discounted Monte Carlo return of the same transitions in the dataset (truncated at a
  timeout): a critic far above the return overestimates;
* ``lookup_gap``: min_i Q_i(s, x_hat) - min_i Q_i(s, x(a_taken)), what the critic promised at the
  actor's latent less its value at the real action the deployed rule takes;
* ``taken_ood_share``: the share of states whose taken action the representation's behaviour model
  calls out of distribution, G(a|s) / max G <= tau (MERLION only; None elsewhere);
* ``v_data`` (agents with a state value V(s): IQL; absent elsewhere): the mean V(s) at the same states,
  the expectile of the target critics' values that IQL's critics back up through;
* :class:`CriticArgmaxPolicy`: the critic's argmax over every real action, to be evaluated beside the
  deployed rule (``critic_argmax_score`` in a run's record).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.signal import lfilter


def discounted_returns(rewards: np.ndarray, episode_ends: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = r_t + gamma G_{t+1} within each episode (episodes end at the indices ``episode_ends``,
    inclusive; the last episode at the last transition), G at an episode's last step = its reward.

    Vectorised: C_t = r_t + gamma C_{t+1} over the whole array (one filter), then each step's episode
    tail is removed, G_t = C_t - gamma^(e_t + 1 - t) C_{e_t + 1}, with e_t the end of t's episode."""
    rewards = np.asarray(rewards, dtype=np.float64)
    n = len(rewards)
    c = np.append(lfilter([1.0], [1.0, -gamma], rewards[::-1])[::-1], 0.0)  # C_n = 0
    ends = np.append(np.asarray(episode_ends, dtype=np.int64), n - 1)
    end_t = ends[np.searchsorted(ends, np.arange(n))]  # the first end at or after t
    return c[:n] - gamma ** (end_t + 1 - np.arange(n)) * c[end_t + 1]


def critic_values(
    agent: Any, obs_BS: torch.Tensor, x_XD: torch.Tensor, repeats: tuple[int, ...] = (1,)
) -> torch.Tensor:
    """min_i Q_i(s, x) of a latent agent's twin critics."""
    return agent.critic(obs_BS, x_XD, repeats).min(0).values


@torch.no_grad()
def latent_agent_diagnostics(
    agent: Any, obs_BS: torch.Tensor, act_B: torch.Tensor, mc_return_B: torch.Tensor
) -> dict[str, Any]:
    """The diagnostics of the module docstring at the dataset states ``obs_BS`` with their logged
    actions ``act_B`` and discounted returns ``mc_return_B``."""
    was_training = agent.training
    agent.eval()
    x_data = agent.to_actor_space(agent.embed(obs_BS, act_B))
    x_hat = agent.latent_policy(obs_BS)
    taken_B = agent.greedy(obs_BS)
    x_taken = agent.to_actor_space(agent.embed(obs_BS, taken_B))
    q_hat, q_taken = critic_values(agent, obs_BS, x_hat), critic_values(agent, obs_BS, x_taken)
    rep = agent.representation
    ood_share = None
    if hasattr(rep, "relative_behaviour_probs"):
        rel_BA = rep.relative_behaviour_probs(obs_BS)
        ood_share = float((rel_BA.gather(1, taken_B[:, None]) <= rep.config.tau).float().mean())
    out = {
        "states": int(obs_BS.shape[0]),
        "q_data": float(critic_values(agent, obs_BS, x_data).mean()),
        "mc_return": float(mc_return_B.mean()),
        "lookup_gap": float((q_hat - q_taken).mean()),
        "taken_ood_share": ood_share,
        "taken_equals_logged_share": float((taken_B == act_B).float().mean()),
        "distinct_taken_actions": int(torch.unique(taken_B).numel()),
        "actor_latent_l1": float(x_hat.abs().sum(-1).mean()),
        "data_latent_l1": float(x_data.abs().sum(-1).mean()),
    }
    if hasattr(agent, "log_alpha"):
        out["entropy_alpha"] = float(agent.log_alpha.exp())
    if hasattr(agent, "state_value"):
        out["v_data"] = float(agent.state_value(obs_BS).mean())
    agent.train(was_training)
    return out


class CriticArgmaxPolicy:
    """argmax_a min_i Q_i(s, x(phi(a; s))) over every real action (``chunk`` actions at a time): what the
    critic prefers, without the actor or the lookup; ``act`` as every policy."""

    def __init__(self, agent: Any, chunk: int = 1024) -> None:
        self.agent, self.chunk = agent, int(chunk)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        agent = self.agent
        obs_BS = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=agent.device)
        b = obs_BS.shape[0]
        best_q = torch.full((b,), -torch.inf, device=agent.device)
        best_a = torch.zeros(b, dtype=torch.int64, device=agent.device)
        for start in range(0, agent.n_actions, self.chunk):  # chunks bound memory; the chunk is vectorised
            acts_C = torch.arange(start, min(start + self.chunk, agent.n_actions), device=agent.device)
            e_BCD = agent.representation.embed_chunk(obs_BS, acts_C).float()
            c = acts_C.shape[0]
            q_BC = critic_values(agent, obs_BS, agent.to_actor_space(e_BCD).reshape(b * c, -1), (c,)).view(b, c)
            q_max, pos = q_BC.max(1)
            better = q_max > best_q
            best_q = torch.where(better, q_max, best_q)
            best_a = torch.where(better, acts_C[pos], best_a)
        return best_a.cpu().numpy()
