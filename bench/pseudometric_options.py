"""MERLION's pseudometric with the sampled reward (Eq. 7 as written) against R_hat(s, e_i) for both
actions (``reward_target="model"``): median Spearman against the true pseudometric, class separation,
and how well the OOD indicator separates (share of uniform actions flagged against the share of the
dataset's own logged actions flagged, at several tau), per encoder seed.

Usage:
  python bench/pseudometric_options.py --env maze --dataset runs/maze100k --reward-target model --seed 0 \
      [--encoder runs/enc-maze-s0]   # an existing encoder of these settings instead of training one
  python bench/pseudometric_options.py --env maze --report
Writes bench/results/pseudometric-options/<env>/<reward_target>-seed<k>.json; --report: summary.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OUT = REPO / "bench" / "results" / "pseudometric-options"


def run(args: argparse.Namespace) -> None:
    import torch

    from merlion_core.pipelines.encoder import diagnose_encoder, train_encoder

    torch.set_num_threads(1)
    encoder = args.encoder
    seconds = None
    if encoder is None:
        encoder = str(REPO / "runs" / "pseudometric-options" / f"{args.env}-{args.reward_target}-s{args.seed}")
        started = time.perf_counter()
        train_encoder(
            args.dataset,
            "merlion",
            encoder,
            overrides={"seed": args.seed, "reward_target": args.reward_target},
            device="cpu",
        )
        seconds = time.perf_counter() - started
    config = json.loads((Path(encoder) / "config.json").read_text())
    recorded = config.get("config", config)
    if recorded.get("reward_target", "sampled") != args.reward_target or recorded.get("seed") != args.seed:
        raise SystemExit(
            f"{encoder}: trained with reward_target {recorded.get('reward_target', 'sampled')!r}, "
            f"seed {recorded.get('seed')}; not {args.reward_target!r}, seed {args.seed}"
        )
    result = diagnose_encoder(encoder, dataset_path=args.dataset)
    record = {
        "env": args.env,
        "reward_target": args.reward_target,
        "seed": args.seed,
        "encoder": encoder,
        "train_seconds": seconds,
        **result,
    }
    folder = OUT / args.env
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{args.reward_target}-seed{args.seed}.json").write_text(json.dumps(record, indent=1))
    print(
        f"{args.env} {args.reward_target} seed {args.seed}: Spearman {result['spearman_median']:.3f}, "
        f"class separation {result['class_separation']:.3f}"
    )


def report(env: str) -> None:
    folder = OUT / env
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*-seed*.json"))]
    summary = {}
    for target in ("sampled", "model"):
        rows = [r for r in records if r["reward_target"] == target]
        if not rows:
            continue
        summary[target] = {
            "seeds": sorted(r["seed"] for r in rows),
            **{
                key: {
                    "mean": float(np.mean([r[key] for r in rows])),
                    "sd": float(np.std([r[key] for r in rows], ddof=1)) if len(rows) > 1 else None,
                }
                for key in ("spearman_median", "class_separation", "ood_fraction")
            },
            "ood_separation": [
                {
                    "tau": item["tau"],
                    "uniform_actions_flagged": float(
                        np.mean([r["ood_separation"][i]["uniform_actions_flagged"] for r in rows])
                    ),
                    "logged_actions_flagged": float(
                        np.mean([r["ood_separation"][i]["logged_actions_flagged"] for r in rows])
                    ),
                }
                for i, item in enumerate(rows[0]["ood_separation"])
            ],
        }
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", required=True)
    parser.add_argument("--dataset")
    parser.add_argument("--reward-target", choices=("sampled", "model"), default="model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encoder")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if args.report:
        report(args.env)
    elif not args.dataset:
        parser.error("--dataset is needed to train or diagnose")
    else:
        run(args)


if __name__ == "__main__":
    main()
