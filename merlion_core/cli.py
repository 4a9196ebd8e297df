"""The ``merlion`` command: environments, collection and datasets.

Arguments of commands that run an algorithm or a pipeline are generated from that stage's
frozen config dataclass (its field names, defaults and one-line docstrings), so the CLI and
the app's forms never drift from the configs. Every user error ends in a one-line message
on stderr and exit status 1 (2 for usage errors), never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import typing
from pathlib import Path
from typing import Any, Sequence

from merlion_core.config import ConfigError, field_docs, from_dict, to_dict


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


# ---------------------------------------------------------------- config -> argparse
def add_config_arguments(parser: argparse.ArgumentParser, cls: type, rename: dict[str, str] | None = None) -> None:
    """Add one ``--field-name`` option per scalar field of the config dataclass ``cls``."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        tp = hints[field.name]
        if tp not in (int, float, str, bool):
            continue
        flag = "--" + (rename or {}).get(field.name, field.name).replace("_", "-")
        help_text = f"{docs.get(field.name, '')} (default: {field.default})".replace("%", "%%")
        if tp is bool:
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction,
                                default=field.default, help=help_text)
        else:
            parser.add_argument(flag, dest=field.name, type=tp, default=field.default, help=help_text)


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return from_dict(cls, {k: v for k, v in vars(args).items() if k in names})


def _load_json_arg(value: str | None, what: str) -> dict[str, Any]:
    """A JSON object given inline or as a path to a .json file."""
    if not value:
        return {}
    text = Path(value).read_text() if not value.lstrip().startswith("{") and Path(value).is_file() else value
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(f"{what}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise CLIError(f"{what}: expected a JSON object")
    return data


def _prepare_output(path: str, overwrite: bool) -> Path:
    """Refuse to clobber an existing output unless asked; then clear it."""
    import shutil

    out = Path(path)
    if out.exists():
        if not overwrite:
            raise CLIError(f"{out}: already exists (pass --overwrite to replace it)")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    return out


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


# ---------------------------------------------------------------- commands
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
        rows.append({"id": env_id, "short_name": spec.short_name, "n_actions": n_actions,
                     "obs_dim": obs_dim, "description": description})
    if args.json:
        _print_json(rows)
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
    info = env_info(args.env, _load_json_arg(args.env_config, "--env-config"))
    if args.json:
        _print_json(info)
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
    overrides = _load_json_arg(args.env_config, "--env-config")
    out = _prepare_output(args.out, args.overwrite)
    bar = tqdm(total=config.n, unit="transition", desc=f"collect {config.env}/{config.behaviour}",
               disable=args.quiet, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    started = time.perf_counter()
    dataset = collect(config.env, config.behaviour, config.noise, config.n, config.seed,
                      n_envs=config.n_envs, env_overrides=overrides or None, progress=progress)
    bar.close()
    path = save_dataset(dataset, out, format=args.format)
    seconds = time.perf_counter() - started
    summary = dataset_summary(dataset, args.format)
    summary.update({"path": str(path), "seconds": round(seconds, 2), "config": to_dict(config)})
    if args.json:
        _print_json(summary)
    else:
        print(f"wrote {path}: {dataset.n_transitions} transitions, {dataset.n_episodes} episodes, "
              f"behaviour score {summary['behaviour_normalised_score']:.1f} in {seconds:.1f} s")
    return 0


def dataset_summary(dataset: Any, fmt: str) -> dict[str, Any]:
    """The facts ``merlion dataset info`` reports."""
    import numpy as np

    from merlion_core.data.collect import env_normalisers
    from merlion_core.envs import UnknownEnvError, resolve_env_id

    meta = dataset.meta
    expert, random = meta.expert_return, meta.random_return
    if (expert is None or random is None) and meta.env_id:
        try:
            expert, random = env_normalisers(resolve_env_id(meta.env_id))
        except UnknownEnvError:
            pass
    dropped, reason = meta.extra.get("dropped_rows"), meta.extra.get("dropped_reason")
    dropped = dropped if isinstance(dropped, int) and not isinstance(dropped, bool) and dropped > 0 else 0
    returns = dataset.episode_returns()
    mean_return = float(returns.mean()) if len(returns) else float("nan")
    score = None
    if expert is not None and random is not None and len(returns):
        score = float(100.0 * (mean_return - random) / (expert - random))
    return {
        "format": fmt,
        "n_transitions": int(dataset.n_transitions),
        "n_episodes": int(dataset.n_episodes),
        "n_actions": int(dataset.n_actions),
        "obs_dim": int(dataset.obs_dim),
        "distinct_actions": int(dataset.distinct_actions()),
        "mean_return": mean_return,
        "success_rate": float(np.mean(dataset.terminals[dataset.episode_ends])) if len(returns) else None,
        "behaviour_normalised_score": score,
        "env_id": meta.env_id,
        "behaviour": meta.behaviour,
        "noise": meta.noise,
        "seed": meta.seed,
        "expert_return": expert,
        "random_return": random,
        "propensities": bool(dataset.has_propensities),
        # rows of the file its reader did not turn into transitions, and why (recorded in meta.extra)
        "dropped_rows": dropped,
        "dropped_reason": (reason if isinstance(reason, str) else "reason not recorded") if dropped else None,
    }


def cmd_dataset_info(args: argparse.Namespace) -> int:
    from merlion_core.data.io import detect_format, load_dataset

    fmt = detect_format(args.path)
    caps = {"max_actions": args.max_actions} if getattr(args, "max_actions", None) else {}
    summary = dataset_summary(load_dataset(args.path, format=fmt, **caps), fmt)
    if args.json:
        _print_json(summary)
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
    print(f"valid: {args.path}: {fmt}, {dataset.n_transitions} transitions, {dataset.n_episodes} episodes, "
          f"{dataset.n_actions} actions, obs_dim {dataset.obs_dim}, "
          f"propensities {'yes' if dataset.has_propensities else 'no'}"
          + (f", {dropped} rows dropped: {reason if isinstance(reason, str) else 'reason not recorded'}"
             if isinstance(dropped, int) and not isinstance(dropped, bool) and dropped > 0 else "")
          + ("" if dataset.meta.env_id else "; names no simulator (agents are judged by off-policy evaluation)"))
    return 0


def cmd_dataset_convert(args: argparse.Namespace) -> int:
    from merlion_core.data.io import convert

    if not Path(args.input).exists():
        raise CLIError(f"{args.input}: no such file or directory")
    path = convert(args.input, _prepare_output(args.output, args.overwrite), to=args.to)
    print(f"wrote {path} ({args.to})")
    return 0


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from merlion_core.data.collect import CollectConfig
    from merlion_core.data.io import FORMATS

    parser = argparse.ArgumentParser(prog="merlion", description=__doc__.splitlines()[0])
    parser.add_argument("--multiwoz-dir", help="folder with the MultiWOZ files for the dialogue env "
                        "(sets MERLION_MULTIWOZ_DIR for this command)")
    sub = parser.add_subparsers(dest="command", required=True)

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
    from merlion_core.data.dataset import MAX_ACTIONS

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

    from merlion_core import cli_agent, cli_bench, cli_jobs, cli_represent

    cli_represent.add_commands(sub)
    cli_agent.add_commands(sub)
    cli_bench.add_commands(sub)
    cli_jobs.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.multiwoz_dir:
        import os

        from merlion_core.data.multiwoz_io import ENV_VAR

        os.environ[ENV_VAR] = args.multiwoz_dir
    from merlion_core.data.dataset import DatasetError
    from merlion_core.envs import UnknownEnvError

    try:
        return int(args.func(args) or 0)
    except (CLIError, DatasetError, ConfigError, UnknownEnvError, ValueError, OSError) as exc:
        print(f"merlion: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("merlion: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # python -m merlion_core.cli: run the imported module, so that its CLIError
    from merlion_core.cli import main as package_main  # is the one cli_* modules raise

    sys.exit(package_main())
