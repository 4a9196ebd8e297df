"""MERLION's reward scale on the recommender: how much of the video structure the embedding keeps.

Usage: python bench/recommender_reward_scale.py [--steps 3000] [--out bench/results/recommender-reward-scale.json]
Trains MERLION (|E| = 10, p = 0.1) on the default dataset (medium, 50% noise, 100k, seed 0) for
each reward scale, then embeds all 1000 videos at 16 dataset states and reports the mean L1
distance within a type over the mean across types, and the median per-state Spearman
correlation of the embedding's L1 distances with the External features' L1 distances.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from merlion_core.data.collect import collect
from merlion_core.envs import make_model
from merlion_core.representation import external, merlion


def structure(rep: merlion.MerlionRepresentation, observations: np.ndarray, types: np.ndarray) -> dict:
    with torch.no_grad():
        e = rep.embed_chunk(torch.as_tensor(observations), torch.arange(rep.n_actions)).numpy()
    d = np.abs(e[:, :, None, :] - e[:, None, :, :]).sum(-1)  # [S, A, A]
    same = (types[:, None] == types[None, :]) & ~np.eye(len(types), dtype=bool)
    other = types[:, None] != types[None, :]
    upper = np.triu_indices(len(types), 1)
    table = external.features("recommender", len(types))
    feature_l1 = np.abs(table[:, None, :] - table[None, :, :]).sum(-1)[upper]
    rho = [spearmanr(d[i][upper], feature_l1).statistic for i in range(len(d))]
    return {
        "within_over_across_type_l1": float(d[:, same].mean() / d[:, other].mean()),
        "spearman_vs_external_median": float(np.median(rho)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--scales", default="1.0,0.3,0.1,0.01")
    parser.add_argument("--out", default="bench/results/recommender-reward-scale.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = collect("recommender", "medium", 0.5, 100_000, seed=0)
    observations = np.array(dataset.observations[::6000][:16])
    types = make_model("recommender").catalogue.types
    results = {"steps": args.steps, "dataset": "recommender medium noise 0.5 n 100000 seed 0", "scales": {}}
    for scale in (float(s) for s in args.scales.split(",")):
        started = time.perf_counter()
        config = merlion.config_for_env(
            "merlion/Recommender-v0", steps=args.steps, log_every=args.steps, reward_scale=scale
        )
        rep, metrics = merlion.fit(dataset, config, device="cpu")
        results["scales"][str(scale)] = {
            **structure(rep, observations, types),
            "final_metrics": metrics,
            "train_seconds": time.perf_counter() - started,
        }
        print(scale, json.dumps(results["scales"][str(scale)]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
