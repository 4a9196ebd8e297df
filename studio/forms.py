"""Widgets generated from a config dataclass: one input per field (dataclasses.fields), the
field's one-line docstring as its help (merlion_core.config.field_docs). Returns the values
that differ from the defaults shown, as JSON-able overrides."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

import streamlit as st

from merlion_core.config import field_docs, to_dict


def _scalar_type(tp: Any) -> Any:
    """int / float / bool / str; None for anything else (tuples, dicts, Optional: edited as JSON)."""
    return tp if tp in (int, float, bool, str) else None


def config_form(
    cls: type, defaults: Any, key: str, skip: tuple[str, ...] = ("seed",), columns: int = 3
) -> dict[str, Any]:
    """Inputs for every field of ``cls`` (except ``skip``), filled with ``defaults`` (an instance);
    returns {field: value} for the fields the user changed. Non-scalar fields are JSON text."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    values = to_dict(defaults)
    changed: dict[str, Any] = {}
    cols = st.columns(columns)
    fields = [f for f in dataclasses.fields(cls) if f.name not in skip]
    for i, f in enumerate(fields):
        tp, default, help_text = _scalar_type(hints[f.name]), values[f.name], docs.get(f.name)
        label, widget_key = f.name, f"{key}.{f.name}"
        with cols[i % columns]:
            value: object  # a scalar from its widget, or whatever JSON the text holds
            if tp is bool:
                value = st.checkbox(label, value=bool(default), help=help_text, key=widget_key)
            elif tp is int:
                value = int(st.number_input(label, value=int(default), step=1, help=help_text, key=widget_key))
            elif tp is float:
                value = float(st.number_input(label, value=float(default), format="%g", help=help_text, key=widget_key))
            elif tp is str:
                value = st.text_input(label, value=str(default), help=help_text, key=widget_key)
            else:
                text = st.text_input(
                    label, value=json.dumps(default), help=(help_text or "") + " (JSON)", key=widget_key
                )
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    st.error(f"{f.name}: not valid JSON")
                    value = default
        if value != default:
            changed[f.name] = value
    return changed
