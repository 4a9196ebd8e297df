"""Foundation numbers: behaviour returns and scores, noisy-dataset scores, collection speed.

Usage: python bench/foundation.py [--episodes 1000] [--n 100000] [--out bench/results/foundation.json]
Each collection runs in a fresh process so its time includes planning (value iteration) and
the env's normaliser measurement, as a user's first `merlion collect` does.
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

from merlion_core.data.collect import env_normalisers, normalised_score
from merlion_core.envs import make_model
from merlion_core.envs.behaviours import make_behaviour
from merlion_core.envs.rollout import rollout_episodes

TIMED_COLLECT = """
import time, sys
t = time.perf_counter()
from merlion_core.data.collect import collect
ds = collect(sys.argv[1], 'medium', 0.5, int(sys.argv[2]), seed=0)
print(time.perf_counter() - t)
"""


def behaviour_table(env: str, episodes: int) -> dict:
    model = make_model(env)
    expert, random = env_normalisers(env)
    rows = {}
    for name in ("expert", "medium", "random"):
        policy = make_behaviour(model, name)
        for noise in (0.0, 0.5):
            res = rollout_episodes(model, policy, episodes, np.random.default_rng(2024), noise)
            rows[f"{name}@noise{noise}"] = {
                "mean_return": float(res.returns.mean()),
                "normalised_score": float(normalised_score(res.returns.mean(), expert, random)),
                "success_rate": float(res.successes.mean()),
                "mean_length": float(res.lengths.mean()),
            }
    return {"expert_return": expert, "random_return": random, "behaviours": rows}


def collection_entry(env: str, n: int) -> dict:
    """Time a fresh-process collection of n medium transitions (noise 0.5), then summarise that dataset."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", TIMED_COLLECT, env, str(n)], check=True, capture_output=True, text=True)
    entry: dict[str, object] = {
        "collect_seconds_including_startup": time.perf_counter() - started,
        "collect_seconds": float(out.stdout.strip().splitlines()[-1]),
    }
    from merlion_core.data.collect import collect

    ds = collect(env, "medium", 0.5, n, seed=0)
    returns = ds.episode_returns()
    expert, random = ds.meta.expert_return, ds.meta.random_return
    assert expert is not None and random is not None  # collect() records the env's normalisers
    entry["medium_noise0.5_dataset"] = {
        "n_transitions": ds.n_transitions,
        "n_episodes": ds.n_episodes,
        "mean_return": float(returns.mean()),
        "behaviour_normalised_score": float(normalised_score(returns.mean(), expert, random)),
        "success_rate": float(ds.terminals[ds.episode_ends].mean()),
        "distinct_actions": ds.distinct_actions(),
    }
    return entry


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--out", default="bench/results/foundation.json")
    args = parser.parse_args()
    envs: dict[str, dict] = {}
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "envs": envs}
    for env in ("maze", "multistep-maze"):
        entry = behaviour_table(env, args.episodes)
        entry.update(collection_entry(env, args.n))
        envs[env] = entry
        print(json.dumps({env: entry}, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
