"""Encoder speed on the 100k-transition maze dataset (medium, 50% noise).

Measures: 10,000 steps of all four models of Algorithm 2; embed_all for 64 states x 4096
actions; 300 warm-start steps. Usage: python bench/encoder.py [--threads 1] [--steps 10000]
[--precision fp32|bf16] (the networks' precision while training, models/precision.py)
[--no-flush-denormals] (subnormal floats kept, as before the training pipelines flushed them).
Writes bench/results/encoder.json (--out to change); the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from merlion_core.models.precision import compute_precision, flush_denormals
from merlion_core.representation.merlion import build, config_for_env, train_steps, warm_start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--out", default="bench/results/encoder.json")
    parser.add_argument("--dataset", help="a saved maze dataset (default: collect medium/0.5/100k/seed 0)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument(
        "--no-flush-denormals",
        action="store_true",
        help="leave subnormal floats on (the training pipelines flush them to zero)",
    )
    parser.add_argument("--config", default="{}", help="JSON object of MerlionConfig overrides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.no_flush_denormals:
        flush_denormals()
    if args.dataset:
        from merlion_core.data.io import load_dataset

        dataset = load_dataset(args.dataset)
    else:
        from merlion_core.data.collect import collect

        dataset = collect("maze", "medium", 0.5, 100_000, seed=0)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else (args.device if args.device != "auto" else "cpu")
    )
    config = config_for_env(dataset.meta.env_id, **{**json.loads(args.config), "steps": args.steps, "log_every": 1000})
    rep = build(config, dataset.n_actions, dataset.obs_dim)
    load_at_start = os.getloadavg()
    started = time.perf_counter()
    with compute_precision(args.precision):
        for _ in train_steps(rep, dataset, config, device=str(device)):
            pass
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_seconds = time.perf_counter() - started

    states = torch.as_tensor(dataset.observations[:64], device=device)
    with torch.no_grad():
        rep.embed_all(states)  # warm-up
        timings = []
        for _ in range(5):
            t0 = time.perf_counter()
            table = rep.embed_all(states)
            if device.type == "cuda":
                torch.cuda.synchronize()
            timings.append(time.perf_counter() - t0)
    started = time.perf_counter()
    for _ in warm_start(
        rep, dataset, p=0.1, tau=0.5, steps=300, yield_every=100, states=dataset.observations[:8], device=str(device)
    ):
        pass
    warm_seconds = time.perf_counter() - started
    result = {
        "machine": {
            "device": str(device),
            "cpus": os.cpu_count(),
            "torch_threads": args.threads,
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "precision": args.precision,
        "flush_denormals": not args.no_flush_denormals,
        "load_average": {"start": load_at_start, "end": os.getloadavg()},
        "train_steps": args.steps,
        "train_seconds": train_seconds,
        "train_seconds_per_10k_steps": train_seconds * 10_000 / args.steps,
        "embed_all_64x4096_ms_median": 1000 * sorted(timings)[len(timings) // 2],
        "embed_all_shape": list(table.shape),
        "warm_start_300_steps_seconds": warm_seconds,
        "config": {
            k: getattr(config, k)
            for k in ("dim", "p", "tau", "lr", "batch_size", "reward_scale", "behaviour_loss", "sparse_tables")
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
