"""Pipelines: compose the numeric stages with file I/O at the edges (CLI, jobs and app call these)."""

from __future__ import annotations

import dataclasses
import inspect
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from merlion_core.checkpoints import encoder_checkpoint
from merlion_core.data.io import detect_format, load_dataset
from merlion_core.data.summary import dataset_env_overrides
from merlion_core.models.mlp import resolve_device
from merlion_core.models.precision import compute_precision, flush_denormals, resolve_precision
from merlion_core.representation.artifacts import load_representation, save_representation
from merlion_core.representation.base import ProgressFn
from merlion_core.representation.merlion import PAPER_ENV_DEFAULTS, MerlionRepresentation
from merlion_core.representation.registry import get_method


def representation_config(method: str, env_id: str | None, overrides: dict[str, Any]) -> Any:
    """The method's config: class defaults, then the paper's per-env dim and p (MERLION), then
    ``overrides``; an override the method does not have is an error."""
    spec = get_method(method)
    names = {f.name for f in dataclasses.fields(spec.config_cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"{method}: no option(s) {', '.join(unknown)}; it has {', '.join(sorted(names))}")
    env_defaults: Mapping[str, object] = (
        PAPER_ENV_DEFAULTS.get(env_id or "", {}) if method.startswith("merlion") else {}
    )
    if "external" == method and "env" in names and env_id and "env" not in overrides:
        env_defaults = {"env": env_id}
    # per-env paper settings, then the method's own fixed settings (merlion-no-p: p = 0), then the user's
    return spec.config_cls(**{**env_defaults, **spec.config_defaults, **overrides})


def train_encoder(
    dataset_path: str | os.PathLike,
    method: str,
    out_dir: str | os.PathLike,
    *,
    overrides: dict[str, Any] | None = None,
    device: str = "auto",
    progress: ProgressFn | None = None,
    on_config: Callable[[Any], None] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    precision: str = "auto",
) -> dict[str, Any]:
    """Load a dataset, fit a representation, save it with its config and metrics.

    ``precision`` (auto, fp32, bf16; models/precision.py): the networks' precision while training,
    resolved for the device and recorded in the artifact's config.json and the result.

    ``on_config`` receives the resolved config before training starts (for a progress total).
    With ``checkpoint_dir``, methods that train save a checkpoint every ``checkpoint_every`` steps
    (at reporting points); ``resume`` continues from the latest one there."""
    resolved = resolve_precision(precision, resolve_device(device))
    flush_denormals()
    dataset = load_dataset(dataset_path)
    config = representation_config(method, dataset.meta.env_id, overrides or {})
    if on_config is not None:
        on_config(config)
    started = time.perf_counter()
    fit = get_method(method).fit
    extra = (
        {}
        if checkpoint_dir is None or "checkpoint" not in inspect.signature(fit).parameters
        else {
            "checkpoint": encoder_checkpoint(
                checkpoint_dir, checkpoint_every, resume, method, config, dataset.n_transitions
            )
        }
    )
    with compute_precision(resolved):
        rep, metrics = fit(dataset, config, device=device, progress=progress, **extra)
    seconds = time.perf_counter() - started
    info = {
        "env_id": dataset.meta.env_id,
        "dataset": {
            "path": str(dataset_path),
            "format": detect_format(dataset_path),
            "n_transitions": dataset.n_transitions,
            "behaviour": dataset.meta.behaviour,
            "noise": dataset.meta.noise,
            "seed": dataset.meta.seed,
        },
        "train_seconds": round(seconds, 3),
        "precision": resolved,
    }
    rep_config = getattr(rep, "config", config)
    save_representation(rep, method, rep_config, out_dir, metrics={**metrics, "train_seconds": seconds}, info=info)
    return {"out": str(out_dir), "method": method, "seconds": seconds, "metrics": metrics, "precision": resolved}


def diagnose_encoder(
    encoder_dir: str | os.PathLike,
    *,
    n_states: int = 64,
    n_action_samples: int = 512,
    seed: int = 0,
    dataset_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Diagnostics of a saved representation against its env's true pseudometric."""
    from merlion_core import diagnostics
    from merlion_core.envs import make_model

    loaded = load_representation(encoder_dir)
    env_id = loaded.info.get("env_id")
    if not env_id:
        raise ValueError(f"{encoder_dir}: the representation records no environment; diagnostics need a true model")
    path = dataset_path or loaded.info.get("dataset", {}).get("path")
    if not path or not Path(path).exists():
        raise ValueError(f"{encoder_dir}: its dataset {path!r} is not there; pass --dataset")
    dataset = load_dataset(path)
    model = make_model(env_id, dataset_env_overrides(dataset))
    if callable(getattr(model, "observe", None)):
        raise ValueError(
            f"{encoder_dir}: diagnostics need an env whose observation is its whole state; "
            f"{env_id} keeps hidden state (the true pseudometric cannot be computed from observations)"
        )
    rng = np.random.default_rng(seed)
    states = diagnostics.sample_states(np.asarray(dataset.observations), n_states, rng)
    rep = loaded.representation

    def embed_fn(obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return rep.embed_chunk(torch.as_tensor(obs), torch.as_tensor(actions)).numpy()

    result = diagnostics.diagnose(model, embed_fn, states, n_action_samples=n_action_samples, rng=rng)
    out = {"env_id": env_id, "method": loaded.method, **result.to_dict()}
    if isinstance(rep, MerlionRepresentation):  # the one representation with a behaviour model G(a|s)
        probs = rep.relative_behaviour_probs(torch.as_tensor(states)).numpy()
        out["ood_fraction"] = diagnostics.ood_fraction(probs, loaded.config.tau)
        # does the indicator separate? the share of uniformly drawn actions it flags against the share
        # of the dataset's own logged actions, at several thresholds (the encoder's tau among them)
        pick = np.random.default_rng(seed + 1).choice(
            dataset.n_transitions, min(1024, dataset.n_transitions), replace=False
        )
        logged = rep.relative_behaviour_probs(torch.as_tensor(np.asarray(dataset.observations)[pick])).numpy()
        logged = np.take_along_axis(logged, np.asarray(dataset.actions)[pick][:, None], axis=1)
        out["ood_separation"] = [
            {
                "tau": tau,
                "uniform_actions_flagged": diagnostics.ood_fraction(probs, tau),
                "logged_actions_flagged": diagnostics.ood_fraction(logged, tau),
            }
            for tau in sorted({0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 0.5, float(loaded.config.tau)})
        ]
    else:
        out["ood_fraction"] = None
        out["ood_separation"] = None
    return out
