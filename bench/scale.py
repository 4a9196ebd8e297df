"""MERLION's encoder and lookup at catalogue scale (issue 24): |A| in {10^3, 10^4, 10^5, 10^6}.

Per |A|, on a synthetic dataset (random maze-shaped observations, obs_dim 3, uniformly random
action ids; seeded; no environment), each group in its own process so that its peak RSS is its own:

- ``train-<variant>``: seconds per MERLION gradient step (median after warm-up) with
  behaviour_loss full (the paper; skipped with the reason when a memory cap refuses it), sampled,
  and sampled with sparse_tables; the process's peak RSS (resource.getrusage).
- ``lookup``: embed_all for 64 states (time, and the growth of peak RSS it causes, measured first in
  a fresh process); then a few sampled training steps, the exact L1 lookup of 256 queries
  (lookup.l1_nearest), the approximate index (lookup_index: build time; per candidate count C, the
  query time and recall@1 against the exact answers).

Queries are phi(a; s) of random actions at the query states plus Gaussian noise of 0.1 x the
per-dimension spread. One torch thread; denormals flushed (as the training pipelines do).
Every measurement records os.getloadavg() at its start and end. Usage:
python bench/scale.py [--sizes 1000,10000,100000,1000000] [--steps 30] [--out bench/results/scale.json]
(a quick run: --sizes 1000,10000).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VARIANTS: dict[str, dict[str, Any]] = {
    "full": {"behaviour_loss": "full"},
    "sampled": {"behaviour_loss": "sampled"},
    "sampled_sparse": {"behaviour_loss": "sampled", "sparse_tables": True},
}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def measured(fn, *args) -> dict[str, Any]:
    """fn(*args) -> dict, with the load average at start and end and the wall seconds."""
    load_start = os.getloadavg()
    started = time.perf_counter()
    out = fn(*args)
    return {**out, "seconds": time.perf_counter() - started, "load_start": load_start, "load_end": os.getloadavg()}


def synthetic_dataset(n_actions: int, n: int, seed: int):
    import numpy as np

    from merlion_core.data.dataset import from_arrays

    rng = np.random.default_rng(seed)
    fields = {
        "observations": rng.normal(size=(n, 3)).astype(np.float32),
        "actions": rng.integers(0, n_actions, n),
        "rewards": rng.normal(size=n).astype(np.float32),
        "next_observations": rng.normal(size=(n, 3)).astype(np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": np.arange(n) % 100 == 99,
    }
    return from_arrays(fields, n_actions=n_actions)


def config_for(job: dict[str, Any], **overrides):
    from merlion_core.representation.merlion import config_for_env

    return config_for_env("merlion/Maze-v0", seed=job["seed"], log_every=1, lr_decay=False, **overrides)


def train_group(job: dict[str, Any]) -> dict[str, Any]:
    from merlion_core.representation.base import MemoryCapError
    from merlion_core.representation.merlion import build, train_steps

    dataset = synthetic_dataset(job["n_actions"], job["transitions"], job["seed"])
    config = config_for(job, steps=job["warmup"] + job["steps"], **VARIANTS[job["variant"]])
    try:
        rep = build(config, job["n_actions"], dataset.obs_dim)

        def run() -> dict[str, Any]:
            stamps, metrics = [time.perf_counter()], []
            for _, step_metrics in train_steps(rep, dataset, config, device="cpu"):
                stamps.append(time.perf_counter())
                metrics.append(step_metrics)
            timed = stamps[1 + job["warmup"] :]
            per_step = sorted(b - a for a, b in zip(timed[:-1], timed[1:], strict=True)) or [stamps[-1] - stamps[-2]]
            last = metrics[-1]
            return {
                "step_ms_median": 1000 * per_step[len(per_step) // 2],
                "step_ms_min": 1000 * per_step[0],
                "steps_timed": len(per_step),
                "last_metrics": last,
            }

        result = measured(run)
    except MemoryCapError as err:
        return {"skipped": str(err), "peak_rss_mib": peak_rss_mib()}
    return {**result, "peak_rss_mib": peak_rss_mib(), "config": dataclasses.asdict(config)}


def lookup_group(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from merlion_core.lookup import l1_nearest
    from merlion_core.lookup_index import IndexConfig, action_keys, build_index, query_index, recall_at_k
    from merlion_core.representation.merlion import build, train_steps

    n_actions = job["n_actions"]
    dataset = synthetic_dataset(n_actions, job["transitions"], job["seed"])
    config = config_for(job, steps=job["lookup_train_steps"], behaviour_loss="sampled", sparse_tables=True)
    rep = build(config, n_actions, dataset.obs_dim).eval()
    g = torch.Generator().manual_seed(job["seed"] + 1)
    obs_all = torch.as_tensor(dataset.observations)
    states64 = obs_all[torch.randint(0, len(obs_all), (64,), generator=g)]
    out: dict[str, Any] = {}

    def embed_all() -> dict[str, Any]:
        before = peak_rss_mib()
        with torch.no_grad():
            started = time.perf_counter()
            table = rep.embed_all(states64)
            first = time.perf_counter() - started
            grown = peak_rss_mib() - before
            del table
            started = time.perf_counter()
            table = rep.embed_all(states64)
            second = time.perf_counter() - started
        return {
            "ms_first": 1000 * first,
            "ms_second": 1000 * second,
            "peak_rss_growth_mib": grown,
            "table_mib": table.numel() * table.element_size() / 2**20,
        }

    out["embed_all_64"] = measured(embed_all)
    for _ in train_steps(rep, dataset, config, device="cpu"):
        pass
    rep.eval()
    obs = obs_all[torch.randint(0, len(obs_all), (job["queries"],), generator=g)]
    with torch.no_grad():
        e = rep.embed(obs, torch.randint(0, n_actions, (job["queries"],), generator=g))
        query = e + 0.1 * e.std(0) * torch.randn(e.shape, generator=g)
    exact: dict[str, torch.Tensor] = {}

    def exact_lookup() -> dict[str, Any]:
        exact["idx"] = l1_nearest(query, representation=rep, obs_BS=obs, k=1)[0]
        return {}

    out["exact_lookup"] = measured(exact_lookup)
    reference = obs_all[torch.randint(0, len(obs_all), (job["reference_states"],), generator=g)]
    index_config = IndexConfig(seed=job["seed"])
    built: dict[str, Any] = {}

    def build_step() -> dict[str, Any]:
        with torch.no_grad():
            built["index"] = build_index(action_keys(rep, reference), index_config)
        return {"clusters": int(built["index"].sizes_M.shape[0]), "largest_cluster": int(built["index"].sizes_M.max())}

    out["index_build"] = measured(build_step)
    out["index_config"] = dataclasses.asdict(index_config)
    out["index_queries"] = {}
    for c in job["candidates"]:
        index = dataclasses.replace(built["index"], config=dataclasses.replace(index_config, candidates=c))

        def query_step(index=index) -> dict[str, Any]:
            idx = query_index(index, rep, query, obs, k=1)[0]
            return {"recall_at_1": recall_at_k(idx, exact["idx"])}

        out["index_queries"][str(c)] = measured(query_step)
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def worker(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from merlion_core.models.precision import flush_denormals

    torch.set_num_threads(1)
    flush_denormals()
    torch.manual_seed(job["seed"])
    return train_group(job) if job["group"] == "train" else lookup_group(job)


def run_worker(job: dict[str, Any]) -> dict[str, Any]:
    """One group in a fresh process (its own peak RSS); its JSON result, or the error it ended with."""
    done = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["(no output)"])[-1], "returncode": done.returncode}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000,1000000", help="comma-separated |A|")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="training variants to time")
    parser.add_argument("--steps", type=int, default=30, help="timed gradient steps per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--transitions", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--reference-states", type=int, default=16, help="R: states whose phi keys the index")
    parser.add_argument("--candidates", default="512,2048,8192", help="C values of the approximate index")
    parser.add_argument("--lookup-train-steps", type=int, default=50, help="sampled steps before the lookups")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/scale.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    import torch

    common = {
        "seed": args.seed,
        "transitions": args.transitions,
        "steps": args.steps,
        "warmup": args.warmup,
        "queries": args.queries,
        "reference_states": args.reference_states,
        "candidates": [int(c) for c in args.candidates.split(",")],
        "lookup_train_steps": args.lookup_train_steps,
    }
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": 1,
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "settings": {**common, "sizes": args.sizes, "variants": args.variants},
        "load_average_start": os.getloadavg(),
        "sizes": {},
    }
    for size in [int(s) for s in args.sizes.split(",")]:
        row: dict[str, Any] = {"train": {}}
        for variant in args.variants.split(","):
            row["train"][variant] = run_worker({**common, "group": "train", "n_actions": size, "variant": variant})
        row["lookup"] = run_worker({**common, "group": "lookup", "n_actions": size})
        result["sizes"][str(size)] = row
    smallest = result["sizes"][min(result["sizes"], key=int)]["train"]
    for row in result["sizes"].values():
        for variant, timing in row["train"].items():
            base = smallest.get(variant, {}).get("step_ms_median")
            if base and "step_ms_median" in timing:
                timing["step_ratio_vs_smallest_size"] = timing["step_ms_median"] / base
    result["load_average_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
