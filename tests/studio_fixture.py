"""A small, real studio home for the app's tests: a 64-action maze dataset, a MERLION encoder, two
Rand-1 encoders (d = 3 for the PCA / UMAP view, recorded first, and d = 2) and a latent CQL agent,
trained in-process in a few seconds and recorded in a jobs store as succeeded jobs (with a learning curve),
exactly as the runner would have left them."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from merlion_core.data.collect import collect
from merlion_core.data.io import save_dataset
from merlion_core.jobs.store import JobStore
from merlion_core.pipelines.agent import train_agent
from merlion_core.pipelines.encoder import train_encoder

ENV_OVERRIDES = {"n_actuators": 6}  # 64 actions: every test stays fast
N_TRANSITIONS = 2000


def record(
    store: JobStore, kind: str, config: dict, result: dict, seed: int = 0, curve: list[dict] | None = None
) -> int:
    """A job in the store that ran and succeeded (with its metrics)."""
    job_id = store.submit(kind, config, seed, sweep="test")
    store.claim(job_id)
    store.mark_started(job_id, 1, None)
    for point in curve or []:
        store.add_metrics(job_id, point["step"], {k: v for k, v in point.items() if k != "step"})
    store.beat(job_id, curve[-1]["step"] if curve else 1, config.get("steps"))
    store.finish(job_id, "succeeded", None, result)
    return job_id


def build_home(home: Path) -> dict:
    """Fill ``home`` (data/, runs/) and return the paths and job ids."""
    torch.set_num_threads(1)
    started = time.perf_counter()
    runs = home / "runs"
    store = JobStore(runs)
    art = runs / "fixture"
    dataset = collect("maze", "medium", 0.5, N_TRANSITIONS, 0, n_envs=64, env_overrides=ENV_OVERRIDES)
    data_path = save_dataset(dataset, art / "dataset")
    collect_id = record(
        store,
        "collect",
        {"env": "maze", "behaviour": "medium", "noise": 0.5, "n": N_TRANSITIONS, "env_config": ENV_OVERRIDES},
        {"dataset": str(data_path)},
    )
    encoder = train_encoder(data_path, "merlion", art / "encoder", overrides={"steps": 60, "batch_size": 32})
    encoder_id = record(
        store,
        "train-encoder",
        {"dataset": str(data_path), "method": "merlion", "options": {}},
        {"encoder": encoder["out"]},
    )
    rand3 = train_encoder(data_path, "rand1", art / "rand1-d3", overrides={"dim": 3})  # before rand1: not a default
    rand3_id = record(
        store,
        "train-encoder",
        {"dataset": str(data_path), "method": "rand1", "options": {"dim": 3}},
        {"encoder": rand3["out"]},
    )
    rand = train_encoder(data_path, "rand1", art / "rand1")
    rand_id = record(
        store, "train-encoder", {"dataset": str(data_path), "method": "rand1", "options": {}}, {"encoder": rand["out"]}
    )
    agent = train_agent(
        data_path,
        "cql",
        art / "agent",
        steps=20,
        encoder_dir=encoder["out"],
        eval_every=10,
        eval_episodes=2,
        overrides={"batch_size": 32},
    )
    import json

    curve = json.loads((Path(agent["out"]) / "metrics.json").read_text())["curve"]
    agent_ids = [
        record(
            store,
            "train-agent",
            {
                "dataset": str(data_path),
                "algo": "cql",
                "encoder": encoder["out"],
                "steps": 20,
                "eval_every": 10,
                "options": {},
            },
            {"agent": agent["out"]},
            seed=seed,
            curve=[{**p, "normalised_score": p["normalised_score"] + 10 * seed} for p in curve],
        )
        for seed in (0, 1)
    ]
    store.close()
    return {
        "home": home,
        "dataset": str(data_path),
        "encoder": encoder["out"],
        "rand1": rand["out"],
        "rand3": rand3["out"],
        "agent": agent["out"],
        "jobs": {
            "collect": collect_id,
            "encoder": encoder_id,
            "rand1": rand_id,
            "rand3": rand3_id,
            "agents": agent_ids,
        },
        "seconds": time.perf_counter() - started,
        "obs": np.asarray(dataset.observations),
    }


def quiet_app(monkeypatch, home) -> None:
    """Point the app at ``home``; no demo, no supervisor, warm-start worker or chain advancer thread started
    (a thread would outlive the test and its home)."""
    import merlion_core.jobs.backend as backend
    from studio import chains, jobs_client, warmstart

    monkeypatch.setenv("MERLION_STUDIO_HOME", str(home))
    monkeypatch.delenv("MERLION_RUNS_DIR", raising=False)
    monkeypatch.delenv("MERLION_DATA_DIR", raising=False)
    monkeypatch.setenv("MERLION_STUDIO_DEMO", "0")
    monkeypatch.setattr(backend, "ensure_supervisor", lambda *a, **k: 0)
    monkeypatch.setattr(jobs_client, "ensure_supervisor", lambda *a, **k: 0)  # resume's
    monkeypatch.setattr(warmstart, "ensure_worker", lambda *a, **k: 0)
    monkeypatch.setattr(chains, "start_advancer", lambda: None)
