"""The paper's benchmark (Fig. 2 (a), (b), Fig. 3): every method x seed on one env's logged dataset.

A benchmark method is a representation (or none) plus an offline algorithm, e.g. ``merlion-cql``
= the MERLION encoder + latent CQL, ``dcql`` = discrete CQL on raw actions, ``rand1-cql`` =
latent CQL on Rand-1 embeddings, ``merlion-p0.3-cql`` = MERLION with p = 0.3 (ablation),
``d3rlpy-dcql`` = the peer library's DiscreteCQL (optional extra, run by
:mod:`merlion_core.peers.d3rlpy_peer`). Each (method, seed) run trains its encoder (seeded
like the run; shared between the CQL and BCQ runs of one representation) and its agent for
``steps`` gradient steps, evaluating every ``eval_every`` steps with the same evaluation code.

Runs are independent processes (``workers`` at a time, one torch thread each) and resumable:
a run whose result file exists with the same settings is not repeated. Output layout:
``OUT/runs/METHOD/seedK.json`` (curve and summary per run), ``OUT/summary.json``,
``OUT/README.md`` (the table), ``OUT/curves.svg``; weights under ``OUT/work/`` (not results).
The method names and groups live in :mod:`merlion_core.benchmark.methods` (re-exported here).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import numpy as np

from merlion_core.benchmark.methods import (
    ABLATIONS,
    BENCH_METHODS,
    PAPER_METHODS,
    PEER_METHODS,
    BenchMethod,
    bench_method,
    encoder_key,
    encoder_overrides,
    env_has_task_success,
    expand_methods,
    representation_available,
)
from merlion_core.config import to_dict
from merlion_core.models.precision import check_precision

__all__ = [
    "ABLATIONS",
    "BENCH_METHODS",
    "PAPER_METHODS",
    "PEER_METHODS",
    "BenchConfig",
    "BenchMethod",
    "bench_method",
    "expand_methods",
    "representation_available",
    "run_benchmark",
    "run_one",
    "train_bench_encoder",
]
ProgressFn = Callable[[str, dict[str, Any]], None]
EXECUTION_FIELDS = ("workers", "device", "seeds", "precision")
"""BenchConfig fields that say how runs are executed or how many there are, not what one computes
(left out of the settings key: a run is reused whatever the benchmark's seed count)."""
BENCH_KEY = "bench-key.json"
"""Written beside each benchmark encoder: the settings it was trained with (reused only on a match)."""


@dataclass(frozen=True)
class BenchConfig:
    """Settings of one benchmark (everything but the method list and the env)."""

    seeds: int = 5
    """Number of seeds per method (the paper: 5); seeds are 0 .. seeds-1."""
    steps: int = 20_000
    """Gradient steps of every agent (the same for every method, peers included)."""
    eval_every: int = 2_000
    """K: evaluation interval of the learning curves, in gradient steps."""
    eval_episodes: int = 50
    """E: episodes per evaluation."""
    encoder_steps: int = 10_000
    """Gradient steps of every learned representation (paper: 10,000)."""
    n_transitions: int = 100_000
    """Size of the logged dataset collected when none is given."""
    behaviour: str = "medium"
    """Behaviour policy of the collected dataset."""
    noise: float = 0.5
    """Share of uniformly random actions in the collected dataset (paper: 50%)."""
    data_seed: int = 0
    """Seed of the collected dataset."""
    workers: int = 1
    """Runs trained at once, each in its own process with one torch thread."""
    device: str = "auto"
    """Device of every run: auto (CUDA when available), cpu or cuda[:N]; runs record the one used."""
    agent_batch_size: int = 0
    """Batch size of every agent; 0 = each algorithm's own default."""
    precision: str = "auto"
    """Networks' precision in gradient steps (encoders and agents): auto (bf16 where the CPU or GPU has bf16
    matrix units), fp32 or bf16; runs record the one used."""

    def __post_init__(self) -> None:
        for name in ("seeds", "steps", "eval_every", "eval_episodes", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"bench: {name} must be >= 1, got {getattr(self, name)}")
        if self.encoder_steps < 1 or self.n_transitions < 1:
            raise ValueError("bench: encoder_steps and n_transitions must be >= 1")
        check_precision(self.precision)
        if self.agent_batch_size < 0:
            raise ValueError(f"bench: agent_batch_size must be >= 0, got {self.agent_batch_size}")


# ------------------------------------------------------------------------------------- one run
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def train_bench_encoder(
    dataset_path: str,
    method_name: str,
    seed: int,
    encoder_steps: int,
    folder: str,
    device: str,
    env_id: str | None = None,
    dataset_sha256: str | None = None,
    precision: str = "auto",
) -> str:
    """Train (or reuse) the run's encoder; returns its folder. ``dataset_sha256``: the dataset's
    content digest, which identifies it (default: its resolved path). ``precision`` is how it is
    computed (models/precision.py), not what: an encoder of either precision is reused."""
    _one_thread()
    from merlion_core.pipelines.encoder import train_encoder

    method = bench_method(method_name)
    path = Path(folder)
    overrides = encoder_overrides(method, seed, encoder_steps, env_id)
    # reuse a finished encoder only if it was trained with exactly these settings on this dataset
    settings = {"representation": method.representation, "overrides": overrides}
    key = (
        {**settings, "dataset_sha256": dataset_sha256}
        if dataset_sha256
        else {**settings, "dataset": str(Path(dataset_path).resolve())}
    )
    key_file = path / BENCH_KEY
    if (path / "weights.pt").exists() and key_file.exists():
        saved = json.loads(key_file.read_text())
        # keys written before the digest hold the dataset path as given
        saved_path = saved.pop("dataset", None)
        if saved == key or (
            saved_path is not None and saved == settings and Path(saved_path).resolve() == Path(dataset_path).resolve()
        ):
            return str(path)
    if path.exists():
        shutil.rmtree(path)  # a stale or unfinished encoder of an earlier benchmark in our work folder
    if method.representation is None:
        raise ValueError(f"{method.name}: trains on raw actions; it has no encoder to train")
    train_encoder(dataset_path, method.representation, path, overrides=overrides, device=device, precision=precision)
    key_file.write_text(json.dumps(key))
    return str(path)


def agent_overrides(method: BenchMethod, seed: int, config: BenchConfig) -> dict[str, Any]:
    """The fields of a run's agent config that differ from its algorithm's defaults."""
    from merlion_core.algos.registry import ALGORITHMS

    overrides: dict[str, Any] = {**dict(method.algo_overrides), "seed": seed}
    names = {f.name for f in dataclasses.fields(ALGORITHMS[method.algo][0])}
    if config.agent_batch_size and "batch_size" in names:
        overrides["batch_size"] = config.agent_batch_size
    return overrides


LATENT_DEFAULTS_CHANGED = ("cql", "bcq")
"""Algorithms whose defaults changed after records without ``agent_settings`` were written (latent
CQL and BCQ: normalised latents, deterministic backup, BC start, real-action CQL samples): such a
record is out of date and its run is trained again; raw-action records without it still count."""


def agent_settings(method: BenchMethod, seed: int, config: BenchConfig) -> dict[str, Any] | None:
    """The whole agent config of a run (None for d3rlpy peers, which run with d3rlpy's own): a run
    record of other agent settings is out of date."""
    if method.peer:
        return None
    from merlion_core.pipelines.agent import agent_config

    return to_dict(agent_config(method.algo, agent_overrides(method, seed, config)))


def agent_settings_match(record: dict[str, Any], method: BenchMethod, seed: int, config: BenchConfig) -> bool:
    if "agent_settings" not in record:  # written before agent settings were recorded
        return method.peer or method.algo not in LATENT_DEFAULTS_CHANGED
    return record["agent_settings"] == agent_settings(method, seed, config)


def run_one(
    dataset_path: str,
    method_name: str,
    seed: int,
    config: BenchConfig,
    encoder_dir: str | None,
    agent_dir: str,
    peer_python: str | None = None,
    task_success: bool = True,
) -> dict[str, Any]:
    """Train and evaluate one (method, seed); returns the run record (curve, last, best; the last
    success rate only where the env defines success, ``task_success``)."""
    _one_thread()
    import torch

    from merlion_core.models.mlp import resolve_device

    method = bench_method(method_name)
    started = time.perf_counter()
    if method.peer:
        record = _run_peer(dataset_path, method, seed, config, agent_dir, peer_python)
        curve = record["curve"]
    else:
        from merlion_core.pipelines.agent import train_agent

        overrides = agent_overrides(method, seed, config)
        result = train_agent(
            dataset_path,
            method.algo,
            agent_dir,
            steps=config.steps,
            encoder_dir=encoder_dir,
            overrides=overrides,
            eval_every=config.eval_every,
            eval_episodes=config.eval_episodes,
            device=config.device,
            precision=config.precision,
        )
        metrics = json.loads((Path(agent_dir) / "metrics.json").read_text())
        curve, record = metrics["curve"], {"agent": str(agent_dir)}
        record["train_seconds"] = result["seconds"]
        record["step_mode"] = result["step_mode"]
        record["precision"] = result["precision"]
    scores = [p["normalised_score"] for p in curve if "normalised_score" in p]
    success = curve[-1].get("success_rate") if curve and task_success else None
    return {
        **record,
        "method": method_name,
        "seed": seed,
        "algo": method.algo,
        "representation": method.representation,
        "representation_overrides": dict(method.representation_overrides),
        "steps": config.steps,
        "curve": curve,
        "last_score": scores[-1] if scores else None,
        "best_score": max(scores) if scores else None,
        "last_return": curve[-1].get("mean_return") if curve else None,
        "last_success_rate": success,
        "wall_seconds": time.perf_counter() - started,
        "device": str(resolve_device(config.device)),
        "torch_threads": torch.get_num_threads(),
    }


class _PeerKwargs(TypedDict):
    """The keyword arguments :func:`_run_peer` passes to ``run_d3rlpy`` and ``run_d3rlpy_isolated``."""

    steps: int
    seed: int
    eval_every: int
    eval_episodes: int
    device: str
    overrides: NotRequired[dict[str, Any]]


def _run_peer(
    dataset_path: str, method: BenchMethod, seed: int, config: BenchConfig, agent_dir: str, peer_python: str | None
) -> dict[str, Any]:
    """d3rlpy runs: in this interpreter when d3rlpy imports, else under ``peer_python`` (or
    ``$MERLION_D3RLPY_PYTHON``), a venv of its own (d3rlpy pins gymnasium 1.0)."""
    from merlion_core.peers.d3rlpy_peer import d3rlpy_python, run_d3rlpy, run_d3rlpy_isolated

    kwargs: _PeerKwargs = {
        "steps": config.steps,
        "seed": seed,
        "eval_every": config.eval_every,
        "eval_episodes": config.eval_episodes,
        "device": config.device,
    }
    if config.agent_batch_size:
        kwargs["overrides"] = {"batch_size": config.agent_batch_size}
    python = d3rlpy_python()
    if python == sys.executable:
        return run_d3rlpy(method.algo, dataset_path, **kwargs)
    python = peer_python or python
    if not python:
        raise RuntimeError(
            f"{method.name}: d3rlpy is not installed here; install it in its own venv "
            "(pip install d3rlpy==2.8.1; it pins gymnasium 1.0.0) and pass --peer-python "
            "or set MERLION_D3RLPY_PYTHON"
        )
    return run_d3rlpy_isolated(method.algo, dataset_path, python=python, **kwargs)


# ------------------------------------------------------------------------------------ the sweep
class InProcessExecutor:
    """``workers=1``: run each submitted call at once in this process (no pool, caches shared)."""

    def __enter__(self) -> InProcessExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # surfaced by future.result(), as with a process pool
            future.set_exception(exc)
        return future


def check_device(device: str) -> None:
    """A clear error before any run starts for a device string torch rejects or CUDA that is absent."""
    import torch

    from merlion_core.models.mlp import resolve_device

    try:
        resolved = resolve_device(device)
    except RuntimeError:
        raise ValueError(f"bench: device {device!r} is not a device (auto, cpu, cuda or cuda:N)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"bench: device {device!r} asked for, but CUDA is not available here")


def behaviour_reference(data: Any, config: BenchConfig, task_success: bool = True) -> dict[str, Any] | None:
    """The dataset's behaviour policy without its collection noise, evaluated at each evaluation
    step on the agents' episodes (seed = step): what imitating the logged policy, noise removed, reaches.
    None when the dataset names no behaviour of the env (e.g. imported data)."""
    from merlion_core.data.summary import dataset_env_overrides
    from merlion_core.envs.behaviours import BEHAVIOURS
    from merlion_core.evaluation import evaluate_behaviour, learning_curve_point

    if data.meta.behaviour not in BEHAVIOURS or not data.meta.env_id:
        return None
    every = config.eval_every or config.steps
    curve = [
        learning_curve_point(
            step,
            evaluate_behaviour(
                data.meta.behaviour,
                data.meta.env_id,
                config.eval_episodes,
                seed=step,
                env_overrides=dataset_env_overrides(data),
            ),
        )
        for step in sorted({*range(every, config.steps + 1, every), config.steps})
    ]
    scores = [point["normalised_score"] for point in curve]
    return {
        "behaviour": data.meta.behaviour,
        "curve": curve,
        "last_score": scores[-1],
        "last3_score": float(sum(scores[-3:]) / len(scores[-3:])),
        "best_score": max(scores),
        "last_success_rate": curve[-1]["success_rate"] if task_success else None,
    }


def bench_normalisers(data: Any) -> dict[str, Any]:
    """The normalisers of the benchmark: the env's own (``data.collect.env_normalisers`` for the
    dataset's env config, the ones every evaluation uses), with the dataset's stored pair beside them."""
    from merlion_core.data.collect import NORMALISER_EPISODES, env_normalisers
    from merlion_core.data.summary import dataset_env_overrides

    expert, random = env_normalisers(data.meta.env_id, dataset_env_overrides(data))
    stored = (data.meta.expert_return, data.meta.random_return)
    return {
        "expert_return": expert,
        "random_return": random,
        "episodes": NORMALISER_EPISODES,
        "dataset_expert_return": stored[0],
        "dataset_random_return": stored[1],
        "dataset_agrees": None not in stored
        and all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6) for a, b in zip((expert, random), stored, strict=True)),
    }


def earlier_table(out_dir: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The methods (in order) and not-applicable notes of ``out_dir``'s summary.json when it holds a
    benchmark of the same ``settings``, so a command that adds methods keeps the table's other rows."""
    from merlion_core.benchmark.report import same_settings

    path = out_dir / "summary.json"
    if path.exists():
        old = json.loads(path.read_text())
        if same_settings(old.get("settings"), settings):
            return {"methods": list(old.get("methods", {})), "not_applicable": dict(old.get("not_applicable") or {})}
    return {"methods": [], "not_applicable": {}}


def run_benchmark(
    env: str,
    methods: str | list[str],
    seeds: int,
    steps: int,
    out: str | os.PathLike,
    progress: ProgressFn | None = None,
    *,
    dataset: str | None = None,
    peer_python: str | None = None,
    report_only: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Run every (method, seed) of the benchmark on ``env`` and write the results under ``out``.

    ``report_only``: train nothing; write the summary, table and curves from the run records
    already under ``out`` (e.g. runs completed on several machines).

    ``options`` are further :class:`BenchConfig` fields. ``progress(event, info)`` is called with
    ``dataset``, ``encoder``, ``run`` (each finished piece, its record already on disk) and ``summary``.
    A run whose encoder failed is recorded as failed; the other runs go on."""
    from merlion_core.benchmark.report import run_record_path, same_settings, write_run_record, write_summary
    from merlion_core.data.collect import collect, normalised_score
    from merlion_core.data.io import load_dataset, save_dataset
    from merlion_core.envs import resolve_env_id

    config = BenchConfig(seeds=seeds, steps=steps, **options)
    check_device(config.device)
    env_id = resolve_env_id(env)
    not_applicable: dict[str, str] = {}
    names = expand_methods(methods, env_id, skipped=not_applicable)
    out_dir = Path(out)
    work = out_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    notify = progress or (lambda event, info: None)

    if dataset is None:
        dataset = str(work / "dataset")
        if not (Path(dataset) / "meta.json").exists():
            if report_only:
                raise ValueError(f"bench: report only, but there is no dataset at {dataset}; pass --dataset")
            data = collect(env_id, config.behaviour, config.noise, config.n_transitions, config.data_seed)
            save_dataset(data, dataset)
    data = load_dataset(dataset)
    if data.meta.env_id != env_id:
        raise ValueError(f"bench: dataset {dataset} is from {data.meta.env_id!r}, not {env_id!r}")
    normalisers = bench_normalisers(data)
    behaviour_score = float(
        np.mean(normalised_score(data.episode_returns(), normalisers["expert_return"], normalisers["random_return"]))
    )
    notify("dataset", {"path": str(dataset), "behaviour_score": behaviour_score, **normalisers})
    task_success = env_has_task_success(env_id)

    # what a run's result depends on; how it was executed (workers, device) is not part of it, so a
    # benchmark can be resumed or completed elsewhere (each run records the device it ran on)
    run_config = {k: v for k, v in to_dict(config).items() if k not in EXECUTION_FIELDS}
    settings = {
        "env_id": env_id,
        "config": run_config,
        "dataset": str(dataset),
        "dataset_sha256": data.content_digest(),
    }

    def encoder_settings(name: str, seed: int) -> dict[str, Any] | None:
        method = bench_method(name)
        return None if method.representation is None else encoder_overrides(method, seed, config.encoder_steps, env_id)

    # runs without a finished record of these settings (failed runs are retried), seed-major: an
    # interrupted benchmark has every method at its first seeds
    todo = []
    for seed in range(config.seeds):
        for name in names:
            record_path = run_record_path(out_dir, name, seed)
            if record_path.exists():
                record = json.loads(record_path.read_text())
                if (
                    same_settings(record.get("settings"), settings)
                    and "error" not in record
                    and record.get("encoder_settings") == encoder_settings(name, seed)
                    and agent_settings_match(record, bench_method(name), seed, config)
                ):
                    continue
            todo.append((name, seed))
    if report_only:
        todo = []

    def finish(name: str, seed: int, future: concurrent.futures.Future | None, error: str = "") -> None:
        """Write the run's record (failed: ``error`` or the future's exception) and report it."""
        try:
            if future is None:
                raise RuntimeError(error)
            record = {
                **future.result(),
                "settings": settings,
                "encoder_settings": encoder_settings(name, seed),
                "agent_settings": agent_settings(bench_method(name), seed, config),
            }
        except Exception as exc:  # one failed run is recorded and the others go on
            record = {
                "method": name,
                "seed": seed,
                "error": f"{type(exc).__name__}: {exc}",
                "curve": [],
                "last_score": None,
                "best_score": None,
                "settings": settings,
            }
        write_run_record(out_dir, record)
        notify(
            "run",
            {"method": name, "seed": seed, "last_score": record["last_score"], "best_score": record["best_score"]},
        )

    if config.workers == 1:
        pool_context: Any = InProcessExecutor()
    else:
        pool_context = concurrent.futures.ProcessPoolExecutor(
            max_workers=config.workers, mp_context=multiprocessing.get_context("spawn")
        )
    with pool_context as pool:
        encoders: dict[str, concurrent.futures.Future] = {}

        def encoder_for(name: str, seed: int) -> concurrent.futures.Future | None:
            """The (shared) encoder training of a run, submitted on first request; None for raw actions."""
            method = bench_method(name)
            if method.representation is None:
                return None
            key = encoder_key(method, seed)
            if key not in encoders:
                encoders[key] = pool.submit(
                    train_bench_encoder,
                    str(dataset),
                    name,
                    seed,
                    config.encoder_steps,
                    str(work / "encoders" / key),
                    config.device,
                    env_id,
                    settings["dataset_sha256"],
                    config.precision,
                )
            return encoders[key]

        def submit_encoders() -> None:
            """In a pool: keep at most ``workers`` encoders training, in the runs' (seed-major) order,
            so runs start as their encoders finish instead of queueing behind every encoder."""
            for name, seed in pending:
                if sum(not future.done() for future in encoders.values()) >= config.workers:
                    return
                encoder_for(name, seed)

        runs: dict[concurrent.futures.Future, tuple[str, int]] = {}
        pending = list(todo)
        while pending or runs:
            if config.workers > 1:
                submit_encoders()
            for name, seed in list(pending):
                method = bench_method(name)
                if config.workers > 1 and method.representation is not None:
                    encoder = encoders.get(encoder_key(method, seed))  # None: not submitted yet
                    if encoder is None:
                        continue
                else:  # in process: each encoder is trained just before its first run
                    encoder = encoder_for(name, seed)
                if encoder is not None and not encoder.done():
                    continue
                pending.remove((name, seed))
                if encoder is not None and encoder.exception() is not None:
                    exc = encoder.exception()
                    finish(name, seed, None, f"encoder {encoder_key(method, seed)}: {type(exc).__name__}: {exc}")
                    continue
                encoder_dir = encoder.result() if encoder is not None else None
                if encoder is not None:
                    notify("encoder", {"folder": encoder_dir})
                agent_dir = str(work / "agents" / name / f"seed{seed}")
                future = pool.submit(
                    run_one, str(dataset), name, seed, config, encoder_dir, agent_dir, peer_python, task_success
                )
                if future.done():  # run in this process: its record is on disk before the next run starts
                    finish(name, seed, future)
                else:
                    runs[future] = (name, seed)
            if not runs:
                training = [f for f in encoders.values() if not f.done()]
                if training:  # only encoders are left to wait for (never spin on finished ones)
                    concurrent.futures.wait(training, return_when=concurrent.futures.FIRST_COMPLETED)
                continue
            done, _ = concurrent.futures.wait(list(runs), timeout=5.0, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                finish(*runs.pop(future), future)
    earlier = earlier_table(out_dir, settings)  # rows of this benchmark run before, by other commands
    summary = write_summary(
        out_dir,
        env_id,
        [*[name for name in earlier["methods"] if name not in names], *names],
        config,
        behaviour_score,
        settings,
        normalisers,
        behaviour_reference(data, config, task_success),
        not_applicable={**earlier["not_applicable"], **not_applicable},
    )
    notify("summary", {"path": str(out_dir / "summary.json")})
    return summary
