"""What every ``merlion`` command module shares: the user-facing error, config dataclasses turned
into options (one per field, from its name, default and docstring), JSON arguments and output."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import typing
from pathlib import Path
from typing import Any

from merlion_core.config import field_docs, from_dict


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
            parser.add_argument(
                flag, dest=field.name, action=argparse.BooleanOptionalAction, default=field.default, help=help_text
            )
        else:
            parser.add_argument(flag, dest=field.name, type=tp, default=field.default, help=help_text)


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return from_dict(cls, {k: v for k, v in vars(args).items() if k in names})


def load_json_arg(value: str | None, what: str) -> dict[str, Any]:
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


def prepare_output(path: str, overwrite: bool) -> Path:
    """Refuse to clobber an existing output unless asked; then clear it."""
    out = Path(path)
    if out.exists():
        if not overwrite:
            raise CLIError(f"{out}: already exists (pass --overwrite to replace it)")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    return out


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def config_union_fields(specs: dict[str, tuple[type, dict[str, Any]]]) -> dict[str, tuple[type, str]]:
    """Every scalar field of every config in ``specs`` (name -> (config class, fixed defaults)):
    field name -> (type, help naming the first method that has it and its default)."""
    fields: dict[str, tuple[type, str]] = {}
    for method, (config_cls, fixed) in specs.items():
        docs = field_docs(config_cls)
        hints = typing.get_type_hints(config_cls)
        for field in dataclasses.fields(config_cls):
            if hints[field.name] in (int, float, str, bool) and field.name not in fields:
                default = fixed.get(field.name, field.default)
                fields[field.name] = (hints[field.name], f"{docs.get(field.name, '')} ({method} default: {default})")
    return fields


def add_config_union_arguments(
    parser: argparse.ArgumentParser, specs: dict[str, tuple[type, dict[str, Any]]], title: str
) -> None:
    """One ``--field`` per scalar config field (dest ``cfg_<field>``, unset unless given)."""
    group = parser.add_argument_group(title)
    for name, (tp, help_text) in config_union_fields(specs).items():
        flag = "--" + name.replace("_", "-")
        kwargs: dict[str, Any] = {"action": argparse.BooleanOptionalAction} if tp is bool else {"type": tp}
        group.add_argument(
            flag, dest=f"cfg_{name}", default=argparse.SUPPRESS, help=help_text.replace("%", "%%"), **kwargs
        )


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_")}


def add_precision_argument(p: argparse.ArgumentParser) -> None:
    """``--precision auto|fp32|bf16`` of every training command (models/precision.py)."""
    from merlion_core.models.precision import PRECISIONS

    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="networks' precision in gradient steps: bf16 autocast where the CPU or GPU has bf16 "
        "matrix units (auto), fp32 or bf16 (default: auto)",
    )
