"""Why a trained agent scores what it scores on a maze: its greedy trajectory from the start state
under the noise-free true model, and how its chosen actions compare with the true Q* over every
action at dataset states. Writes bench/results/policy-probe-<name>.json.

Usage: python bench/policy_probe.py --agent results/multistep-maze/work/agents/merlion-cql/seed0 \
           --dataset runs/multistep100k [--states 100] [--steps 12] [--name multistep-merlion-cql-seed0]

Q*(s, a) = r(s, a) + gamma V*(s') with V* from value iteration over the true model (the app's
"true value" colouring, studio/explore.py). For latent agents it also records the critic's
Spearman correlation with Q* over all actions at each state and the behaviour model's relative
probability of the chosen and the logged actions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from merlion_core.algos.artifacts import load_agent  # noqa: E402
from merlion_core.data.io import load_dataset  # noqa: E402
from merlion_core.envs import make_model  # noqa: E402
from studio.explore import planner_table, true_q  # noqa: E402


def trajectory(agent, model, steps: int) -> list[dict]:
    """The greedy policy from the start state under the noise-free true model."""
    state = model.initial_states(1).astype(np.float32)
    out = []
    for _ in range(steps):
        action = agent.act(state)
        step = model.true_step(state, action)
        out.append(
            {
                "state": np.round(state[0], 3).tolist(),
                "action": int(action[0]),
                "reward": round(float(step.rewards[0]), 3),
                "done": bool(step.terminated[0]),
            }
        )
        if step.terminated[0]:
            break
        state = step.next_states.astype(np.float32)
    return out


def action_quality(agent, model, table, obs_NS: np.ndarray, logged_N: np.ndarray) -> dict:
    """Means over states of Q* at the chosen and logged actions, the best and median Q*, and (latent
    agents) the critic's rank agreement with Q* over every action."""
    chosen_N = agent.act(obs_NS)
    rows, spearman = [], []
    for obs_S, chosen, logged in zip(obs_NS, chosen_N, logged_N, strict=True):
        q_true_A = true_q(model, table, obs_S)
        rows.append((q_true_A[chosen], q_true_A[logged], q_true_A.max(), np.median(q_true_A)))
        if hasattr(agent, "critic") and hasattr(agent, "embed"):
            with torch.no_grad():
                states = torch.as_tensor(np.repeat(obs_S[None], model.n_actions, 0), device=agent.device)
                e_AD = agent.embed(states, torch.arange(model.n_actions, device=agent.device))
                q_critic_A = agent.critic(states, e_AD).min(0).values.cpu().numpy()
            spearman.append(spearmanr(q_critic_A, q_true_A)[0])
    means = np.asarray(rows).mean(0)
    result = {
        "q_star_chosen": means[0],
        "q_star_logged": means[1],
        "q_star_max": means[2],
        "q_star_median": means[3],
        "distinct_chosen_actions": int(len(np.unique(chosen_N))),
    }
    if spearman:
        result["spearman_critic_q_star"] = float(np.mean(spearman))
    if hasattr(agent, "representation") and hasattr(agent.representation, "relative_behaviour_probs"):
        with torch.no_grad():
            rel = (
                agent.representation.relative_behaviour_probs(torch.as_tensor(obs_NS, device=agent.device))
                .cpu()
                .numpy()
            )
        index = np.arange(len(obs_NS))
        result["median_relative_behaviour_prob_chosen"] = float(np.median(rel[index, chosen_N]))
        result["median_relative_behaviour_prob_logged"] = float(np.median(rel[index, logged_N]))
    return {k: (round(float(v), 4) if isinstance(v, (float, np.floating)) else v) for k, v in result.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--states", type=int, default=100, help="dataset states to compare actions at")
    parser.add_argument("--steps", type=int, default=12, help="steps of the greedy trajectory")
    parser.add_argument("--name", default=None, help="suffix of the JSON file (default: the agent folder's name)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_agent(args.agent)
    data = load_dataset(args.dataset)
    if data.meta.env_id is None:
        raise SystemExit(f"{args.dataset}: names no simulator (mazes only)")
    model = make_model(data.meta.env_id, data.meta.env_config)
    table = planner_table(model)
    if table is None:
        raise SystemExit(f"{data.meta.env_id}: no true model to plan with (mazes only)")
    rows = np.random.default_rng(0).choice(data.n_transitions, args.states, replace=False)
    obs = np.asarray(data.observations[rows], dtype=np.float32)
    report = {
        "agent": args.agent,
        "dataset": args.dataset,
        "env_id": data.meta.env_id,
        "states": args.states,
        "trajectory": trajectory(loaded.agent, model, args.steps),
        "actions": action_quality(loaded.agent, model, table, obs, np.asarray(data.actions[rows])),
    }
    name = args.name or Path(args.agent).name
    out = REPO / "bench" / "results" / f"policy-probe-{name}.json"
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report["actions"]), "\n", [(t["state"][:2], t["action"]) for t in report["trajectory"]])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
