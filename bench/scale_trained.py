"""MERLION's encoder step at catalogue scale *as it trains* on real data (issue 24).

bench/scale.py times steps of an untrained encoder on synthetic data: there G is nearly flat and
21-31% of a batch's rows need the exact max scan of Eq. 7's OOD indicator, the worst case. This
script trains the catalogue-scale variant (behaviour_loss="sampled", sparse_tables=True) on a
recommender dataset per |A| and records, every ``--window`` steps, the seconds per step and the
share of rows that needed the exact scan; the figure reported is the median step time over the last
``--tail`` share of the windows (the trained regime), beside the first window's. Each |A| runs in
its own process (its own peak RSS), one torch thread, the load average recorded per size.

Usage: python bench/scale_trained.py --datasets 1000=runs/recommender100k,100000=runs/recommender-100000
  [--steps 3000] [--window 100] [--tail 0.2] [--seed 0] [--out bench/results/scale-trained.json]
(datasets: merlion collect --env recommender --n 100000 --seed 0 --env-config '{"n_videos": N}')
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def train_one(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from merlion_core.data.io import load_dataset
    from merlion_core.models.precision import flush_denormals
    from merlion_core.representation.merlion import build, config_for_env, train_steps

    torch.set_num_threads(1)
    flush_denormals()
    if job.get("upper_bound_every_step"):  # the schedule off: the bound on max G tried at every step
        from merlion_core.models.heads import BehaviourModel

        BehaviourModel.upper_bound_due = lambda self: True  # type: ignore[method-assign]
    data = load_dataset(job["dataset"])
    config = config_for_env(
        data.meta.env_id,
        seed=job["seed"],
        steps=job["steps"],
        log_every=job["window"],
        behaviour_loss="sampled",
        sparse_tables=True,
    )
    rep = build(config, data.n_actions, data.obs_dim)
    load_start = os.getloadavg()
    windows: list[dict[str, Any]] = []
    last = time.perf_counter()
    for step, metrics in train_steps(rep, data, config, device="cpu"):
        now = time.perf_counter()
        windows.append(
            {
                "step": step,
                "ms_per_step": 1000 * (now - last) / job["window"],
                "max_scan_share": metrics.get("max_scan_share"),
                "behaviour_loss": metrics.get("behaviour_loss"),
                "ood_share": metrics.get("ood_share"),
            }
        )
        last = now
    tail = windows[-max(1, round(job["tail"] * len(windows))) :]
    return {
        "n_actions": data.n_actions,
        "dataset": job["dataset"],
        "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
        "first_window_ms_per_step": windows[0]["ms_per_step"],
        "trained_ms_per_step_median": statistics.median(w["ms_per_step"] for w in tail),
        "trained_windows": len(tail),
        "trained_max_scan_share_mean": statistics.fmean(w["max_scan_share"] or 0.0 for w in tail),
        "windows": windows,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "load_start": load_start,
        "load_end": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", help="comma-separated N=PATH (N: the dataset's action count, a label)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--window", type=int, default=100, help="steps per timing window (log_every)")
    parser.add_argument("--tail", type=float, default=0.2, help="share of the last windows that make the figure")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/scale-trained.json")
    parser.add_argument(
        "--upper-bound-every-step",
        action="store_true",
        help="try the upper bound on max G at every step (BehaviourModel.upper_bound_due off), as before its schedule",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(train_one(json.loads(args.worker))))
        return
    if not args.datasets:
        parser.error("--datasets is required")
    results: dict[str, Any] = {}
    for item in args.datasets.split(","):
        label, _, path = item.partition("=")
        job = {
            "dataset": path,
            "steps": args.steps,
            "window": args.window,
            "tail": args.tail,
            "seed": args.seed,
            "upper_bound_every_step": args.upper_bound_every_step,
        }
        print(f"|A| = {label}: {path}", flush=True)
        done = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            results[label] = {"error": (done.stderr.strip().splitlines() or ["(no output)"])[-1]}
        else:
            results[label] = json.loads(done.stdout.strip().splitlines()[-1])
            r = results[label]
            print(
                f"  first {r['first_window_ms_per_step']:.1f} ms/step, trained {r['trained_ms_per_step_median']:.1f}"
                f" ms/step, scan share {r['trained_max_scan_share_mean']:.4f}",
                flush=True,
            )
    base = results.get("1000", {}).get("trained_ms_per_step_median")
    summary = {
        label: {
            "trained_ms_per_step_median": r.get("trained_ms_per_step_median"),
            "ratio_to_1000": (r["trained_ms_per_step_median"] / base)
            if base and "trained_ms_per_step_median" in r
            else None,
        }
        for label, r in results.items()
    }
    document = {
        "settings": vars(args) | {"worker": None},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "summary": summary,
        "goal": "encoder step at 10^6 actions at most 3x its cost at 10^3 (issue 24)",
        "sizes": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
