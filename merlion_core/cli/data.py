"""``merlion envs``, ``env-info``, ``collect`` and ``dataset info|validate|convert``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from merlion_core.cli.common import (
    CLIError,
    add_config_arguments,
    config_from_args,
    load_json_arg,
    prepare_output,
    print_json,
)
from merlion_core.config import to_dict
from merlion_core.data.summary import dataset_summary


def cmd_envs(args: argparse.Namespace) -> int:
    from merlion_core.data.multiwoz_io import MultiWOZDataMissing
    from merlion_core.envs import ENV_SPECS, make_model

    rows = []
    for env_id, spec in ENV_SPECS.items():
        try:
            model = make_model(env_id)
            n_actions, obs_dim, description = model.n_actions, model.obs_dim, spec.description
        except MultiWOZDataMissing:  # listed without its data: the action count is the config's
            n_actions, obs_dim = spec.config_cls().n_actions, None
            description = f"{spec.description} [data not found: set MERLION_MULTIWOZ_DIR]"
        rows.append(
            {
                "id": env_id,
                "short_name": spec.short_name,
                "n_actions": n_actions,
                "obs_dim": obs_dim,
                "description": description,
            }
        )
    if args.json:
        print_json(rows)
        return 0
    width = max(len(r["id"]) for r in rows)
    print(f"{'id':<{width}}  {'short name':<15} {'actions':>7}  description")
    for r in rows:
        print(f"{r['id']:<{width}}  {r['short_name']:<15} {r['n_actions']:>7}  {r['description']}")
    return 0


def env_info(env: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    from merlion_core.data.collect import env_normalisers
    from merlion_core.envs import make_model, resolve_env_id

    model = make_model(env, overrides)
    expert, random = env_normalisers(env, overrides)
    info = {
        "id": resolve_env_id(env),
        "n_actions": model.n_actions,
        "obs_dim": model.obs_dim,
        "max_steps": model.max_steps,
        "expert_return": expert,
        "random_return": random,
        "config": to_dict(model.config),
    }
    info.update(model.info())
    return info


def cmd_env_info(args: argparse.Namespace) -> int:
    info = env_info(args.env, load_json_arg(args.env_config, "--env-config"))
    if args.json:
        print_json(info)
    else:
        for key, value in info.items():
            if key != "config":
                print(f"{key:>22}: {value}")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from merlion_core.data.collect import CollectConfig, collect
    from merlion_core.data.io import save_dataset

    config = config_from_args(CollectConfig, args)
    overrides = load_json_arg(args.env_config, "--env-config")
    out = prepare_output(args.out, args.overwrite)
    # The preparation (the env's normalisers, the behaviour's planner: seconds on the mazes, most
    # of a short collection) is announced as it starts, and the bar starts with the stepping
    # (collect's progress(0, n)): a bar started before the preparation counted its seconds as
    # collection time and showed an ETA of minutes for a job of seconds.
    bars: list = []

    def stage(message: str) -> None:
        if not args.quiet:
            print(f"collect: preparing {message} ...", file=sys.stderr, flush=True)

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(
                tqdm(
                    total=total,
                    unit="transition",
                    desc=f"collect {config.env}/{config.behaviour}",
                    disable=args.quiet,
                    file=sys.stderr,
                )
            )
        bars[0].update(done - bars[0].n)

    started = time.perf_counter()
    try:
        dataset = collect(
            config.env,
            config.behaviour,
            config.noise,
            config.n,
            config.seed,
            n_envs=config.n_envs,
            env_overrides=overrides or None,
            progress=progress,
            stage=stage,
        )
    finally:
        for bar in bars:
            bar.close()
    path = save_dataset(dataset, out, format=args.format)
    seconds = time.perf_counter() - started
    summary = dataset_summary(dataset, args.format)
    summary.update({"path": str(path), "seconds": round(seconds, 2), "config": to_dict(config)})
    if args.json:
        print_json(summary)
    else:
        print(
            f"wrote {path}: {dataset.n_transitions} transitions, {dataset.n_episodes} episodes, "
            f"behaviour score {summary['behaviour_normalised_score']:.1f} in {seconds:.1f} s"
        )
    return 0


def cmd_dataset_info(args: argparse.Namespace) -> int:
    from merlion_core.data.io import detect_format, load_dataset

    fmt = detect_format(args.path)
    caps = {"max_actions": args.max_actions} if getattr(args, "max_actions", None) else {}
    summary = dataset_summary(load_dataset(args.path, format=fmt, **caps), fmt)
    if args.json:
        print_json(summary)
    else:
        for key, value in summary.items():
            print(f"{key:>26}: {value}")
    return 0


def cmd_dataset_validate(args: argparse.Namespace) -> int:
    from merlion_core.data.io import detect_format, load_dataset

    try:
        fmt = detect_format(args.path)
        caps = {"max_actions": args.max_actions} if getattr(args, "max_actions", None) else {}
        dataset = load_dataset(args.path, format=fmt, **caps)
    except Exception as exc:  # no input may crash validate: every failure is one line
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"invalid: {message}", file=sys.stderr)
        return 1
    dropped, reason = dataset.meta.extra.get("dropped_rows"), dataset.meta.extra.get("dropped_reason")
    print(
        f"valid: {args.path}: {fmt}, {dataset.n_transitions} transitions, {dataset.n_episodes} episodes, "
        f"{dataset.n_actions} actions, obs_dim {dataset.obs_dim}, "
        f"propensities {'yes' if dataset.has_propensities else 'no'}"
        + (
            f", {dropped} rows dropped: {reason if isinstance(reason, str) else 'reason not recorded'}"
            if isinstance(dropped, int) and not isinstance(dropped, bool) and dropped > 0
            else ""
        )
        + ("" if dataset.meta.env_id else "; names no simulator (agents are judged by off-policy evaluation)")
    )
    return 0


def cmd_dataset_convert(args: argparse.Namespace) -> int:
    from merlion_core.data.io import convert

    if not Path(args.input).exists():
        raise CLIError(f"{args.input}: no such file or directory")
    path = convert(args.input, prepare_output(args.output, args.overwrite), to=args.to)
    print(f"wrote {path} ({args.to})")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    from merlion_core.data.collect import CollectConfig
    from merlion_core.data.dataset import MAX_ACTIONS
    from merlion_core.data.io import FORMATS

    p = sub.add_parser("envs", help="list the registered environments and their action counts")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_envs)

    p = sub.add_parser("env-info", help="facts about one environment (normalisers, classes)")
    p.add_argument("env", help="short name (maze, multistep-maze, recommender) or full id")
    p.add_argument("--env-config", help="JSON object or .json file of env config overrides")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_env_info)

    p = sub.add_parser("collect", help="collect a logged dataset with a behaviour policy")
    add_config_arguments(p, CollectConfig)
    p.add_argument("--env-config", help="JSON object or .json file of env config overrides")
    p.add_argument("--out", required=True, help="output path (a directory for the native format)")
    p.add_argument("--format", default="native", choices=FORMATS, help="output format (default: native)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_collect)

    ds = sub.add_parser("dataset", help="inspect, validate and convert datasets")
    ds_sub = ds.add_subparsers(dest="dataset_command", required=True)
    cap_help = f"largest action count accepted (default: {MAX_ACTIONS:,}, MAX_ACTIONS)"
    p = ds_sub.add_parser("info", help="summary of a dataset")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--max-actions", type=int, default=None, help=cap_help)
    p.set_defaults(func=cmd_dataset_info)
    p = ds_sub.add_parser("validate", help="exit 0 if the file is a valid dataset, else 1 and the reason")
    p.add_argument("path")
    p.add_argument("--max-actions", type=int, default=None, help=cap_help)
    p.set_defaults(func=cmd_dataset_validate)
    p = ds_sub.add_parser("convert", help="convert between dataset formats")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--to", required=True, choices=FORMATS, help="output format")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=cmd_dataset_convert)
