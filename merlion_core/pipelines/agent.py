"""Agent pipelines: dataset (+ encoder) -> offline RL with a learning curve -> saved agent; evaluation."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

from merlion_core.algos.artifacts import load_agent, save_agent
from merlion_core.algos.registry import ALGORITHMS, LATENT_ALGORITHMS, make_algorithm
from merlion_core.checkpoints import agent_checkpoint
from merlion_core.data.io import load_dataset
from merlion_core.data.sampler import BatchSampler
from merlion_core.data.summary import dataset_env_overrides
from merlion_core.evaluation import evaluate, learning_curve_point
from merlion_core.models.precision import check_precision, flush_denormals, resolve_precision
from merlion_core.ope import split_to_dict

CRITIC_ARGMAX_MAX_ACTIONS = 20_000
"""Largest action set whose last evaluation also scores the critic's argmax over every action (at 10^5
videos and 50 episodes that is the encoder and the critic at 5 million (state, action) pairs per env step)."""


def agent_config(algo: str, overrides: dict[str, Any]) -> Any:
    if algo not in ALGORITHMS:
        raise ValueError(f"algorithm: unknown {algo!r}; known: {', '.join(ALGORITHMS)}")
    config_cls = ALGORITHMS[algo][0]
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"{algo}: no option(s) {', '.join(unknown)}; it has {', '.join(sorted(names))}")
    return config_cls(**overrides)


def train_agent(
    dataset_path: str | os.PathLike,
    algo: str,
    out_dir: str | os.PathLike,
    *,
    steps: int,
    encoder_dir: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    eval_every: int = 0,
    eval_episodes: int = 20,
    device: str = "auto",
    progress: Callable[[int, dict[str, float]], None] | None = None,
    step_progress: Callable[[int, int], None] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    precision: str = "auto",
    extra_evaluation: Callable[[Any, int], dict[str, Any]] | None = None,
    holdout: float | None = None,
    holdout_seed: int = 0,
    ope_config: Any = None,
) -> dict[str, Any]:
    """Train ``algo`` for ``steps`` gradient steps; evaluate every ``eval_every`` steps (0 = at the end).

    ``holdout``: the share of whole episodes kept out of training (a seeded split, ``holdout_seed``,
    recorded in the agent's config.json) for off-policy evaluation; None = 0 when the dataset names a
    simulator and NO_SIMULATOR_HOLDOUT when it does not. Without a simulator every evaluation point is an
    off-policy evaluation on those episodes (``ope_config``: a pipelines.ope.OPEConfig, default
    CURVE_OPE) instead of simulator episodes, and the run never fails for the missing simulator.

    ``extra_evaluation(agent, step)``, when given, runs at every evaluation point and its dict joins the
    point's diagnostics (e.g. other acting rules scored on the same episodes).

    ``progress(step, point)`` gets every logged point (every ``eval_every`` steps, else every 1,000, and
    the last); ``step_progress(done, steps)`` counts the gradient steps done, whether or not the run
    evaluates: about every 1% of the run (:func:`step_progress_every`), and at each logged point.

    With ``checkpoint_dir``, save a checkpoint every ``checkpoint_every`` steps (at logging points);
    ``resume`` continues from the latest one there (weights, optimizer, RNG streams, curve).

    ``precision`` (auto, fp32, bf16; models/precision.py): the networks' precision in gradient steps,
    resolved for the device and recorded in the agent's config.json and the result."""
    check_precision(precision)
    flush_denormals()
    full = load_dataset(dataset_path)
    split = _holdout(
        full,
        NO_SIMULATOR_HOLDOUT if holdout is None and not full.meta.env_id else holdout or 0.0,
        holdout_seed,
        dataset_path,
    )
    dataset = full if split is None else full.subset(split.train_index)
    if not full.meta.env_id and split is None:
        raise ValueError(
            f"{dataset_path}: names no simulator, so the agent can only be judged by off-policy "
            "evaluation on held-out episodes: set a holdout share > 0"
        )
    config = agent_config(algo, overrides or {})
    if hasattr(config, "action_factors") and not config.action_factors:  # DecQN: the env's sub-actions
        from merlion_core.envs.factors import env_action_factors

        factors = env_action_factors(full.meta.env_id, dataset_env_overrides(full))
        if factors is None:
            raise ValueError(
                f"{algo}: needs a factorised action space, and {dataset_path}'s env "
                f"({full.meta.env_id or 'none recorded'}) declares none; set action_factors (n_1..n_K)"
            )
        config = dataclasses.replace(config, action_factors=factors)
    representation = None
    if algo in LATENT_ALGORITHMS:
        if encoder_dir is None:
            raise ValueError(f"{algo}: needs --encoder (a representation folder from train-encoder)")
        from merlion_core.representation.artifacts import load_representation

        representation = load_representation(encoder_dir).representation
    elif encoder_dir is not None:
        raise ValueError(f"{algo}: acts on raw actions; drop --encoder")
    agent = make_algorithm(algo, dataset.n_actions, dataset.obs_dim, config, device, representation=representation)
    agent.precision = resolve_precision(precision, agent.device)
    sampler = BatchSampler(
        dataset, getattr(config, "batch_size", 256), seed=getattr(config, "seed", 0), device=str(agent.device)
    )
    env_overrides = dataset_env_overrides(dataset)
    checkpoint = (
        None
        if checkpoint_dir is None
        else agent_checkpoint(
            checkpoint_dir,
            checkpoint_every,
            resume,
            agent,
            sampler,
            algo,
            config,
            dataset.n_transitions,
            steps,
            eval_every,
        )
    )
    start, saved = checkpoint.restore() if checkpoint is not None else (0, {})
    curve: list[dict[str, Any]] = list(saved.get("curve", []))
    diagnose = latent_diagnostics_probe(agent, dataset) if algo in LATENT_ALGORITHMS else None
    started = time.perf_counter()
    log_every = eval_every or LOG_EVERY
    every = step_progress_every(steps, log_every)
    if step_progress is not None:
        step_progress(start, steps)
    window: list[tuple[int, dict[str, float]]] = []  # (steps, loss means) of each report since the last log
    done = start
    for step, chunk in agent.train_steps(sampler, steps - start, log_every=every):
        step += start  # checkpoints sit at logging points, so a resumed run logs at the same steps
        window.append((step - done, chunk))
        done = step
        if step_progress is not None:
            step_progress(step, steps)
        if (step - start) % log_every and step != steps:
            continue
        metrics, window = _window_means(window), []
        point: dict[str, Any] = {"step": step, **metrics}
        if not dataset.meta.env_id and (eval_every or step == steps):
            agent.eval()
            point.update(_ope_point(agent, full, split, ope_config))
            agent.train()
        elif dataset.meta.env_id and (eval_every or step == steps):
            agent.eval()
            point.update(
                learning_curve_point(
                    step, evaluate(agent, dataset.meta.env_id, eval_episodes, seed=step, env_overrides=env_overrides)
                )
            )
            if diagnose is not None:
                point["diagnostics"] = diagnose()
                if extra_evaluation is not None:
                    point["diagnostics"].update(extra_evaluation(agent, step))
                if step == steps and dataset.n_actions > CRITIC_ARGMAX_MAX_ACTIONS:
                    point["diagnostics"]["critic_argmax_skipped"] = (
                        f"{dataset.n_actions} actions > {CRITIC_ARGMAX_MAX_ACTIONS}: the critic at every action "
                        "for every evaluation state would cost more than the run"
                    )
                elif step == steps:  # the critic's own choice over every real action, beside the deployed rule
                    from merlion_core.algos.latent_diagnostics import CriticArgmaxPolicy

                    argmax = evaluate(
                        CriticArgmaxPolicy(agent),
                        dataset.meta.env_id,
                        eval_episodes,
                        seed=step,
                        env_overrides=env_overrides,
                    )
                    point["diagnostics"]["critic_argmax_score"] = float(argmax.normalised_score)
            agent.train()
        curve.append(point)
        if checkpoint is not None:
            checkpoint.maybe_save(step, {"curve": curve})
        if progress is not None:  # diagnostics flattened to diag_NAME numbers (what the job store keeps)
            diag = point.get("diagnostics", {})
            progress(
                step,
                {
                    **{k: v for k, v in point.items() if k != "diagnostics"},
                    **{f"diag_{k}": v for k, v in diag.items() if v is not None},
                },
            )
    seconds = time.perf_counter() - started
    info = {
        "env_id": dataset.meta.env_id,
        "env_overrides": env_overrides,
        "encoder": str(encoder_dir) if encoder_dir else None,
        "dataset": {"path": str(dataset_path), "n_transitions": full.n_transitions, "digest": full.content_digest()},
        "holdout": None if split is None else split_to_dict(split),
        "steps": steps,
        "train_seconds": round(seconds, 3),
        "step_mode": agent.step_mode,
        "precision": agent.precision,
    }
    save_agent(agent, algo, out_dir, metrics={"curve": curve, "train_seconds": seconds}, info=info)
    return {
        "out": str(out_dir),
        "algo": algo,
        "seconds": seconds,
        "last": curve[-1] if curve else {},
        "step_mode": agent.step_mode,
        "precision": agent.precision,
    }


NO_SIMULATOR_HOLDOUT = 0.2
"""Share of whole episodes held out for off-policy evaluation when a dataset names no simulator."""
LOG_EVERY = 1000
"""Steps between two logged points (losses, checkpoints) of a run that evaluates only at its end."""
STEP_PROGRESS_REPORTS = 100
"""About how many times a run reports its step count (``step_progress``)."""
MIN_STEP_PROGRESS_EVERY = 10
"""Fewest steps between two step counts (each costs one host sync of the loss sums)."""


def step_progress_every(steps: int, log_every: int) -> int:
    """Steps between two step counts of a ``steps``-step run logging every ``log_every``: the largest
    divisor of ``log_every`` (logged points must stay report points) not above
    max(MIN_STEP_PROGRESS_EVERY, steps / STEP_PROGRESS_REPORTS); ``log_every`` itself when every such
    divisor is under a quarter of that (a prime ``log_every``: no sync every step)."""
    target = max(MIN_STEP_PROGRESS_EVERY, steps // STEP_PROGRESS_REPORTS)
    if log_every <= target:
        return max(1, log_every)
    best = max(d for d in range(1, target + 1) if log_every % d == 0)
    return best if 4 * best >= target else log_every


def _window_means(window: list[tuple[int, dict[str, float]]]) -> dict[str, float]:
    """The loss means over a logging window from its reports' means ``(steps, means)``, each
    weighted by its steps (a loss part missing from a report counts as 0 there, as in train_steps).
    One report: its means as they are."""
    if len(window) == 1:
        return window[0][1]
    total = sum(n for n, _ in window)
    sums: dict[str, float] = {}
    for n, means in window:
        for key, value in means.items():
            sums[key] = sums.get(key, 0.0) + value * n
    return {key: value / total for key, value in sums.items()}


def _holdout(dataset: Any, fraction: float, seed: int, where: Any) -> Any:
    """The seeded episode split for ``fraction`` > 0 (None for 0); one-line errors naming the dataset."""
    from merlion_core.ope import holdout_split

    if fraction == 0:
        return None
    try:
        return holdout_split(dataset.episode_ends, fraction, seed)
    except ValueError as exc:
        raise ValueError(f"{where}: holdout: {exc}") from None


def _ope_point(agent: Any, dataset: Any, split: Any, config: Any) -> dict[str, Any]:
    """A learning-curve point without a simulator: off-policy estimates on the held-out episodes, nested
    under "ope" and flat as ope_NAME, ope_NAME_lo, ope_NAME_hi (normalised scores where the dataset names
    normalisers, else values)."""
    from merlion_core.pipelines.ope import CURVE_OPE, ope_arrays, without_details

    config = CURVE_OPE if config is None else config
    estimates = ope_arrays(agent, dataset, split.heldout_index, config, device=str(agent.device))
    point: dict[str, Any] = {"ope": without_details(estimates)}
    for name, e in estimates.items():  # flat numbers for the job store: normalised where possible
        normalised = e["normalised_score"] is not None
        point[f"ope_{name}"] = e["normalised_score"] if normalised else e["value"]
        point[f"ope_{name}_lo"], point[f"ope_{name}_hi"] = e["normalised_ci95"] if normalised else e["ci95"]
    return point


DIAGNOSTIC_STATES = 256
"""Dataset states (evenly spaced) at which every latent run reports its critic and lookup diagnostics, at
each evaluation (each costs one lookup over every action at these states)."""


def latent_diagnostics_probe(agent: Any, dataset: Any) -> Callable[[], dict[str, Any]]:
    """A function of no arguments returning :func:`latent_agent_diagnostics` at ``DIAGNOSTIC_STATES``
    fixed dataset states, with their logged actions and discounted returns (the agent's gamma)."""
    import numpy as np
    import torch

    from merlion_core.algos.latent_diagnostics import discounted_returns, latent_agent_diagnostics

    idx = np.linspace(0, dataset.n_transitions - 1, min(DIAGNOSTIC_STATES, dataset.n_transitions)).astype(np.int64)
    returns = discounted_returns(dataset.rewards, dataset.episode_ends, float(getattr(agent.config, "gamma", 0.99)))
    obs = torch.as_tensor(np.asarray(dataset.observations)[idx], dtype=torch.float32, device=agent.device)
    act = torch.as_tensor(np.asarray(dataset.actions)[idx], dtype=torch.int64, device=agent.device)
    mc = torch.as_tensor(returns[idx], dtype=torch.float32)
    return lambda: latent_agent_diagnostics(agent, obs, act, mc)


def evaluate_agent(
    agent_dir: str | os.PathLike,
    *,
    episodes: int = 50,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    stage: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """A saved agent's evaluation summary in its recorded environment. ``stage(message)`` says
    what is being prepared (loading the agent, the env's normalisers); ``progress(done, episodes)``
    counts finished episodes (``evaluation.evaluate``). Neither prints."""
    from merlion_core.data.collect import NORMALISER_EPISODES, env_normalisers

    if stage is not None:
        stage(f"loading the agent {os.fspath(agent_dir)}")
    loaded = load_agent(agent_dir)
    env_id = loaded.info.get("env_id")
    if not env_id:
        raise ValueError(f"{agent_dir}: the agent records no environment to evaluate in")
    env_overrides = loaded.info.get("env_overrides")
    if stage is not None:
        stage(
            f"{env_id}: the expert and random returns that normalise the score "
            f"({NORMALISER_EPISODES} episodes each, once per process)"
        )
    env_normalisers(env_id, env_overrides)  # cached: evaluate finds them measured
    result = evaluate(loaded.agent, env_id, episodes, seed=seed, env_overrides=env_overrides, progress=progress)
    summary = result.to_dict(include_episodes=False)
    return {"algo": loaded.algo, **summary}
