"""d3rlpy's DiscreteCQL, DiscreteBCQ and DiscreteBC on our datasets, scored by our evaluation code.

The peer of issue 4: the same dataset file, the same number of gradient steps, and
``merlion_core.evaluation.evaluate`` every ``eval_every`` steps (seed = the step, as
``pipelines.agent.train_agent`` does). d3rlpy keeps its own defaults except the paper's
settings: DiscreteCQL alpha 0.5, DiscreteBCQ action_flexibility 0.3 (``PEER_ALGOS``).

d3rlpy 2.8.1 pins gymnasium==1.0.0 and this project pins 1.4, so d3rlpy lives in its own
virtualenv (``INSTALL_HINT``) and is imported lazily: ``merlion_core`` imports without it.
From an interpreter without d3rlpy, :func:`run_d3rlpy_isolated` / :func:`time_d3rlpy_isolated`
run this module's CLI under the virtualenv's python and return the same dicts:

    python -m merlion_core.peers.d3rlpy_peer --algo dcql --dataset PATH --steps K --seed S \\
        --eval-every E --eval-episodes N --device auto --out FILE.json [--timing --warmup W]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

D3RLPY_VERSION = "2.8.1"
PYTHON_ENV_VAR = "MERLION_D3RLPY_PYTHON"
INSTALL_HINT = (
    f"d3rlpy {D3RLPY_VERSION} pins gymnasium==1.0.0 (this project pins 1.4), so install it in a separate "
    f"virtualenv: python -m venv --system-site-packages VENV && VENV/bin/pip install d3rlpy=={D3RLPY_VERSION}; "
    f"then run VENV/bin/python -m merlion_core.peers.d3rlpy_peer from the repository root, or set "
    f"{PYTHON_ENV_VAR}=VENV/bin/python"
)
PEER_ALGOS: dict[str, tuple[str, dict[str, Any]]] = {
    "dcql": ("DiscreteCQLConfig", {"alpha": 0.5}),  # the paper's best alpha (d3rlpy default 1.0); ours too
    "dbcq": ("DiscreteBCQConfig", {"action_flexibility": 0.3}),  # the paper's threshold (= d3rlpy's default)
    "bc": ("DiscreteBCConfig", {}),
}
"""Our name -> (d3rlpy config class, the settings changed from d3rlpy's defaults)."""
ProgressFn = Callable[[int, dict[str, Any]], None]


class D3rlpyMissingError(ImportError):
    """d3rlpy is not importable in this interpreter; the message says how to install it."""


def import_d3rlpy() -> Any:
    try:
        import d3rlpy
    except ImportError as exc:
        raise D3rlpyMissingError(f"d3rlpy is not importable in {sys.executable} ({exc}); {INSTALL_HINT}") from None
    return d3rlpy


def d3rlpy_python() -> str | None:
    """An interpreter with d3rlpy: this one if it has it, else ``$MERLION_D3RLPY_PYTHON`` if set, else None."""
    if importlib.util.find_spec("d3rlpy") is not None:
        return sys.executable
    return os.environ.get(PYTHON_ENV_VAR) or None


# ----------------------------------------------------------------------------- data
def to_d3rlpy_arrays(
    observations: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    next_observations: np.ndarray,
    terminals: np.ndarray,
    timeouts: np.ndarray,
) -> dict[str, np.ndarray]:
    """Our flat transitions as the episode arrays of d3rlpy's MDPDataset, each transition kept once.

    d3rlpy reads s' from the next row of an episode and never samples the last row of an episode
    that is not terminated (its successor is unknown). So after every open episode end -- a
    timeout, a row whose s' differs from the next row's s, or a last row without a flag -- one
    padding row (s = that s', action 0, reward 0, timeout 1) is inserted: it serves only as the
    successor. Terminal rows end an episode (terminal 1) with no padding. Returns observations
    f32[M, S], actions i64[M], rewards f32[M], terminals f32[M], timeouts f32[M], M >= N.
    """
    obs = np.asarray(observations, dtype=np.float32)
    next_obs = np.asarray(next_observations, dtype=np.float32)
    if obs.ndim != 2 or next_obs.shape != obs.shape:
        raise ValueError(
            f"observations: expected equal [N, S] observations and next_observations, "
            f"got {obs.shape} and {next_obs.shape}"
        )
    flat: dict[str, np.ndarray] = {
        "actions": np.asarray(actions, dtype=np.int64),
        "rewards": np.asarray(rewards, dtype=np.float32),
        "terminals": np.asarray(terminals, dtype=bool),
        "timeouts": np.asarray(timeouts, dtype=bool),
    }
    for name, arr in flat.items():
        if arr.shape != (obs.shape[0],):
            raise ValueError(f"{name}: expected shape ({obs.shape[0]},), got {arr.shape}")
    terminal, timeout = flat["terminals"], flat["timeouts"]
    if (terminal & timeout).any():
        raise ValueError(f"timeouts: index {int(np.argmax(terminal & timeout))} is both terminal and timeout")
    chained = np.zeros(obs.shape[0], dtype=bool)
    chained[:-1] = np.all(next_obs[:-1] == obs[1:], axis=1)
    open_ends = np.flatnonzero(~terminal & (timeout | ~chained))
    at = open_ends + 1
    return {
        "observations": np.insert(obs, at, next_obs[open_ends], axis=0),
        "actions": np.insert(flat["actions"], at, 0),
        "rewards": np.insert(flat["rewards"], at, np.float32(0.0)),
        "terminals": np.insert(terminal, at, False).astype(np.float32),
        "timeouts": np.insert(np.zeros_like(timeout), at, True).astype(np.float32),
    }


def epoch_plan(steps: int, eval_every: int) -> list[tuple[int, int]]:
    """[(steps per epoch, epochs)]: ``eval_every``-step epochs, then the remainder (0: one epoch)."""
    if steps < 1:
        raise ValueError(f"steps: must be >= 1, got {steps}")
    if eval_every < 0:
        raise ValueError(f"eval_every: must be >= 0 (0: evaluate only at the end), got {eval_every}")
    if eval_every == 0 or eval_every >= steps:
        return [(steps, 1)]
    epochs, rest = divmod(steps, eval_every)
    return [(eval_every, epochs)] + ([(rest, 1)] if rest else [])


# ----------------------------------------------------------------------------- d3rlpy objects
def d3rlpy_device(device: str) -> str:
    """Our device string (``auto``, ``cpu``, ``cuda[:N]``) as d3rlpy's (``cpu:0``, ``cuda:N``)."""
    from merlion_core.models.mlp import resolve_device

    resolved = resolve_device(device)
    return f"cuda:{resolved.index or 0}" if resolved.type == "cuda" else "cpu:0"


def make_config(d3rlpy: Any, algo: str, overrides: dict[str, Any] | None = None) -> Any:
    """d3rlpy's config for ``algo``: its defaults, then ``PEER_ALGOS``' settings, then ``overrides``
    (numeric and boolean options only, e.g. ``{"batch_size": 64}``)."""
    if algo not in PEER_ALGOS:
        raise ValueError(f"algo: unknown {algo!r}; choose one of {', '.join(PEER_ALGOS)}")
    cls_name, settings = PEER_ALGOS[algo]
    config_cls = getattr(d3rlpy.algos, cls_name)
    defaults = config_cls()
    values = dict(settings)
    for key, value in (overrides or {}).items():
        default = getattr(defaults, key, None)
        if key not in {f.name for f in dataclasses.fields(config_cls)} or not isinstance(default, (int, float)):
            numeric = sorted(
                f.name for f in dataclasses.fields(config_cls) if isinstance(getattr(defaults, f.name), (int, float))
            )
            raise ValueError(f"overrides: {cls_name} has no numeric option {key!r}; it has {', '.join(numeric)}")
        kind = type(default)
        if (
            isinstance(value, bool) != (kind is bool)
            or not isinstance(value, (int, float))
            or (kind is int and not float(value).is_integer())
        ):
            raise ValueError(f"overrides: {key} must be {kind.__name__}, got {value!r}")
        values[key] = kind(value)
    return config_cls(**values)


class D3rlpyPolicy:
    """``act(obs f32[B, S]) -> int64[B]`` through a d3rlpy algorithm's greedy ``predict``."""

    def __init__(self, learner: Any) -> None:
        self.learner = learner

    def act(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        if obs.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        return np.asarray(self.learner.predict(obs)).reshape(-1).astype(np.int64)


def _setup(
    algo: str, dataset_path: str | os.PathLike, seed: int, device: str, overrides: dict[str, Any] | None
) -> tuple[Any, Any, Any, Any, Any]:
    """(d3rlpy, our dataset, d3rlpy's MDPDataset, the seeded algorithm, its config)."""
    from merlion_core.data.io import load_dataset

    d3rlpy = import_d3rlpy()
    config = make_config(d3rlpy, algo, overrides)
    dataset = load_dataset(dataset_path)
    d3rlpy.seed(int(seed))
    mdp = d3rlpy.dataset.MDPDataset(
        **to_d3rlpy_arrays(**dataset.arrays()), action_space=d3rlpy.ActionSpace.DISCRETE, action_size=dataset.n_actions
    )  # explicit: d3rlpy issue #417
    learner = config.create(device=d3rlpy_device(device))
    return d3rlpy, dataset, mdp, learner, config


# ----------------------------------------------------------------------------- runs
def run_d3rlpy(
    algo: str,
    dataset_path: str | os.PathLike,
    *,
    steps: int,
    seed: int,
    eval_every: int,
    eval_episodes: int,
    device: str = "auto",
    overrides: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Train d3rlpy's ``algo`` for exactly ``steps`` gradient steps with its own ``fitter``
    (``n_steps_per_epoch = eval_every``); after every epoch evaluate with our code."""
    from merlion_core.data.summary import dataset_env_overrides
    from merlion_core.evaluation import evaluate, learning_curve_point

    plan = epoch_plan(steps, eval_every)
    if eval_episodes < 1:
        raise ValueError(f"eval_episodes: must be >= 1, got {eval_episodes}")
    d3rlpy, dataset, mdp, learner, config = _setup(algo, dataset_path, seed, device, overrides)
    if not dataset.meta.env_id:
        raise ValueError(f"{dataset_path}: no environment recorded; cannot evaluate")
    env_overrides = dataset_env_overrides(dataset)
    policy = D3rlpyPolicy(learner)
    curve: list[dict[str, Any]] = []
    train_seconds, step = 0.0, 0
    for epoch_steps, epochs in plan:
        fitter = learner.fitter(
            mdp,
            n_steps=epoch_steps * epochs,
            n_steps_per_epoch=epoch_steps,
            experiment_name=f"merlion-{algo}",
            with_timestamp=False,
            logger_adapter=d3rlpy.logging.NoopAdapterFactory(),
            show_progress=False,
        )
        while True:
            started = time.perf_counter()
            try:
                _, metrics = next(fitter)
            except StopIteration:
                break
            train_seconds += time.perf_counter() - started
            step += epoch_steps
            result = evaluate(policy, dataset.meta.env_id, eval_episodes, seed=step, env_overrides=env_overrides)
            point = {
                **{k: float(v) for k, v in metrics.items() if not k.startswith("time_")},
                **learning_curve_point(step, result),
            }
            curve.append(point)
            if progress is not None:
                progress(step, point)
    return {
        "algo": f"d3rlpy-{algo}",
        "curve": curve,
        "train_seconds": train_seconds,
        "steps_per_second": step / train_seconds if train_seconds > 0 else float("nan"),
        "device": str(learner.impl.device),
        "d3rlpy_version": d3rlpy.__version__,
        "action_size": int(learner.impl.action_size),
        "config": config.serialize_to_dict(),
        "env_id": dataset.meta.env_id,
        "steps": step,
        "seed": int(seed),
        "dataset": {"path": str(dataset_path), "n_transitions": dataset.n_transitions},
    }


def time_d3rlpy(
    algo: str,
    dataset_path: str | os.PathLike,
    *,
    steps: int = 300,
    warmup: int = 30,
    seed: int = 0,
    device: str = "auto",
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Gradient steps per second of d3rlpy's ``algo``: after ``warmup`` steps, ``steps`` timed steps,
    each one minibatch sample + ``update`` (the body of d3rlpy's fit loop), no evaluation."""
    import torch

    if steps < 1 or warmup < 0:
        raise ValueError(f"timing: steps must be >= 1 and warmup >= 0, got {steps} and {warmup}")
    d3rlpy, _, mdp, learner, config = _setup(algo, dataset_path, seed, device, overrides)
    learner.build_with_dataset(mdp)
    for _ in range(warmup):
        learner.update(mdp.sample_transition_batch(config.batch_size))
    started = time.perf_counter()
    for _ in range(steps):
        learner.update(mdp.sample_transition_batch(config.batch_size))  # returns floats: synchronised
    seconds = time.perf_counter() - started
    return {
        "algo": f"d3rlpy-{algo}",
        "batch_size": int(config.batch_size),
        "steps": steps,
        "warmup": warmup,
        "seconds": seconds,
        "steps_per_second": steps / seconds,
        "device": str(learner.impl.device),
        "torch_threads": torch.get_num_threads(),
        "d3rlpy_version": d3rlpy.__version__,
        "config": config.serialize_to_dict(),
    }


# ----------------------------------------------------------------------------- another interpreter
def run_peer_cli(python: str | os.PathLike, args: list[str], *, timeout: float | None = None) -> dict[str, Any]:
    """Run this module's CLI under ``python`` (e.g. the d3rlpy virtualenv), in a scratch folder,
    with this checkout's ``merlion_core`` first on the path; returns the JSON it writes."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)}
    with tempfile.TemporaryDirectory(prefix="merlion-d3rlpy-") as scratch:
        out = Path(scratch) / "result.json"
        proc = subprocess.run(
            [str(python), "-m", "merlion_core.peers.d3rlpy_peer", *args, "--out", str(out)],
            cwd=scratch,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0 or not out.is_file():
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            raise RuntimeError(
                f"d3rlpy peer under {python} failed: {lines[-1] if lines else f'exit {proc.returncode}'}"
            )
        return json.loads(out.read_text())


def _common_args(
    algo: str, dataset_path: str | os.PathLike, seed: int, device: str, overrides: dict[str, Any] | None, threads: int
) -> list[str]:
    return [
        "--algo",
        algo,
        "--dataset",
        str(Path(dataset_path).resolve()),
        "--seed",
        str(seed),
        "--device",
        device,
        "--overrides",
        json.dumps(overrides or {}),
        "--threads",
        str(threads),
    ]


def run_d3rlpy_isolated(
    algo: str,
    dataset_path: str | os.PathLike,
    *,
    python: str | os.PathLike,
    steps: int,
    seed: int,
    eval_every: int,
    eval_episodes: int,
    device: str = "auto",
    overrides: dict[str, Any] | None = None,
    threads: int = 1,
    timeout: float | None = None,
) -> dict[str, Any]:
    """:func:`run_d3rlpy` under another interpreter (no progress callback); the same dict."""
    return run_peer_cli(
        python,
        _common_args(algo, dataset_path, seed, device, overrides, threads)
        + ["--steps", str(steps), "--eval-every", str(eval_every), "--eval-episodes", str(eval_episodes)],
        timeout=timeout,
    )


def time_d3rlpy_isolated(
    algo: str,
    dataset_path: str | os.PathLike,
    *,
    python: str | os.PathLike,
    steps: int = 300,
    warmup: int = 30,
    seed: int = 0,
    device: str = "auto",
    overrides: dict[str, Any] | None = None,
    threads: int = 1,
    timeout: float | None = None,
) -> dict[str, Any]:
    """:func:`time_d3rlpy` under another interpreter; the same dict."""
    return run_peer_cli(
        python,
        _common_args(algo, dataset_path, seed, device, overrides, threads)
        + ["--timing", "--steps", str(steps), "--warmup", str(warmup)],
        timeout=timeout,
    )


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m merlion_core.peers.d3rlpy_peer",
        description="d3rlpy's discrete algorithms on a MERLION dataset, scored by our evaluation",
    )
    p.add_argument("--algo", required=True, choices=list(PEER_ALGOS), help="dcql, dbcq or bc (d3rlpy's classes)")
    p.add_argument("--dataset", required=True, help="dataset path (any format merlion reads)")
    p.add_argument("--steps", type=int, required=True, help="gradient steps (with --timing: timed steps)")
    p.add_argument("--seed", type=int, default=0, help="d3rlpy.seed (network init and minibatches)")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate every K steps (0: only at the end)")
    p.add_argument("--eval-episodes", type=int, default=20, help="episodes per evaluation (default: 20)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    p.add_argument(
        "--overrides", default="{}", help='JSON object of numeric d3rlpy config options, e.g. {"batch_size": 64}'
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    p.add_argument("--timing", action="store_true", help="only measure steps/s (--warmup, then --steps timed steps)")
    p.add_argument("--warmup", type=int, default=30, help="untimed steps before timing (with --timing)")
    p.add_argument("--out", required=True, help="JSON file to write")
    return p


def _quiet_d3rlpy_logs() -> None:
    """d3rlpy logs through structlog to stdout: keep errors only, on stderr."""
    import logging

    import structlog

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        overrides = json.loads(args.overrides)
        if not isinstance(overrides, dict):
            raise ValueError("--overrides: expected a JSON object")
        if args.threads < 1:
            raise ValueError(f"--threads: must be >= 1, got {args.threads}")
        import_d3rlpy()
        _quiet_d3rlpy_logs()
        import torch

        torch.set_num_threads(args.threads)
        if args.timing:
            result = time_d3rlpy(
                args.algo,
                args.dataset,
                steps=args.steps,
                warmup=args.warmup,
                seed=args.seed,
                device=args.device,
                overrides=overrides,
            )
        else:
            result = run_d3rlpy(
                args.algo,
                args.dataset,
                steps=args.steps,
                seed=args.seed,
                eval_every=args.eval_every,
                eval_episodes=args.eval_episodes,
                device=args.device,
                overrides=overrides,
            )
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    except (ImportError, ValueError, OSError, AssertionError) as exc:  # DatasetError is a ValueError
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"d3rlpy_peer: error: {message}", file=sys.stderr)
        return 1
    print(f"wrote {out}: {result['algo']} {result['steps']} steps, {result['steps_per_second']:.1f} steps/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
