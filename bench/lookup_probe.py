"""What the Eq. 1 lookup does to a latent agent's choices: where the actor's latent falls among the
actions' latents, how decisive the nearest action is, and how the critic's value at the latent
compares with its value at the action the lookup returns. Writes bench/results/lookup-probe-<name>.json.

Usage: python bench/lookup_probe.py --agent DIR --dataset runs/multistep100k [--states 1000]
           [--name multistep-external-cql-seed0]

At ``--states`` dataset states (drawn with seed 0), for the agent's deterministic latent
e_hat = B tanh(mu(s)) (what the deployed policy looks up):
* the L1 distance to the nearest and second-nearest action's phi(a; s), their gap, and the share
  of states where the two tie (gap < 1e-6; ties go to the lower action index);
* how many distinct actions the policy picks, and the share of the most frequent one;
* the actor's latent norm against the actions' latent norms;
* the lookup gap: min_i Q_i(s, e_hat) - min_i Q_i(s, phi(g(e_hat); s)), the value the critic
  promised at the latent minus its value at the action actually taken.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from merlion_core.algos.artifacts import load_agent  # noqa: E402
from merlion_core.data.io import load_dataset  # noqa: E402


def quantiles(values: np.ndarray) -> dict[str, float]:
    return {f"q{int(q * 100):02d}": float(np.quantile(values, q)) for q in (0.1, 0.5, 0.9)} | {
        "mean": float(values.mean())
    }


@torch.no_grad()
def probe(agent, obs_BS: torch.Tensor) -> dict:
    bound = agent._bound()
    e_hat_BD = agent.actor.mean(obs_BS, bound)
    table_BAD = agent.representation.embed_all(obs_BS)
    dist_BA = (table_BAD - e_hat_BD[:, None, :]).abs().sum(-1)
    top2_dist, top2_idx = dist_BA.topk(2, dim=1, largest=False)
    gap_B = top2_dist[:, 1] - top2_dist[:, 0]
    chosen_B = top2_idx[:, 0]
    counts = np.bincount(chosen_B.numpy(), minlength=agent.n_actions)
    e_chosen_BD = table_BAD[torch.arange(len(chosen_B)), chosen_B]
    q_latent_B = agent.critic(obs_BS, e_hat_BD).min(0).values
    q_action_B = agent.critic(obs_BS, e_chosen_BD).min(0).values
    return {
        "latent_bound": bound.tolist(),
        "nearest_distance": quantiles(top2_dist[:, 0].numpy()),
        "second_gap": quantiles(gap_B.numpy()),
        "tie_share": float((gap_B < 1e-6).float().mean()),
        "distinct_actions": int((counts > 0).sum()),
        "top_action_share": float(counts.max() / len(chosen_B)),
        "actor_latent_l1_norm": quantiles(e_hat_BD.abs().sum(-1).numpy()),
        "action_latent_l1_norm": quantiles(table_BAD.abs().sum(-1).flatten().numpy()),
        "q_at_latent": quantiles(q_latent_B.numpy()),
        "q_at_chosen_action": quantiles(q_action_B.numpy()),
        "lookup_gap": quantiles((q_latent_B - q_action_B).numpy()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", required=True, help="a latent agent folder (cql or bcq with an encoder)")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--states", type=int, default=1000)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_agent(args.agent)
    if not hasattr(loaded.agent, "actor") or not hasattr(loaded.agent, "representation"):
        raise SystemExit(f"{args.agent}: not a latent CQL agent (needs an actor and a representation)")
    dataset = load_dataset(args.dataset)
    rng = np.random.default_rng(0)
    rows = rng.choice(dataset.n_transitions, size=min(args.states, dataset.n_transitions), replace=False)
    obs = torch.as_tensor(np.asarray(dataset.observations)[rows], dtype=torch.float32)
    loaded.agent.eval()
    report = {"agent": args.agent, "dataset": args.dataset, "states": len(rows), **probe(loaded.agent, obs)}
    out = REPO / "bench" / "results" / f"lookup-probe-{args.name}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
