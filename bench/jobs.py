"""Jobs numbers: overhead of starting a job (submit -> first metric) and the throughput of 8 short
jobs on 2 slots, local backend (supervisor + worker processes) and Ray (a local Ray, num_cpus=2).

Usage: python bench/jobs.py [--backends local,ray] [--out bench/results/jobs.json]
Short jobs: a 3,000-transition collection (no torch) and a 300-step BC training (torch import,
dataset load, evaluation) on the 64-action maze, 8 of each. Workers get 1 thread each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from merlion_core.jobs.backend import LocalBackend  # noqa: E402
from merlion_core.jobs.spec import JobSpec  # noqa: E402
from merlion_core.jobs.store import JobStore  # noqa: E402
from merlion_core.jobs.supervisor import SupervisorConfig, ensure_supervisor, supervisor_pid  # noqa: E402

SMALL = {"n_actuators": 6}


def collect_spec(seed: int) -> JobSpec:
    return JobSpec(
        "collect",
        {"env": "maze", "behaviour": "expert", "noise": 0.0, "n": 3000, "n_envs": 64, "env_config": SMALL},
        seed,
    )


def train_spec(dataset: str, seed: int) -> JobSpec:
    return JobSpec(
        "train-agent",
        {
            "dataset": dataset,
            "algo": "bc",
            "steps": 300,
            "eval_episodes": 5,
            "checkpoint_every": 0,
            "device": "cpu",
            "options": {"hidden": [64, 64], "batch_size": 64},
        },
        seed,
    )


def first_metric_delay(store: JobStore, job_id: int) -> float:
    rows = store.metrics(job_id)
    return rows[0]["time"] - store.get(job_id).created_at


def batch(backend, store: JobStore, specs: list[JobSpec]) -> dict:
    started = time.time()
    ids = [backend.submit(spec) for spec in specs]
    records = backend.wait(ids, poll=0.05)
    seconds = max(r.finished_at for r in records) - started
    assert all(r.status == "succeeded" for r in records), [r.exit_reason for r in records]
    delays = [first_metric_delay(store, i) for i in ids]
    return {
        "jobs": len(ids),
        "seconds": round(seconds, 2),
        "jobs_per_minute": round(60 * len(ids) / seconds, 1),
        "first_metric_delay_median_s": round(statistics.median(delays), 3),
        "first_metric_delay_first_job_s": round(delays[0], 3),
        "job_seconds_median": round(statistics.median(r.finished_at - r.started_at for r in records), 2),
        "launch_to_start_median_s": round(statistics.median(r.started_at - r.launched_at for r in records), 3),
    }


def single(backend, store: JobStore, spec: JobSpec) -> float:
    job_id = backend.submit(spec)
    backend.wait([job_id], poll=0.05)
    return round(first_metric_delay(store, job_id), 3)


def run_local(root: Path, dataset: str) -> dict:
    store = JobStore(root)
    backend = LocalBackend(store, start_supervisor=False)
    cold_id = backend.submit(collect_spec(100))
    ensure_supervisor(root, SupervisorConfig(slots=2, threads=1, idle_exit=60))  # as `merlion jobs submit` does
    backend.wait([cold_id], poll=0.05)
    out = {
        "cold_start_first_metric_s": round(first_metric_delay(store, cold_id), 3),
        "warm_collect_first_metric_s": single(backend, store, collect_spec(101)),
        "warm_train_first_metric_s": single(backend, store, train_spec(dataset, 101)),
        "collect_x8": batch(backend, store, [collect_spec(s) for s in range(8)]),
        "train_x8": batch(backend, store, [train_spec(dataset, s) for s in range(8)]),
    }
    pid = supervisor_pid(root)  # ensure_supervisor started it, and it idles 60 s before it exits
    if pid is not None and pid > 0:  # -1: held but unreadable; os.kill(-1) would signal every process
        os.kill(pid, signal.SIGTERM)
    return out


def run_ray(root: Path, dataset: str) -> dict:
    from merlion_core.jobs.ray_backend import RayBackend

    store = JobStore(root)
    started = time.perf_counter()
    backend = RayBackend(store, num_cpus=2)
    init = time.perf_counter() - started
    try:
        return {
            "ray_init_s": round(init, 2),
            "first_collect_first_metric_s": single(backend, store, collect_spec(101)),
            "first_train_first_metric_s": single(backend, store, train_spec(dataset, 101)),
            "collect_x8": batch(backend, store, [collect_spec(s) for s in range(8)]),
            "train_x8": batch(backend, store, [train_spec(dataset, s) for s in range(8)]),
        }
    finally:
        backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="local,ray")
    parser.add_argument("--out", default="bench/results/jobs.json")
    args = parser.parse_args()
    from merlion_core.data.collect import collect
    from merlion_core.data.io import save_dataset

    work = Path(tempfile.mkdtemp(prefix="merlion-jobs-bench-"))
    dataset = str(save_dataset(collect("maze", "expert", 0.0, 3000, seed=0, env_overrides=SMALL), work / "data"))
    results = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(),
        }
    }
    try:
        for name in args.backends.split(","):
            results[name] = (run_local if name == "local" else run_ray)(work / f"runs-{name}", dataset)
            print(name, json.dumps(results[name], indent=2), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
