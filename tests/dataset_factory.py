"""Shared test data: a small, hand-checkable set of transition fields (plain helpers, no fixtures).

Imported by the test modules as ``from dataset_factory import N_ACTIONS, make_fields``; pytest's
default ``prepend`` import mode puts this directory (it has no ``__init__.py``) on ``sys.path``.
"""

from __future__ import annotations

import numpy as np

N_ACTIONS = 16


def make_fields(seed: int = 0) -> dict[str, np.ndarray]:
    """3 episodes (lengths 5, 4, 6): terminal, timeout, terminal; obs chained within episodes."""
    rng = np.random.default_rng(seed)
    obs, nxt, term, tout = [], [], [], []
    for length, end in ((5, "terminal"), (4, "timeout"), (6, "terminal")):
        traj = rng.normal(size=(length + 1, 3)).astype(np.float32)
        obs.append(traj[:-1])
        nxt.append(traj[1:])
        flags = np.zeros((2, length), bool)
        flags[0 if end == "terminal" else 1, -1] = True
        term.append(flags[0])
        tout.append(flags[1])
    n = 15
    return {
        "observations": np.concatenate(obs),
        "actions": rng.integers(0, N_ACTIONS, n).astype(np.int64),
        "rewards": rng.normal(size=n).astype(np.float32),
        "next_observations": np.concatenate(nxt),
        "terminals": np.concatenate(term),
        "timeouts": np.concatenate(tout),
    }
