"""Every representation on both mazes: median Spearman vs the true pseudometric, class separation.

Usage: python bench/representations.py --env maze [--seeds 0 1 2] [--methods ...] [--steps N]
  [--config '{"behaviour_loss": "sampled"}' --label +sampled]
Writes bench/results/representations-ENV.json (one record per run, appended as runs finish)
and prints a markdown table. Datasets: `merlion collect --behaviour medium --noise 0.5 --n
100000 --seed 0` for the env, collected in memory here.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from merlion_core import diagnostics
from merlion_core.data.collect import collect
from merlion_core.envs import make_model, resolve_env_id
from merlion_core.pipelines.encoder import representation_config
from merlion_core.representation.registry import METHODS, get_method


def evaluate(rep, model, dataset, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    states = diagnostics.sample_states(np.asarray(dataset.observations), 64, rng)

    def embed_fn(obs, actions):
        with torch.no_grad():
            return rep.embed_chunk(torch.as_tensor(obs), torch.as_tensor(actions)).numpy()

    return diagnostics.diagnose(model, embed_fn, states, n_action_samples=512, rng=rng).to_dict()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="maze")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--steps", type=int, default=None, help="override every method's steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    parser.add_argument("--config", default="{}", help="JSON object of config overrides for every method")
    parser.add_argument("--label", default="", help="suffix of the methods' names in the records (e.g. +sampled)")
    args = parser.parse_args()
    extra = json.loads(args.config)
    torch.set_num_threads(args.threads)
    env_id = resolve_env_id(args.env)
    out = Path(args.out or f"bench/results/representations-{args.env}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    dataset = collect(env_id, "medium", 0.5, 100_000, seed=0)
    model = make_model(env_id)
    records = json.loads(out.read_text()) if out.exists() else []
    done = {(r["method"], r["seed"]) for r in records}
    for method in args.methods:
        for seed in args.seeds:
            if (method + args.label, seed) in done:
                continue
            overrides = {**extra, "seed": seed, **({"steps": args.steps} if args.steps else {})}
            config = representation_config(method, env_id, overrides)
            started = time.perf_counter()
            rep, metrics = get_method(method).fit(dataset, config, device="cpu")
            seconds = time.perf_counter() - started
            result = evaluate(rep, model, dataset)
            record = {
                "env": env_id,
                "method": method + args.label,
                "config_overrides": extra,
                "seed": seed,
                "train_seconds": seconds,
                "spearman_median": result["spearman_median"],
                "class_separation": result["class_separation"],
                "final_metrics": {k: float(v) for k, v in metrics.items()},
            }
            records.append(record)
            out.write_text(json.dumps(records, indent=2) + "\n")
            print(json.dumps(record), flush=True)
    print(markdown_table(records))


def markdown_table(records: list[dict]) -> str:
    rows = [
        "| method | seeds | median Spearman (mean +- sd) | class separation (mean +- sd) | train s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for method in dict.fromkeys(r["method"] for r in records):
        rs = [r for r in records if r["method"] == method]
        sp = np.array([r["spearman_median"] for r in rs], dtype=float)
        cs = np.array([r["class_separation"] for r in rs], dtype=float)
        secs = np.mean([r["train_seconds"] for r in rs])
        rows.append(
            f"| {method} | {len(rs)} | {np.nanmean(sp):.3f} +- {np.nanstd(sp):.3f} | "
            f"{np.nanmean(cs):.3f} +- {np.nanstd(cs):.3f} | {secs:.0f} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
