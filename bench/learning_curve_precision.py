"""The slow learning test's run (tests/test_learning.py) at fp32 and at bf16: its whole curve.

Usage: python bench/learning_curve_precision.py --precision fp32|bf16 [--seed 0]
The open 64-action maze, 20k medium 50%-noise transitions, a 1,000-step MERLION encoder and 2,000
steps of latent CQL (batch 64, 250 BC steps), evaluated every 250 steps on 50 episodes, encoder and
agent in --precision. Writes bench/results/learning-curve/<precision>-seed<k>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from test_learning import OPEN_MAZE  # noqa: E402

from merlion_core.data.collect import collect  # noqa: E402
from merlion_core.data.io import save_dataset  # noqa: E402
from merlion_core.pipelines.agent import train_agent  # noqa: E402
from merlion_core.pipelines.encoder import train_encoder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", required=True, choices=("fp32", "bf16"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        save_dataset(collect("maze", "medium", 0.5, 20_000, seed=0, env_overrides=OPEN_MAZE), tmp / "data")
        train_encoder(
            tmp / "data",
            "merlion",
            tmp / "encoder",
            overrides={"steps": 1000, "seed": args.seed},
            device="cpu",
            precision=args.precision,
        )
        train_agent(
            tmp / "data",
            "cql",
            tmp / "agent",
            steps=2000,
            encoder_dir=tmp / "encoder",
            overrides={"batch_size": 64, "seed": args.seed, "bc_steps": 250},
            eval_every=250,
            eval_episodes=50,
            device="cpu",
            precision=args.precision,
        )
        curve = json.loads((tmp / "agent" / "metrics.json").read_text())["curve"]
    record = {
        "precision": args.precision,
        "seed": args.seed,
        "success_rate": [p["success_rate"] for p in curve],
        "steps": [p["step"] for p in curve],
        "critic_argmax_score_last": curve[-1].get("diagnostics", {}).get("critic_argmax_score"),
        "normalised_score": [p["normalised_score"] for p in curve],
    }
    out = REPO / "bench" / "results" / "learning-curve" / f"{args.precision}-seed{args.seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
