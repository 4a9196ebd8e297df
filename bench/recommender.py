"""Recommender numbers: behaviour returns and scores, and 100k-transition collection with the
numpy twin and with the RecSim env, whose episodes are also compared by two-sample KS tests.

Usage: python bench/recommender.py [--episodes 1000] [--n 100000] [--out bench/results/recommender.json]
The twin collection runs in a fresh process (its time includes the normalisers, as a user's
first `merlion collect --env recommender` does). The RecSim collection steps one
RecSimRecommenderEnv with the same behaviour (medium, reading RecSim's hidden state) and 50%
uniform noise until it has N transitions of whole episodes (plus the cut one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from foundation import behaviour_table  # bench/ is on sys.path when this script runs
from scipy.stats import ks_2samp

from merlion_core.data.collect import collect
from merlion_core.envs import make_model
from merlion_core.envs.behaviours import make_behaviour
from merlion_core.envs.recommender.recsim_env import RecSimRecommenderEnv
from merlion_core.envs.rollout import rollout_episodes

TIMED_COLLECT = """
import time, sys
t = time.perf_counter()
from merlion_core.data.collect import collect
ds = collect('recommender', 'medium', 0.5, int(sys.argv[1]), seed=0)
print(time.perf_counter() - t)
"""


def collect_with_recsim(n: int, noise: float, seed: int) -> dict:
    """Medium + noise on the RecSim env until n transitions; returns, lengths and the time."""
    model = make_model("recommender")
    policy = make_behaviour(model, "medium")
    env = RecSimRecommenderEnv()
    rng = np.random.default_rng(seed)
    observations = np.empty((n, model.obs_dim), dtype=np.float32)
    actions = np.empty(n, dtype=np.int64)
    rewards = np.empty(n, dtype=np.float32)
    returns, lengths = [], []
    started = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    episode_return, episode_length = 0.0, 0
    for t in range(n):
        action = int(policy(env.state(), rng)[0])
        if rng.random() < noise:
            action = int(rng.integers(0, model.n_actions))
        observations[t], actions[t] = obs, action
        obs, reward, terminated, truncated, _ = env.step(action)
        rewards[t] = reward
        episode_return += reward
        episode_length += 1
        if terminated or truncated:
            returns.append(episode_return)
            lengths.append(episode_length)
            obs, _ = env.reset()
            episode_return, episode_length = 0.0, 0
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "returns": np.array(returns),
        "lengths": np.array(lengths),
        "distinct_actions": int(len(np.unique(actions))),
    }


def ks(a: np.ndarray, b: np.ndarray) -> dict:
    result = ks_2samp(a, b)
    return {"statistic": float(result.statistic), "pvalue": float(result.pvalue)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--out", default="bench/results/recommender.json")
    args = parser.parse_args()
    model = make_model("recommender")
    results = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": list(os.getloadavg()),
        },
        "env": "merlion/Recommender-v0",
        **behaviour_table("recommender", args.episodes),
    }

    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", TIMED_COLLECT, str(args.n)], check=True, capture_output=True, text=True)
    twin_total = time.perf_counter() - started
    started = time.perf_counter()  # the normalisers are cached by now: stepping only
    dataset = collect("recommender", "medium", 0.5, args.n, seed=0)
    stepping_seconds = time.perf_counter() - started
    twin_returns = dataset.episode_returns()[:-1]  # the last episode is cut at N
    results["twin_collection"] = {
        "seconds": float(out.stdout.strip().splitlines()[-1]),
        "seconds_including_startup": twin_total,
        "stepping_seconds": stepping_seconds,
        "n_transitions": dataset.n_transitions,
        "n_episodes": dataset.n_episodes,
        "mean_return": float(twin_returns.mean()),
        "behaviour_normalised_score": float(dataset.normalised_score(twin_returns.mean())),
        "distinct_actions": dataset.distinct_actions(),
    }
    recsim = collect_with_recsim(args.n, 0.5, seed=0)
    results["recsim_collection"] = {
        "seconds": recsim["seconds"],
        "ms_per_step": 1000 * recsim["seconds"] / args.n,
        "n_episodes": int(len(recsim["returns"])),
        "mean_return": float(recsim["returns"].mean()),
        "distinct_actions": recsim["distinct_actions"],
    }
    # the twin's episodes for the KS tests: as many fresh episodes as RecSim completed, side by side
    n_episodes = len(recsim["returns"])
    medium = make_behaviour(model, "medium")
    twin = rollout_episodes(model, medium, n_episodes, np.random.default_rng(7), noise=0.5)
    perturbed_model = make_model("recommender", {"no_click_penalty": 0.6})
    perturbed = rollout_episodes(
        perturbed_model, make_behaviour(perturbed_model, "medium"), n_episodes, np.random.default_rng(7), noise=0.5
    )
    results["ks_recsim_vs_twin"] = {
        "note": "the RecSim collection's complete episodes vs as many twin episodes (medium, 50% noise)",
        "n_episodes": n_episodes,
        "return": ks(recsim["returns"], twin.returns),
        "length": ks(recsim["lengths"], twin.lengths),
        "perturbed_twin_no_click_penalty_0.6": {
            "return": ks(recsim["returns"], perturbed.returns),
            "length": ks(recsim["lengths"], perturbed.lengths),
        },
    }
    print(json.dumps(results, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
