"""What a loaded dataset says about itself: the summary ``merlion dataset info``, collection and the
app report, and the env config it was collected with."""

from __future__ import annotations

from typing import Any

import numpy as np

from merlion_core.config import to_dict
from merlion_core.data.collect import env_normalisers
from merlion_core.envs import UnknownEnvError, make_config, resolve_env_id


def dataset_summary(dataset: Any, fmt: str) -> dict[str, Any]:
    """The facts ``merlion dataset info`` reports."""
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


def dataset_env_overrides(dataset: Any) -> dict[str, Any] | None:
    """The dataset's env config as overrides of that env's defaults (None when it is the default)."""
    if not dataset.meta.env_id:
        return None
    defaults = to_dict(make_config(dataset.meta.env_id))
    changed = {k: v for k, v in (dataset.meta.env_config or {}).items() if k in defaults and defaults[k] != v}
    return changed or None
