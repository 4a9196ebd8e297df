"""Seconds per latent CQL gradient step, and to act in 50 states, for each way of tying latent CQL to
real actions, on a real env's dataset and a trained (state-conditional) encoder, one torch thread.

Usage: python bench/latent_step_real_actions.py --dataset runs/maze100k --encoder runs/enc-maze-s0 \
           [--steps 30] [--warmup 5] [--label maze-merlion]
Variants: the earlier tables' setting ("before": box proposals, SAC backup, cube box), real-action
proposals, real actions and box points (the default), + 5 proposals from G, + the target valued at
real actions (every action's phi(a; s') at each next state), acting by the Wolpertinger rule over
10 actions. Each timing is the
median over 3 fresh agents of --steps updates after --warmup (bench/speed.py's loop). Writes
bench/results/latent-step-real-actions.json under LABEL.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from speed import time_ours  # bench/speed.py: one timed sample + update loop for every bench

from merlion_core.algos.registry import make_algorithm
from merlion_core.benchmark.methods import LEGACY_LATENT_CQL
from merlion_core.data.io import load_dataset
from merlion_core.representation.artifacts import load_representation

if TYPE_CHECKING:
    from merlion_core.algos.latent_cql import LatentCQL

RESULTS = Path(__file__).resolve().parent / "results" / "latent-step-real-actions.json"
VARIANTS = {
    "before": dict(LEGACY_LATENT_CQL),
    "real-proposals": {"bc_steps": 0, "cql_samples": "real"},
    "both-proposals (default)": {"bc_steps": 0, "cql_samples": "both"},
    "behaviour-proposals-5": {"bc_steps": 0, "n_behaviour": 5},
    "target-on-actions": {"bc_steps": 0, "target_on_actions": True},
    "knn10-acting": {"bc_steps": 0, "knn_k": 10},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--label", default="maze-merlion")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = load_dataset(args.dataset)
    rep = load_representation(args.encoder).representation
    out = {}
    for name, overrides in VARIANTS.items():
        if overrides.get("n_behaviour") and not hasattr(rep, "behaviour_model"):
            continue
        timings = [time_ours("cql", "cql", dataset, overrides, rep, args.steps, args.warmup, "cpu") for _ in range(3)]
        seconds = statistics.median(t["seconds"] / t["steps"] for t in timings)
        algo = cast(
            "LatentCQL", make_algorithm("cql", dataset.n_actions, dataset.obs_dim, overrides, "cpu", representation=rep)
        )
        obs = torch.as_tensor(dataset.observations[:1000].copy())
        algo.fit_latent_bound(algo.embed(obs, torch.as_tensor(dataset.actions[:1000].copy())))
        acting = []
        with torch.no_grad():
            for _ in range(5):
                start = time.perf_counter()
                algo.greedy(obs[:50])
                acting.append(time.perf_counter() - start)
        out[name] = {
            "overrides": overrides,
            "seconds_per_step": seconds,
            "steps_per_second": 1.0 / seconds,
            "act_seconds_50_states": statistics.median(acting[1:]),
        }
        print(f"{name}: {seconds * 1000:.0f} ms a step, {out[name]['act_seconds_50_states'] * 1000:.0f} ms to act")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[args.label] = {
        "dataset": args.dataset,
        "encoder": args.encoder,
        "n_actions": dataset.n_actions,
        "dim": rep.dim,
        "threads": 1,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_average_1min": os.getloadavg()[0],
        "variants": out,
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
