"""Off-policy evaluation against the truth (issue: your own logs, no simulator).

For each env: a zoo of agents of varied quality trained on the benchmark's 100k training dataset (raw-action
BC, discrete CQL and discrete BCQ stopped at 300, 1,500 and 6,000 steps, seeds 0 and 1; plus any latent
agents already trained on that dataset, e.g. bench/latent_ablation.py's), each agent's true normalised score
from 100 simulator episodes, and every estimator's estimate on a separately collected held-out dataset of the
same behaviour (seed 1, 20,000 transitions: no episode any agent trained on). ``--report`` writes the rank
correlation (Spearman) of each estimator with the truth and the regret of deploying its top pick.

Usage:
  python bench/ope.py zoo --env maze --dataset runs/maze100k            # train the zoo (resumes)
  python bench/ope.py estimate --env maze --heldout runs/maze-ope20k    # OPE of every zoo agent (resumes)
  python bench/ope.py coverage --env maze --heldout runs/maze-ope20k    # how much of each agent the data shows
  python bench/ope.py report
Records: bench/results/ope/<env>/<agent>.json; report: bench/results/ope/summary.json and README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TypedDict

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OUT = REPO / "bench" / "results" / "ope"
AGENTS = REPO / "runs" / "ope"
ZOO_ALGOS = ("bc", "dcql", "dbcq")
ZOO_STEPS = (300, 1_500, 6_000)
ZOO_EXTRA = (("bc", 50),)
"""Near-untrained agents, so each env's zoo spans the range from random up."""
ZOO_SEEDS = (0, 1)
TRUTH_EPISODES = 100
"""Simulator episodes behind each agent's true normalised score (seed 0 of the env noise)."""
LATENT_AGENT_DIRS = {"maze": "runs/ablation/maze", "recommender": "runs/ablation/recommender"}
"""Folders of latent agents trained on the same 100k dataset, joined to the zoo when present."""


def zoo(args: argparse.Namespace) -> None:
    """Train every (algo, steps, seed) of the zoo that is not there yet; record its true score."""
    import torch

    from merlion_core.pipelines.agent import evaluate_agent, train_agent

    torch.set_num_threads(1)
    folder = OUT / args.env
    folder.mkdir(parents=True, exist_ok=True)
    for algo, steps in [(a, n) for a in ZOO_ALGOS for n in ZOO_STEPS] + list(ZOO_EXTRA):
        for seed in ZOO_SEEDS:
            name = f"{algo}-{steps}-s{seed}"
            record_path = folder / f"{name}.json"
            if record_path.exists():
                continue
            agent_dir = AGENTS / args.env / name
            started = time.perf_counter()
            train_agent(
                args.dataset,
                algo,
                agent_dir,
                steps=steps,
                overrides={"seed": seed},
                eval_every=0,
                eval_episodes=1,
                device="cpu",
                precision="auto",
            )
            truth = evaluate_agent(agent_dir, episodes=TRUTH_EPISODES, seed=0)
            record = {
                "env": args.env,
                "agent": str(agent_dir.relative_to(REPO)),
                "name": name,
                "algo": algo,
                "steps": steps,
                "seed": seed,
                "dataset": args.dataset,
                "true_normalised_score": truth["normalised_score"],
                "true_mean_return": truth["mean_return"],
                "truth_episodes": TRUTH_EPISODES,
                "train_and_truth_seconds": time.perf_counter() - started,
            }
            record_path.write_text(json.dumps(record, indent=1))
            print(f"{args.env} {name}: true score {truth['normalised_score']:.1f}", flush=True)
    latent = REPO / LATENT_AGENT_DIRS.get(args.env, "-")
    for agent_dir in sorted(latent.glob("*")) if latent.is_dir() else []:
        name = f"latent-{agent_dir.name}"
        record_path = folder / f"{name}.json"
        if record_path.exists() or not (agent_dir / "weights.pt").exists():
            continue
        truth = evaluate_agent(agent_dir, episodes=TRUTH_EPISODES, seed=0)
        record = {
            "env": args.env,
            "agent": str(agent_dir.relative_to(REPO)),
            "name": name,
            "algo": "cql (latent)",
            "dataset": args.dataset,
            "true_normalised_score": truth["normalised_score"],
            "true_mean_return": truth["mean_return"],
            "truth_episodes": TRUTH_EPISODES,
        }
        record_path.write_text(json.dumps(record, indent=1))
        print(f"{args.env} {name}: true score {truth['normalised_score']:.1f}", flush=True)


class OPESetting(TypedDict):
    """The OPEConfig fields this measurement sets."""

    fqe_steps: int
    fqe_heads: int
    fqe_target_update: int


OPE_SETTING: OPESetting = {"fqe_steps": 2_000, "fqe_heads": 8, "fqe_target_update": 50}
"""The OPEConfig overrides of this measurement (the CLI default fits longer, with more heads): 2 cores."""


def estimate(args: argparse.Namespace) -> None:
    """Every estimator for every zoo agent of ``args.env`` that has none yet, on the held-out dataset."""
    import torch

    from merlion_core.pipelines.ope import OPEConfig, ope_agent

    torch.set_num_threads(1)
    config = OPEConfig(**OPE_SETTING)
    for record_path in sorted((OUT / args.env).glob("*.json")):
        record = json.loads(record_path.read_text())
        if record.get("ope", {}).get("setting") == OPE_SETTING:
            continue
        started = time.perf_counter()
        result = ope_agent(REPO / record["agent"], args.heldout, config)
        record["ope"] = {
            "setting": OPE_SETTING,
            "heldout": args.heldout,
            "seconds": time.perf_counter() - started,
            "held_out_episodes": result["held_out_episodes"],
            "behaviour_source": result["behaviour_source"],
            "estimators": {
                name: {k: e[k] for k in ("value", "ci95", "normalised_score", "normalised_ci95")}
                | {"details": {k: v for k, v in e["details"].items() if isinstance(v, (int, float, str))}}
                for name, e in result["estimators"].items()
            },
        }
        record_path.write_text(json.dumps(record, indent=1))
        scores = ", ".join(f"{n} {e['normalised_score']:.1f}" for n, e in record["ope"]["estimators"].items())
        print(
            f"{args.env} {record['name']}: true {record['true_normalised_score']:.1f}; {scores} "
            f"({record['ope']['seconds']:.0f} s)",
            flush=True,
        )


def coverage(args: argparse.Namespace) -> None:
    """How much of each raw-action agent's behaviour the held-out data shows: the share of held-out transitions
    whose logged action is the agent's choice pi(s_t), and the share of the agent's chosen action ids (over the
    held-out states) that were logged at all."""
    import torch

    from merlion_core.algos.artifacts import load_agent
    from merlion_core.data.io import load_dataset
    from merlion_core.pipelines.ope import policy_actions

    torch.set_num_threads(1)
    data = load_dataset(args.heldout)
    obs, logged = np.asarray(data.observations, dtype=np.float32), np.asarray(data.actions)
    seen = np.zeros(data.n_actions, dtype=bool)
    seen[logged] = True
    for record_path in sorted((OUT / args.env).glob("*.json")):
        record = json.loads(record_path.read_text())
        if "coverage" in record or "latent" in record["algo"]:  # latent lookups over every state: minutes each
            continue
        pi = policy_actions(load_agent(REPO / record["agent"]).agent, obs)
        record["coverage"] = {
            "heldout": args.heldout,
            "logged_equals_pi_share": float(np.mean(pi == logged)),
            "pi_actions_logged_share": float(np.mean(seen[pi])),
            "distinct_pi_actions": int(np.unique(pi).size),
        }
        record_path.write_text(json.dumps(record, indent=1))
        print(f"{args.env} {record['name']}: {record['coverage']}", flush=True)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    from scipy import stats

    return float(stats.spearmanr(x, y).statistic)


def env_report(records: list[dict], n_boot: int = 2_000, seed: int = 0) -> dict:
    """Per estimator: Spearman with the truth (with a 95% bootstrap interval over agents), the regret of
    deploying its top pick, and how often the truth lies in its 95% interval."""
    truth = np.array([r["true_normalised_score"] for r in records])
    rng = np.random.default_rng(seed)
    boots = rng.integers(0, len(records), size=(n_boot, len(records)))
    out = {
        "n_agents": len(records),
        "true_best": float(truth.max()),
        "true_range": [float(truth.min()), float(truth.max())],
        "ope_seconds_median": float(np.median([r["ope"]["seconds"] for r in records])),
        "held_out_episodes": records[0]["ope"]["held_out_episodes"],
        "estimators": {},
    }
    for name in records[0]["ope"]["estimators"]:
        est = np.array([r["ope"]["estimators"][name]["normalised_score"] for r in records], dtype=np.float64)
        lo = np.array([r["ope"]["estimators"][name]["normalised_ci95"][0] for r in records], dtype=np.float64)
        hi = np.array([r["ope"]["estimators"][name]["normalised_ci95"][1] for r in records], dtype=np.float64)
        rho_boot = [spearman(est[b], truth[b]) for b in boots if np.ptp(truth[b]) > 0 and np.ptp(est[b]) > 0]
        pick = int(np.argmax(est))
        out["estimators"][name] = {
            "spearman": spearman(est, truth),
            "spearman_ci95": [float(np.percentile(rho_boot, 2.5)), float(np.percentile(rho_boot, 97.5))],
            "picked": records[pick]["name"],
            "picked_true_score": float(truth[pick]),
            "regret": float(truth.max() - truth[pick]),
            "truth_in_ci95_share": float(np.mean((truth >= lo) & (truth <= hi))),
            "mean_abs_error": float(np.mean(np.abs(est - truth))),
        }
    covered = [r for r in records if "coverage" in r]
    if covered:
        out["coverage_median_raw_agents"] = {
            "n_agents": len(covered),
            **{
                k: float(np.median([r["coverage"][k] for r in covered]))
                for k in ("logged_equals_pi_share", "pi_actions_logged_share")
            },
        }
    return out


GOALS = {"fqe_spearman_mazes": 0.8, "regret_max": 10.0}


def report() -> None:
    envs: dict[str, dict] = {}
    summary = {"setting": OPE_SETTING, "goals": GOALS, "envs": envs}
    lines = [
        "# Off-policy evaluation against the truth",
        "",
        f"Agents of each env's zoo (bench/ope.py); estimates on a separately collected held-out dataset "
        f"(20,000 transitions, seed 1, logged propensities); OPE setting {OPE_SETTING}; truth = "
        f"{TRUTH_EPISODES} simulator episodes. Spearman with a 95% bootstrap interval over agents; regret = "
        "true score of the best agent - true score of the estimator's top pick; coverage = share of agents "
        "whose true score lies in the estimator's 95% interval.",
        "",
        "| env | agents | true range | estimator | Spearman | regret | picked (true score) | coverage | "
        "mean abs error |",
        "| --- | ---: | --- | --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for folder in sorted(p for p in OUT.iterdir() if p.is_dir()):
        records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
        records = [r for r in records if "ope" in r and r["ope"].get("setting") == OPE_SETTING]
        if len(records) < 3:
            continue
        env = env_report(records)
        envs[folder.name] = env
        for name, e in env["estimators"].items():
            lines.append(
                f"| {folder.name} | {env['n_agents']} | {env['true_range'][0]:.1f} to {env['true_range'][1]:.1f} "
                f"| {name} | {e['spearman']:.2f} [{e['spearman_ci95'][0]:.2f}, {e['spearman_ci95'][1]:.2f}] | "
                f"{e['regret']:.1f} | {e['picked']} ({e['picked_true_score']:.1f}) | "
                f"{e['truth_in_ci95_share']:.2f} | {e['mean_abs_error']:.1f} |"
            )
    (OUT / "summary.json").write_text(json.dumps(summary, indent=1))
    (OUT / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("zoo", "estimate", "coverage", "report"))
    parser.add_argument("--env")
    parser.add_argument("--dataset", help="the agents' training dataset (zoo)")
    parser.add_argument("--heldout", help="held-out dataset of the same behaviour (estimate)")
    args = parser.parse_args()
    if args.command == "zoo":
        if not (args.env and args.dataset):
            parser.error("zoo needs --env and --dataset")
        zoo(args)
    elif args.command in ("estimate", "coverage"):
        if not (args.env and args.heldout):
            parser.error(f"{args.command} needs --env and --heldout")
        (estimate if args.command == "estimate" else coverage)(args)
    else:
        report()


if __name__ == "__main__":
    main()
