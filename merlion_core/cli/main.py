"""The ``merlion`` command: environments, collection and datasets, representations, agents,
off-policy evaluation, the benchmark and background jobs.

Arguments of commands that run an algorithm or a pipeline are generated from that stage's
frozen config dataclass (its field names, defaults and one-line docstrings), so the CLI and
the app's forms never drift from the configs. Every user error ends in a one-line message
on stderr and exit status 1 (2 for usage errors), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from merlion_core.cli import agent, bench, data, jobs, represent
from merlion_core.cli.common import CLIError
from merlion_core.config import ConfigError
from merlion_core.data.dataset import DatasetError
from merlion_core.data.multiwoz_io import ENV_VAR
from merlion_core.envs import UnknownEnvError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="merlion",
        description="MERLION Studio: offline RL with large discrete action sets on pseudometric action representations",
    )
    parser.add_argument(
        "--multiwoz-dir",
        help="folder with the MultiWOZ files for the dialogue env (sets MERLION_MULTIWOZ_DIR for this command)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    data.add_commands(sub)
    represent.add_commands(sub)
    agent.add_commands(sub)
    bench.add_commands(sub)
    jobs.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.multiwoz_dir:
        os.environ[ENV_VAR] = args.multiwoz_dir
    try:
        return int(args.func(args) or 0)
    except (CLIError, DatasetError, ConfigError, UnknownEnvError, ValueError, OSError) as exc:
        print(f"merlion: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("merlion: interrupted", file=sys.stderr)
        return 130
