"""Shared helpers of the dialogue tests: the synthetic data folder, the real one, goals by name."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from merlion_core.data.multiwoz_io import ENV_VAR
from merlion_core.envs import make_model
from merlion_core.envs.dialogue.goals import Goals

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC = ROOT / "tests" / "data" / "multiwoz_synthetic"
SYNTHETIC_ENV = {"data_dir": str(SYNTHETIC), "n_actions": 60}
# the real MultiWOZ files: $MERLION_MULTIWOZ_DIR, else the project's shared folder next to the repository
REAL_DIR = Path(os.environ.get(ENV_VAR) or ROOT.parent / "shared" / "data" / "multiwoz")


@pytest.fixture(scope="session")
def real_dir() -> str:
    """The real MultiWOZ folder; the test is skipped (with the reason) when it is absent."""
    if not (REAL_DIR / "goal_model.json").is_file():
        pytest.skip(f"real MultiWOZ data not found at {REAL_DIR}: set {ENV_VAR} to ConvLab-2's data/multiwoz folder")
    return str(REAL_DIR)


@pytest.fixture(scope="module")
def synthetic_model():
    return make_model("dialogue", SYNTHETIC_ENV)


def goals_from(schema, specs: list[dict]) -> Goals:
    """Goals written by name, one dict per dialogue::

    {"order": ["restaurant", "police"],
     "info": {"restaurant": {"area": "centre"}},          # initial constraints
     "final": {"restaurant": {"area": "north"}},          # after a no-match (default: = info)
     "requests": {"police": ["phone"]},
     "book": {"restaurant": {"day": "monday", "people": "2", "time": "12:00"}}}
    """
    n, d = len(specs), len(schema.domains)
    rank = np.full((n, d), -1, dtype=np.int64)
    initial = np.zeros((n, schema.n_inform), dtype=np.int64)
    final = np.zeros_like(initial)
    requests = np.zeros((n, schema.n_request), dtype=bool)
    has_book = np.zeros((n, d), dtype=bool)
    for row, spec in enumerate(specs):
        for k, domain in enumerate(spec["order"]):
            rank[row, schema.domains.index(domain)] = k
        final_spec = {
            dom: {**spec.get("info", {}).get(dom, {}), **spec.get("final", {}).get(dom, {})}
            for dom in set(spec.get("info", {})) | set(spec.get("final", {}))
        }
        for values, target, book in (
            (spec.get("info", {}), initial, False),
            (final_spec, final, False),
            (spec.get("book", {}), initial, True),
            (spec.get("book", {}), final, True),
        ):
            for domain, slots in values.items():
                for slot, value in slots.items():
                    s = schema.inform_index(domain, slot, book=book)
                    target[row, s] = -1 if value == "dontcare" else schema.value_id(s, value)
                    assert target[row, s] != 0, f"{domain}-{slot}={value!r} not in the vocabulary"
        for domain, slots in spec.get("requests", {}).items():
            for slot in slots:
                requests[row, schema.request_index(domain, slot)] = True
        for domain in spec.get("book", {}):
            has_book[row, schema.domains.index(domain)] = True
    return Goals(rank=rank, initial=initial, final=final, requests=requests, has_book=has_book)


def start(model, specs: list[dict]) -> np.ndarray:
    """States of scripted dialogues after the (deterministic) user's opening turn."""
    return model.states_for_goals(goals_from(model.schema, specs), np.random.default_rng(0), deterministic=True)


def user_said(model, states: np.ndarray, row: int = 0) -> set[str]:
    """The user's acts of the last turn, by name."""
    acts = np.flatnonzero(states[row, model.simulator.blocks["user_acts"]] > 0.5)
    return {model.simulator.code_name(int(c)) for c in acts}


def say(model, states: np.ndarray, composite: str):
    """The system says ``composite`` in every row (deterministic user); returns the StepResult."""
    action = model.actions.action_of(composite)
    assert action >= 0, f"{composite!r} is not in the action set"
    return model.true_step(states, np.full(len(states), action))


def hidden(model, states: np.ndarray) -> dict[str, np.ndarray]:
    return model.simulator.unpack(states)
