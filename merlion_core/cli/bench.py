"""``merlion bench``: the paper's benchmark on one env (options generated from BenchConfig)."""

from __future__ import annotations

import argparse
import json
import sys

from merlion_core.cli.common import add_config_arguments


def add_commands(sub: argparse._SubParsersAction) -> None:
    from merlion_core.benchmark.methods import ABLATIONS, FIELD_METHODS, PAPER_METHODS, PEER_METHODS
    from merlion_core.benchmark.runner import BenchConfig

    p = sub.add_parser(
        "bench",
        help="benchmark methods x seeds on one env (per-run JSON, summary, table, curves)",
        description="Groups: paper = "
        + ",".join(PAPER_METHODS)
        + "; ablations = "
        + ",".join(ABLATIONS)
        + "; peers = "
        + ",".join(PEER_METHODS)
        + "; field = "
        + ",".join(FIELD_METHODS)
        + ". A group leaves out the methods that do not apply to the env (external on dialogue, as the "
        "paper; DecQN where the actions are not factorised) and the table lists them as not applicable. "
        "Rows of earlier commands with the same settings in --out stay in the table.",
    )
    p.add_argument("--env", required=True, help="environment short name or id (maze, multistep-maze, ...)")
    p.add_argument("--methods", default="paper", help="comma list of methods or groups (default: paper)")
    p.add_argument("--out", required=True, help="results folder (runs/, summary.json, README.md, curves.svg)")
    p.add_argument("--dataset", help="logged dataset to use (default: collect one into OUT/work/dataset)")
    p.add_argument("--peer-python", help="python of a venv with d3rlpy, for the d3rlpy-* methods")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: write summary.json, README.md and curves.svg from the runs already in --out",
    )
    add_config_arguments(p, BenchConfig)
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    import dataclasses

    from merlion_core.benchmark.runner import BenchConfig, run_benchmark

    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(BenchConfig)}
    seeds, steps = options.pop("seeds"), options.pop("steps")

    def progress(event: str, info: dict) -> None:
        if event == "run":
            score = info["last_score"]
            text = "failed" if score is None else f"last {score:.1f}"
            print(f"bench: {info['method']} seed {info['seed']}: {text}", file=sys.stderr, flush=True)
        elif event == "dataset":
            print(
                f"bench: dataset {info['path']} (behaviour score {info['behaviour_score']:.1f}; normalisers: "
                f"expert {info['expert_return']:.2f}, random {info['random_return']:.2f})",
                file=sys.stderr,
                flush=True,
            )

    summary = run_benchmark(
        args.env,
        args.methods,
        seeds,
        steps,
        args.out,
        progress,
        dataset=args.dataset,
        peer_python=args.peer_python,
        report_only=args.report_only,
        **options,
    )
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        from merlion_core.benchmark.report import markdown_table

        print(markdown_table(summary))
    return 0
