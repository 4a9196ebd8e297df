"""The MERLION paper's Fig. 7 (appendix A.6): online RL on fixed action representations learned from the
offline data, on the multi-step maze: MERLION, Transition and Reconstruction, several seeds.

Each representation is trained on the benchmark's dataset with the benchmark's settings (the encoder of
``merlion bench``'s ``<method>-cql`` row: 10,000 steps, the paper's |E|; reused when present), then the
online learner (merlion_core/pipelines/online.py: SAC on the latent actions, real actions through the
L1 lookup) trains in the simulator. One JSON per run, a summary with the mean and 95% interval over
seeds at every evaluation, and the curves as SVG.

Usage: python bench/online_fig7.py --dataset runs/multistep100k [--seeds 5] [--env-steps 30000]
  [--methods merlion,transition,reconstruction] [--learner '{"backup_entropy": false}']
  [--merlion-encoder-updates 0] [--out bench/results/online-fig7] [--work runs/online-fig7] [--report-only]
  [--shard K/N]  (train only every N-th run from the K-th: N processes, one per core, share the work)
  [--offline-summary results/multistep-maze/summary.json]  (the offline table's <rep>-cql rows to compare)
  (dataset: merlion collect --env multistep-maze --n 100000 --seed 0 --out runs/multistep100k)
A finished run (its JSON under --out with the same settings) is not trained again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from merlion_core.benchmark.report import (  # noqa: E402
    compare_intervals,
    curves_svg,
    last3_interval,
    summarise_method,
)

REPRESENTATIONS = ("merlion", "transition", "reconstruction")


def run_one(args: argparse.Namespace, method: str, seed: int, settings: dict[str, Any]) -> dict[str, Any]:
    """Train (or reuse) the encoder, then the online learner; returns the run's record."""
    import torch

    from merlion_core.algos.online import OnlineConfig
    from merlion_core.benchmark.runner import train_bench_encoder
    from merlion_core.data.io import load_dataset
    from merlion_core.pipelines.online import train_online

    torch.set_num_threads(1)
    data = load_dataset(args.dataset)
    work = Path(args.work)
    encoder = train_bench_encoder(
        args.dataset,
        f"{method}-cql",
        seed,
        args.encoder_steps,
        str(work / "encoders" / f"{method}-seed{seed}"),
        "cpu",
        data.meta.env_id,
        data.content_digest(),
        args.precision,
    )
    config = OnlineConfig(
        env_steps=args.env_steps,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        seed=seed,
        updates_per_step=args.updates_per_step,
        encoder_updates_per_step=args.merlion_encoder_updates if method == "merlion" else 0,
        learner=json.loads(args.learner),
    )
    result = train_online(
        None,
        encoder,
        work / "agents" / f"{method}-seed{seed}",
        config=config,
        precision=args.precision,
        progress=lambda step, point: print(
            f"  {method} seed {seed}: {step} env steps, score {point.get('normalised_score', float('nan')):.1f}",
            flush=True,
        ),
    )
    metrics = json.loads((Path(result["out"]) / "metrics.json").read_text())
    curve = metrics["curve"]
    scores = [p["normalised_score"] for p in curve]
    return {
        "method": method,
        "seed": seed,
        "settings": settings,
        "encoder": encoder,
        "curve": curve,
        "last_score": scores[-1] if scores else None,
        "best_score": max(scores) if scores else None,
        "last_success_rate": curve[-1].get("success_rate") if curve else None,
        "train_seconds": result["seconds"],
        "env_steps_per_second": result["env_steps_per_second"],
        "precision": result["precision"],
    }


def comparisons(rows: dict[str, Any], behaviour: float, offline: dict[str, Any] | None) -> dict[str, Any]:
    """Each representation's online last-3 score against the behaviour policy, the other representations
    online, and the same representation's offline CQL row (``offline``: a benchmark summary.json of the
    same dataset): 'above' / 'below' only where the 95% intervals separate, else 'not resolved'."""
    online = {method: last3_interval(row) for method, row in rows.items()}
    result: dict[str, Any] = {
        "vs_behaviour": {m: compare_intervals(i, (behaviour, behaviour)) for m, i in online.items()},
        "between_representations": {
            f"{a} vs {b}": compare_intervals(online[a], online[b]) for a in online for b in online if a < b
        },
    }
    if offline is not None:
        result["vs_offline_cql"] = {}
        for method, row in rows.items():
            other = offline["methods"].get(f"{method}-cql")
            if other is None:
                continue
            result["vs_offline_cql"][method] = {
                "online_last3": [row.get("last3_mean"), row.get("last3_ci95")],
                "offline_method": f"{method}-cql",
                "offline_last3": [other.get("last3_mean"), other.get("last3_ci95")],
                "offline_seeds": other.get("seeds"),
                "online_vs_offline": compare_intervals(online[method], last3_interval(other)),
            }
    return result


def parse_shard(parser: argparse.ArgumentParser, text: str) -> tuple[int, int]:
    """'K/N' -> (K, N) with 0 <= K < N, or a one-line parser error."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        parser.error(f"--shard: expected K/N such as 0/2, got {text!r}")
    if not 0 <= k < n:
        parser.error(f"--shard: K must be in [0, N), got {text!r}")
    return k, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="runs/multistep100k")
    parser.add_argument("--methods", default=",".join(REPRESENTATIONS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--env-steps", type=int, default=30_000)
    parser.add_argument("--eval-every", type=int, default=3_000)
    parser.add_argument("--updates-per-step", type=int, default=4, help="gradient steps per vector step of 16 envs")
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--encoder-steps", type=int, default=10_000)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument(
        "--merlion-encoder-updates",
        type=int,
        default=0,
        help="fine-tuning steps of the MERLION encoder per vector step (OnlineConfig.encoder_updates_per_step; "
        "the other representations stay fixed)",
    )
    parser.add_argument("--learner", default="{}", help="JSON object of latent CQL overrides for the online learner")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "online-fig7"))
    parser.add_argument("--work", default="runs/online-fig7")
    parser.add_argument("--report-only", action="store_true", help="train nothing; write the summary and SVG")
    parser.add_argument(
        "--offline-summary",
        default="results/multistep-maze/summary.json",
        help="the offline benchmark's summary.json on the same dataset (its <rep>-cql rows), or '' for none",
    )
    parser.add_argument("--shard", default="0/1", help="K/N: train the runs whose index (seed-major) is K modulo N")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(REPRESENTATIONS))
    if unknown:
        parser.error(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(REPRESENTATIONS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "env_steps": args.env_steps,
        "eval_every": args.eval_every,
        "eval_episodes": args.eval_episodes,
        "encoder_steps": args.encoder_steps,
        "dataset": args.dataset,
        "learner": json.loads(args.learner),
        "updates_per_step": args.updates_per_step,
    }
    if args.merlion_encoder_updates:  # recorded only when used: earlier records keep their settings
        settings["merlion_encoder_updates_per_step"] = args.merlion_encoder_updates
    shard, shards = parse_shard(parser, args.shard)
    if not args.report_only:
        runs = [(seed, method) for seed in range(args.seeds) for method in methods]
        # seed-major: an interrupted run has every method at its first seeds
        for seed, method in runs[shard::shards]:
            path = out / f"{method}-seed{seed}.json"
            if path.exists() and json.loads(path.read_text()).get("settings") == settings:
                continue
            print(f"{method} seed {seed}", flush=True)
            path.write_text(json.dumps(run_one(args, method, seed, settings), indent=1))
    rows = {}
    for method in methods:
        records = [json.loads(p.read_text()) for p in sorted(out.glob(f"{method}-seed*.json"))]
        records = [r for r in records if r.get("settings") == settings and r["seed"] < args.seeds]
        rows[method] = summarise_method(records)
    import numpy as np

    from merlion_core.benchmark.runner import bench_normalisers
    from merlion_core.data.collect import normalised_score
    from merlion_core.data.io import load_dataset

    data = load_dataset(args.dataset)
    normalisers = bench_normalisers(data)
    behaviour = normalised_score(data.episode_returns(), normalisers["expert_return"], normalisers["random_return"])
    summary = {
        "env_id": data.meta.env_id,
        "settings": settings,
        "behaviour_score": float(np.mean(behaviour)),
        "normalisers": normalisers,
        "methods": rows,
    }
    offline = None
    if args.offline_summary:
        offline = json.loads(Path(args.offline_summary).read_text())
        if offline.get("settings", {}).get("dataset_sha256") not in (None, data.content_digest()):
            parser.error(f"--offline-summary: {args.offline_summary} was measured on another dataset")
        summary["offline_summary"] = args.offline_summary
    summary["comparisons"] = comparisons(rows, float(np.mean(behaviour)), offline)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "fig7.svg").write_text(
        curves_svg(summary, x_label="env steps (online)", reference_label="behaviour (offline data)")
    )
    for method, row in rows.items():
        print(f"{method}: {row['seeds']} seeds, last {row['last_mean']} +- {row['last_ci95']}")
    print(json.dumps(summary["comparisons"], indent=1))


if __name__ == "__main__":
    main()
