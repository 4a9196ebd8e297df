"""Online pipeline: a frozen encoder + an env -> online SAC on latent actions with a learning curve ->
a saved agent (MERLION paper, App. A.6 / Fig. 7; the loop is merlion_core/algos/online.py).

The agent is saved as ``train_agent`` saves one (algos/artifacts.save_agent, algo "cql"), with the
curve in metrics.json and ``"mode": "online"`` in config.json, so ``merlion evaluate``, the app's
Runs page and ``load_agent`` read it as they read an offline agent. A curve point's ``step`` counts
env steps (transitions collected), not gradient steps; ``updates`` gives the gradient steps.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from merlion_core.algos.artifacts import save_agent
from merlion_core.algos.latent_cql import LatentCQL
from merlion_core.algos.online import OnlineConfig, OnlineStep, interact, learner_config, vector_steps
from merlion_core.config import to_dict
from merlion_core.envs import make_model, resolve_env_id
from merlion_core.evaluation import evaluate, learning_curve_point
from merlion_core.models.precision import check_precision, flush_denormals, resolve_precision
from merlion_core.representation.artifacts import LoadedRepresentation, load_representation, save_representation
from merlion_core.representation.base import MetricWindow
from merlion_core.representation.online_tuning import check_tunable

ALGO = "cql"
"""The registered name of the learner's class (LatentCQL, with ONLINE_LEARNER_DEFAULTS): what load_agent rebuilds."""
STEP_PROGRESS_REPORTS = 100
"""About how many times a run reports its env-step count (``step_progress``)."""


def train_online(
    env: str | None,
    encoder_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    config: OnlineConfig | None = None,
    env_overrides: dict[str, Any] | None = None,
    device: str = "auto",
    precision: str = "auto",
    progress: Callable[[int, dict[str, Any]], None] | None = None,
    step_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Train the online learner on ``env`` (None: the env the encoder records) with the frozen
    representation in ``encoder_dir``; evaluate every ``config.eval_every`` env steps and at the end;
    save the agent to ``out_dir``.

    ``progress(env_steps, point)`` gets every evaluation point (numbers only); ``step_progress(done,
    total)`` counts env steps about every 1% of the run. ``precision`` (auto, fp32, bf16) is the
    networks' precision in gradient steps, recorded with the agent."""
    config = config or OnlineConfig()
    check_precision(precision)
    flush_denormals()
    loaded = load_representation(encoder_dir)
    env_name = env or loaded.info.get("env_id")
    if not env_name:
        raise ValueError(f"{encoder_dir}: the representation records no environment; name one (--env)")
    env_id = resolve_env_id(env_name)
    model = make_model(env_id, env_overrides)
    rep = loaded.representation
    if (rep.n_actions, rep.obs_dim) != (model.n_actions, model.obs_dim):
        raise ValueError(
            f"{encoder_dir}: the representation is for {rep.n_actions} actions / obs_dim {rep.obs_dim}, "
            f"{env_id} with these env overrides has {model.n_actions} / {model.obs_dim}; give the env "
            "config of the encoder's dataset (--env-config)"
        )
    agent = LatentCQL(learner_config(config), model.n_actions, model.obs_dim, device, representation=rep)
    agent.precision = resolve_precision(precision, agent.device)

    total = vector_steps(config.env_steps, config.n_envs) * config.n_envs
    report_every = max(1, vector_steps(total // STEP_PROGRESS_REPORTS, config.n_envs))
    curve: list[dict[str, Any]] = []
    window = _Window()
    next_eval = config.eval_every or total
    eval_seconds = 0.0
    started = time.perf_counter()
    if step_progress is not None:
        step_progress(0, total)
    last: OnlineStep | None = None
    for vector_step, last in enumerate(interact(agent, model, config), 1):
        window.add(last)
        if step_progress is not None and (vector_step % report_every == 0 or last.env_steps >= total):
            step_progress(last.env_steps, total)
        if last.env_steps < next_eval and last.env_steps < total:
            continue
        next_eval = (last.env_steps // config.eval_every + 1) * config.eval_every if config.eval_every else total
        eval_started = time.perf_counter()
        agent.eval()
        result = evaluate(agent, env_id, config.eval_episodes, seed=last.env_steps, env_overrides=env_overrides)
        agent.train()
        eval_seconds += time.perf_counter() - eval_started
        point = {**learning_curve_point(last.env_steps, result), "updates": last.updates, **window.flush()}
        curve.append(point)
        if progress is not None:
            progress(last.env_steps, {k: v for k, v in point.items() if isinstance(v, (int, float))})
    seconds = time.perf_counter() - started
    env_steps = last.env_steps if last is not None else 0
    updates = last.updates if last is not None else 0
    encoder = os.path.abspath(os.fspath(encoder_dir))
    if config.encoder_updates_per_step:  # the agent acts with the tuned phi: save it beside the agent
        encoder = save_tuned_encoder(loaded, out_dir, encoder, config, updates)
    info = {
        "mode": "online",
        "env_id": env_id,
        "env_overrides": env_overrides or None,
        "encoder": encoder,
        "encoder_method": loaded.method,
        "dataset": None,
        "online": to_dict(config),
        "env_steps": env_steps,
        "updates": updates,
        "train_seconds": round(seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        "step_mode": agent.step_mode,
        "precision": agent.precision,
    }
    metrics = {"curve": curve, "train_seconds": seconds, "eval_seconds": eval_seconds}
    save_agent(agent, ALGO, out_dir, metrics=metrics, info=info)
    return {
        "out": str(out_dir),
        "algo": ALGO,
        "mode": "online",
        "seconds": seconds,
        "env_steps": env_steps,
        "updates": updates,
        "env_steps_per_second": env_steps / max(seconds - eval_seconds, 1e-9),
        "last": curve[-1] if curve else {},
        "step_mode": agent.step_mode,
        "precision": agent.precision,
    }


TUNED_ENCODER = "encoder"
"""Sub-folder of an online agent's folder that holds its fine-tuned representation."""


def save_tuned_encoder(
    loaded: LoadedRepresentation, out_dir: str | os.PathLike, source: str, config: OnlineConfig, updates: int
) -> str:
    """Save the fine-tuned representation to ``out_dir/encoder`` with the source encoder's record and
    what tuned it; returns the folder's absolute path (what the agent's config.json names)."""
    rep = check_tunable(loaded.representation, "OnlineConfig.encoder_updates_per_step")
    folder = os.path.abspath(os.path.join(os.fspath(out_dir), TUNED_ENCODER))
    own = {"format", "version", "method", "n_actions", "obs_dim", "dim"}
    info = {k: v for k, v in loaded.info.items() if k not in own}
    info["fine_tuned_online"] = {
        "source": source,
        "steps": updates // config.updates_per_step * config.encoder_updates_per_step,
        "lr": config.encoder_lr or rep.config.lr,
    }
    save_representation(rep, loaded.method, loaded.config, folder, info=info)
    return folder


class _Window:
    """Means since the last evaluation point: the loss parts of every gradient step, and the return
    and success of the training episodes that ended (None when none did)."""

    def __init__(self) -> None:
        self.losses = MetricWindow()
        self.tuning = MetricWindow()
        self.returns: list[np.ndarray] = []
        self.successes: list[np.ndarray] = []
        self.episodes = 0

    def add(self, step: OnlineStep) -> None:
        for parts in step.losses:
            self.losses.add(parts)
        for parts in step.tuning:
            self.tuning.add(parts)
        self.returns.append(step.episode_returns)
        self.successes.append(step.episode_successes)
        self.episodes += len(step.episode_returns)

    def flush(self) -> dict[str, Any]:
        returns = np.concatenate([np.zeros(0), *self.returns])
        successes = np.concatenate([np.zeros(0, dtype=bool), *self.successes])
        out = {
            **self.losses.flush(),
            **self.tuning.flush(),
            "train_episodes": self.episodes,
            "train_return": float(returns.mean()) if len(returns) else None,
            "train_success_rate": float(successes.mean()) if len(successes) else None,
        }
        self.returns, self.successes = [], []
        return out
