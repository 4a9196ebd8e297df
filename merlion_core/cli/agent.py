"""``merlion train-agent`` and ``merlion evaluate``: options generated from the algorithm configs."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from merlion_core.cli.common import (
    add_config_union_arguments,
    add_precision_argument,
    config_overrides,
    load_json_arg,
    print_json,
)

if TYPE_CHECKING:
    from merlion_core.pipelines.ope import OPEConfig


def add_commands(sub: argparse._SubParsersAction) -> None:
    from merlion_core.algos.registry import ALGORITHMS

    p = sub.add_parser("train-agent", help="train an offline RL agent (raw actions, or latent with --encoder)")
    p.add_argument("--dataset", required=True, help="dataset path (any supported format)")
    p.add_argument("--algo", required=True, choices=list(ALGORITHMS), help="algorithm")
    p.add_argument("--encoder", help="representation folder (latent algorithms only)")
    p.add_argument("--steps", type=int, required=True, help="gradient steps")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate every K steps (0: only at the end)")
    p.add_argument("--eval-episodes", type=int, default=20, help="episodes per evaluation (default: 20)")
    p.add_argument("--out", required=True, help="output folder (weights.pt, config.json, metrics.json)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    add_precision_argument(p)
    p.add_argument(
        "--holdout",
        type=float,
        default=None,
        help="share of whole episodes kept out of training for off-policy evaluation (merlion ope); "
        "default: 0, or 0.2 when the dataset names no simulator",
    )
    p.add_argument("--holdout-seed", type=int, default=0, help="seed of the held-out episodes' choice")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    add_config_union_arguments(
        p,
        {name: (cls, {}) for name, (cls, _) in ALGORITHMS.items()},
        "algorithm options (only those of the chosen algorithm apply)",
    )
    p.set_defaults(func=cmd_train_agent)

    p = sub.add_parser("evaluate", help="evaluate a saved agent in its environment")
    p.add_argument("--agent", required=True, help="agent folder from train-agent")
    p.add_argument("--episodes", type=int, default=50, help="episodes (default: 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the env noise")
    p.add_argument("--quiet", action="store_true", help="no progress messages or bar on stderr")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_evaluate)

    add_ope_command(sub)
    add_online_command(sub)


def add_online_command(sub: argparse._SubParsersAction) -> None:
    """``merlion train-online``: options generated from algos.online.OnlineConfig and the learner's
    LatentCQLConfig (shown with the online defaults)."""
    from merlion_core.algos.latent_cql import LatentCQLConfig
    from merlion_core.algos.online import ONLINE_LEARNER_DEFAULTS, OnlineConfig

    p = sub.add_parser(
        "train-online", help="train a latent agent online (SAC in a fixed representation's space, paper A.6)"
    )
    p.add_argument("--env", help="environment: short name or id (default: the one the encoder records)")
    p.add_argument("--encoder", required=True, help="representation folder from train-encoder (kept fixed)")
    p.add_argument("--out", required=True, help="output folder (weights.pt, config.json, metrics.json)")
    p.add_argument(
        "--env-config", help="JSON object or .json file of env config overrides (those of the encoder's data)"
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    add_precision_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    add_config_union_arguments(
        p,
        {"online": (OnlineConfig, {}), "learner": (LatentCQLConfig, ONLINE_LEARNER_DEFAULTS)},
        "online run and learner options (unset = the default)",
    )
    p.set_defaults(func=cmd_train_online)


def cmd_train_online(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from merlion_core.algos.online import online_config
    from merlion_core.pipelines.online import train_online

    config = online_config(config_overrides(args))
    bar = tqdm(total=None, unit="env step", desc="train online", disable=args.quiet, file=sys.stderr)

    def step_progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    def progress(_step: int, point: dict) -> None:
        bar.set_postfix({"score": f"{point['normalised_score']:.1f}"}, refresh=False)

    result = train_online(
        args.env,
        args.encoder,
        args.out,
        config=config,
        env_overrides=load_json_arg(args.env_config, "--env-config") or None,
        device=args.device,
        precision=args.precision,
        progress=progress,
        step_progress=step_progress,
    )
    bar.close()
    if args.json:
        print_json(result)
    else:
        print(
            f"wrote {result['out']}: online {result['algo']}, {result['env_steps']} env steps, "
            f"{result['updates']} updates in {result['seconds']:.1f} s"
        )
    return 0


def add_ope_command(sub: argparse._SubParsersAction) -> None:
    """``merlion ope``: options generated from pipelines.ope.OPEConfig."""
    from merlion_core.config import field_docs
    from merlion_core.pipelines.ope import OPEConfig

    p = sub.add_parser("ope", help="off-policy evaluation of a saved agent on logged episodes it never trained on")
    p.add_argument("--agent", required=True, help="agent folder from train-agent")
    p.add_argument(
        "--dataset",
        required=True,
        help="logged data: the agent's own dataset (its recorded held-out episodes) or other episodes",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_config_union_arguments(p, {"ope": (OPEConfig, {})}, "estimation options (unset = the default)")
    docs = field_docs(OPEConfig)
    for name in TUPLE_OPTIONS:  # the scalar fields come from the config above; these two are lists
        p.add_argument(
            "--" + name.replace("_", "-"),
            dest=f"cfg_{name}",
            default=argparse.SUPPRESS,
            help=f"{docs[name]} (comma-separated; default: {','.join(map(str, getattr(OPEConfig, name)))})",
        )
    p.set_defaults(func=cmd_ope)


TUPLE_OPTIONS = ("estimators", "fqe_hidden")
"""OPEConfig's list fields, given on the command line as comma-separated values."""


def ope_config_from_args(args: argparse.Namespace) -> OPEConfig:
    from merlion_core.pipelines.ope import OPEConfig

    values = config_overrides(args)
    for name in TUPLE_OPTIONS:
        if name in values:
            items = tuple(e.strip() for e in values[name].split(",") if e.strip())
            try:
                values[name] = items if name == "estimators" else tuple(int(e) for e in items)
            except ValueError:
                raise SystemExit(
                    f"merlion ope: --{name.replace('_', '-')}: expected comma-separated integers, got {values[name]!r}"
                ) from None
    return OPEConfig(**values)


def cmd_ope(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from merlion_core.pipelines.ope import ope_agent, without_details

    config = ope_config_from_args(args)
    bar = tqdm(total=None, unit="step", desc="ope: fitting", disable=args.quiet, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    result = ope_agent(args.agent, args.dataset, config, progress=progress, device=args.device)
    bar.close()
    if args.json:
        print_json({**result, "estimators": without_details(result["estimators"])})
        return 0
    print(
        f"{result['held_out_episodes']} held-out episodes ({result['held_out']}); behaviour: "
        f"{result['behaviour_source'] or 'not needed'}"
    )
    for name, e in result["estimators"].items():
        score = (
            ""
            if e["normalised_score"] is None
            else (
                f"  normalised {e['normalised_score']:.1f} "
                f"[{e['normalised_ci95'][0]:.1f}, {e['normalised_ci95'][1]:.1f}]"
            )
        )
        print(f"{name:>5}: value {e['value']:.3f} [{e['ci95'][0]:.3f}, {e['ci95'][1]:.3f}]{score}")
    return 0


def cmd_train_agent(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from merlion_core.pipelines.agent import train_agent

    bar = tqdm(total=args.steps, unit="step", desc=f"train {args.algo}", disable=args.quiet, file=sys.stderr)

    def progress(step: int, point: dict) -> None:
        bar.update(step - bar.n)
        if "normalised_score" in point:
            bar.set_postfix({"score": f"{point['normalised_score']:.1f}"}, refresh=False)
        elif "ope_fqe" in point:
            bar.set_postfix({"ope fqe": f"{point['ope_fqe']:.1f}"}, refresh=False)

    result = train_agent(
        args.dataset,
        args.algo,
        args.out,
        steps=args.steps,
        encoder_dir=args.encoder,
        overrides=config_overrides(args),
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        device=args.device,
        precision=args.precision,
        progress=progress,
        holdout=args.holdout,
        holdout_seed=args.holdout_seed,
    )
    bar.close()
    if args.json:
        print_json(result)
    else:
        print(f"wrote {result['out']}: {args.algo} in {result['seconds']:.1f} s")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    def say(message: str) -> None:
        if not args.quiet:
            print(f"evaluate: {message} ...", file=sys.stderr, flush=True)

    # said before anything slow (importing torch and the algorithms is seconds on its own)
    say(f"evaluating the agent in {args.agent} on {args.episodes} episodes (seed {args.seed}); loading torch")
    from tqdm import tqdm

    from merlion_core.pipelines.agent import evaluate_agent

    bars: list = []  # the bar starts with the episodes, not with the setup before them

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="episode", desc="evaluate", disable=args.quiet, file=sys.stderr))
        bars[0].update(done - bars[0].n)

    try:
        result = evaluate_agent(args.agent, episodes=args.episodes, seed=args.seed, progress=progress, stage=say)
    finally:
        for bar in bars:
            bar.close()
    if args.json:
        print_json(result)
    else:
        for key in ("algo", "env_id", "n_episodes", "mean_return", "normalised_score", "success_rate"):
            print(f"{key:>18}: {result.get(key)}")
    return 0
