"""``merlion train-encoder`` and ``merlion diagnose``: options generated from the method configs."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from merlion_core.cli.common import add_config_union_arguments, add_precision_argument, config_overrides, print_json


def add_commands(sub: argparse._SubParsersAction) -> None:
    from merlion_core.representation.registry import METHODS

    p = sub.add_parser("train-encoder", help="learn an action representation from a dataset")
    p.add_argument("--dataset", required=True, help="dataset path (any supported format)")
    p.add_argument("--method", required=True, choices=list(METHODS), help="representation method")
    p.add_argument("--out", required=True, help="output folder (weights.pt, config.json, metrics.json)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    add_precision_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    add_config_union_arguments(
        p,
        {name: (spec.config_cls, spec.config_defaults) for name, spec in METHODS.items()},
        "method options (only those of the chosen method apply; unset = its default)",
    )
    p.set_defaults(func=cmd_train_encoder)

    p = sub.add_parser("diagnose", help="compare a representation with its env's true pseudometric")
    p.add_argument("--encoder", required=True, help="representation folder from train-encoder")
    p.add_argument("--dataset", help="dataset to draw states from (default: the one it was trained on)")
    p.add_argument("--states", type=int, default=64, help="number of states (default: 64)")
    p.add_argument("--actions", type=int, default=512, help="actions sampled per call (default: 512)")
    p.add_argument("--seed", type=int, default=0, help="seed of the state and action samples")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_diagnose)


def cmd_train_encoder(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from merlion_core.pipelines.encoder import train_encoder

    overrides = config_overrides(args)
    bar = tqdm(total=None, unit="step", desc=f"train {args.method}", disable=args.quiet, file=sys.stderr)

    def progress(step: int, metrics: dict[str, float]) -> None:
        bar.update(step - bar.n)
        bar.set_postfix({k: f"{v:.4g}" for k, v in list(metrics.items())[:3]}, refresh=False)

    def on_config(config: Any) -> None:
        bar.reset(total=max(int(getattr(config, "steps", 0)), 1))

    result = train_encoder(
        args.dataset,
        args.method,
        args.out,
        overrides=overrides,
        device=args.device,
        precision=args.precision,
        progress=progress,
        on_config=on_config,
    )
    bar.close()
    if args.json:
        print_json(result)
    else:
        print(f"wrote {result['out']}: {args.method} in {result['seconds']:.1f} s")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from merlion_core.pipelines.encoder import diagnose_encoder

    result: dict[str, Any] = diagnose_encoder(
        args.encoder, n_states=args.states, n_action_samples=args.actions, seed=args.seed, dataset_path=args.dataset
    )
    if args.json:
        print_json(result)
    else:
        for key, value in result.items():
            if key != "spearman_per_state":
                print(f"{key:>20}: {value}")
    return 0
