"""One job kind -> its pipeline entry point, writing into the job's artifacts folder.

``run_job`` is what a worker runs (in its own process, locally or on Ray). ``progress`` is the
worker's reporter: every entry point's progress callback goes to it, and it raises to cancel
between steps. Returns the job's result (a small JSON-able summary).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from merlion_core.config import to_dict
from merlion_core.jobs.spec import (
    BenchJob,
    CollectJob,
    EvaluateJob,
    OPEJob,
    TrainAgentJob,
    TrainEncoderJob,
    TrainOnlineJob,
    UmapJob,
    WarmStartJob,
    parse_config,
)

Progress = Callable[..., None]
Loader = Callable[[str, str], Any]
"""``load(what, path)`` with what = "encoder" (a LoadedRepresentation) or "dataset"."""


def run_job(
    kind: str,
    config: dict[str, Any],
    seed: int,
    artifacts: Path,
    progress: Progress,
    *,
    checkpoint_dir: Path,
    resume: bool = False,
) -> dict[str, Any]:
    parsed = parse_config(kind, config)
    artifacts.mkdir(parents=True, exist_ok=True)
    if kind == "collect":
        return run_collect(parsed, seed, artifacts, progress)
    if kind == "train-encoder":
        return run_train_encoder(parsed, seed, artifacts, progress, checkpoint_dir, resume)
    if kind == "train-agent":
        return run_train_agent(parsed, seed, artifacts, progress, checkpoint_dir, resume)
    if kind == "train-online":
        return run_train_online(parsed, seed, artifacts, progress)
    if kind == "evaluate":
        return run_evaluate(parsed, seed, progress)
    if kind == "ope":
        return run_ope(parsed, seed, artifacts, progress)
    if kind == "warm-start":
        return run_warm_start(parsed, seed, artifacts, progress)
    if kind == "umap":
        return run_umap(parsed, seed, artifacts, progress)
    return run_bench(parsed, seed, artifacts, progress)


def run_collect(config: CollectJob, seed: int, artifacts: Path, progress: Progress) -> dict[str, Any]:
    from merlion_core.data.collect import collect
    from merlion_core.data.io import save_dataset

    dataset = collect(
        config.env,
        config.behaviour,
        config.noise,
        config.n,
        seed,
        n_envs=config.n_envs,
        env_overrides=config.env_config,
        progress=progress,
    )
    path = save_dataset(dataset, artifacts / "dataset", format=config.format)
    returns = dataset.episode_returns()
    return {
        "dataset": str(path),
        "n_transitions": int(dataset.n_transitions),
        "n_episodes": int(dataset.n_episodes),
        "mean_return": float(returns.mean()) if len(returns) else None,
    }


def run_train_encoder(
    config: TrainEncoderJob, seed: int, artifacts: Path, progress: Progress, checkpoint_dir: Path, resume: bool
) -> dict[str, Any]:
    from merlion_core.pipelines.encoder import train_encoder

    total: int | None = None

    def on_config(resolved: Any) -> None:
        nonlocal total
        total = int(getattr(resolved, "steps", 0)) or None
        progress(0, {}, total=total)

    result = train_encoder(
        config.dataset,
        config.method,
        artifacts / "encoder",
        overrides={**config.options, "seed": seed},
        device=config.device,
        precision=config.precision,
        progress=progress,
        on_config=on_config,
        checkpoint_dir=checkpoint_dir if config.checkpoint_every else None,
        checkpoint_every=config.checkpoint_every,
        resume=resume,
    )
    if total:  # trained to the end: every step done, whatever the method's own reporting cadence
        progress(total, total)
    return {
        "encoder": result["out"],
        "method": config.method,
        "seconds": result["seconds"],
        "metrics": result["metrics"],
        "precision": result["precision"],
    }


def run_train_agent(
    config: TrainAgentJob, seed: int, artifacts: Path, progress: Progress, checkpoint_dir: Path, resume: bool
) -> dict[str, Any]:
    from merlion_core.pipelines.agent import train_agent

    progress(0, {}, total=config.steps)
    result = train_agent(
        config.dataset,
        config.algo,
        artifacts / "agent",
        steps=config.steps,
        encoder_dir=config.encoder,
        overrides={**config.options, "seed": seed},
        eval_every=config.eval_every,
        eval_episodes=config.eval_episodes,
        device=config.device,
        precision=config.precision,
        progress=progress,
        step_progress=lambda done, total: progress(done, total),  # a counter: the job's step, evaluating or not
        checkpoint_dir=checkpoint_dir if config.checkpoint_every else None,
        checkpoint_every=config.checkpoint_every,
        resume=resume,
        holdout=config.holdout,
        holdout_seed=config.holdout_seed,
    )
    return {
        "agent": result["out"],
        "algo": config.algo,
        "seconds": result["seconds"],
        "last": result["last"],
        "precision": result["precision"],
    }


def run_train_online(config: TrainOnlineJob, seed: int, artifacts: Path, progress: Progress) -> dict[str, Any]:
    """An online agent in artifacts/agent; the job's step counts env steps (no checkpoints: a resumed
    job starts again)."""
    from merlion_core.algos.online import online_config, vector_steps
    from merlion_core.pipelines.online import train_online

    online = online_config({**config.options, "seed": seed})
    progress(0, {}, total=vector_steps(online.env_steps, online.n_envs) * online.n_envs)
    result = train_online(
        config.env,
        config.encoder,
        artifacts / "agent",
        config=online,
        env_overrides=config.env_config,
        device=config.device,
        precision=config.precision,
        progress=progress,
        step_progress=lambda done, total: progress(done, total),
    )
    return {
        "agent": result["out"],
        "algo": result["algo"],
        "mode": "online",
        "seconds": result["seconds"],
        "env_steps": result["env_steps"],
        "updates": result["updates"],
        "last": result["last"],
        "precision": result["precision"],
    }


def run_evaluate(config: EvaluateJob, seed: int, progress: Progress) -> dict[str, Any]:
    from merlion_core.pipelines.agent import evaluate_agent

    summary = evaluate_agent(config.agent, episodes=config.episodes, seed=seed)
    progress(config.episodes, {k: v for k, v in summary.items() if isinstance(v, (int, float))})
    return summary


def run_ope(config: OPEJob, seed: int, artifacts: Path, progress: Progress) -> dict[str, Any]:
    """Off-policy estimates of a saved agent; the full result (with each estimator's details) in
    artifacts/ope.json, the summary without details returned."""
    import json

    from merlion_core.config import from_dict
    from merlion_core.pipelines.ope import OPEConfig, ope_agent, without_details

    result = ope_agent(
        config.agent,
        config.dataset,
        from_dict(OPEConfig, {**config.options, "seed": seed}),
        progress=lambda done, total: progress(done, {}, total=total),
        device=config.device,
    )
    (artifacts / "ope.json").write_text(json.dumps(result, indent=1))
    return {**result, "estimators": without_details(result["estimators"])}


def run_bench(config: BenchJob, seed: int, artifacts: Path, progress: Progress) -> dict[str, Any]:
    """The benchmark; one metric row per finished (method, seed) run (the job's seed is not used:
    the benchmark's seeds are 0 .. seeds-1)."""
    from merlion_core.benchmark.methods import expand_methods
    from merlion_core.benchmark.runner import run_benchmark

    total = len(expand_methods(list(config.methods), config.env)) * config.seeds
    finished = 0

    def on_event(event: str, info: dict[str, Any]) -> None:
        nonlocal finished
        if event == "run":
            finished += 1
            score = info.get("last_score")
            progress(
                finished,
                {"runs_finished": finished, "last_score": score if score is not None else float("nan")},
                total=total,
            )
        else:
            progress(finished, total)

    return run_benchmark(
        config.env,
        list(config.methods),
        config.seeds,
        config.steps,
        artifacts / "bench",
        progress=on_event,
        **config.options,
    )


def load_input(what: str, path: str) -> Any:
    """The default loader of the warm-start and umap kinds: from disk, every call."""
    if what == "encoder":
        from merlion_core.representation.artifacts import load_representation

        return load_representation(path)
    from merlion_core.data.io import load_dataset

    return load_dataset(path)


def _encoder_and_dataset(encoder: str, dataset: str | None, load: Loader) -> tuple[Any, Any]:
    from merlion_core.pipelines.embeddings import encoder_dataset_path

    loaded = load("encoder", encoder)
    return loaded, load("dataset", dataset or encoder_dataset_path(loaded, encoder))


def run_warm_start(
    config: WarmStartJob, seed: int, artifacts: Path, progress: Progress, *, load: Loader = load_input
) -> dict[str, Any]:
    """The warm start of the p / tau sliders: frames in artifacts/frames/, the encoder in
    artifacts/encoder/ (save_encoder). The app's resident worker calls this too, with a ``load``
    that keeps encoders and datasets in memory."""
    from merlion_core.pipelines.embeddings import warm_start_encoder

    loaded, dataset = _encoder_and_dataset(config.encoder, config.dataset, load)
    return warm_start_encoder(
        loaded,
        dataset,
        p=config.p,
        tau=config.tau,
        steps=config.steps,
        frame_every=config.frame_every,
        state=config.state,
        seed=seed,
        frames_dir=artifacts / "frames",
        source=config.encoder,
        progress=progress,
        out_dir=artifacts / "encoder" if config.save_encoder else None,
    )


def run_umap(
    config: UmapJob, seed: int, artifacts: Path, progress: Progress, *, load: Loader = load_input
) -> dict[str, Any]:
    """UMAP of every action's embedding at the chosen rows (the job's seed is UMAP's random_state):
    artifacts/projection/umap.npz and config.json."""
    from merlion_core.pipelines.embeddings import umap_embeddings

    loaded, dataset = _encoder_and_dataset(config.encoder, config.dataset, load)
    return umap_embeddings(
        loaded,
        dataset,
        config.rows,
        n_neighbors=config.n_neighbors,
        min_dist=config.min_dist,
        seed=seed,
        out_dir=artifacts / "projection",
        config=to_dict(config),
        progress=progress,
    )
