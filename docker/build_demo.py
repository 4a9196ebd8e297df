"""Builds the demo inside the Docker image at build time (see Dockerfile), so a container starts
with data and trained runs: for the maze and the multi-step maze, a medium dataset (collect job)
-> a MERLION encoder (train-encoder job) -> a short MERLION-CQL run (train-agent job).

The steps are background jobs of the jobs runner in the runs folder ($MERLION_RUNS_DIR), run by a
foreground ``merlion supervisor``, exactly as jobs started from the app or ``merlion jobs
submit``: ``merlion jobs list`` and the app list them, and their folders are where the app
looks (RUNS/jobs/<id>/artifacts/). Each step is submitted once the step it reads from succeeded.

When the app's layer is in the image (studio/chains.py, the app's demo chain), the maze chain
uses the app's own demo steps and is recorded as the app's demo chain, so the app shows the
demo as built and does not build it again at first start. Without it (a single-page app) the
same sizes are used: 20,000 transitions, 2,000 encoder steps, 2,000 CQL steps, batch 64.

Usage: python docker/build_demo.py [--envs maze,multistep-maze] [--timeout 3600]
Exit 0 when every job succeeded; 1 with the failed job's log tail otherwise.
"""

from __future__ import annotations

import argparse
import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the app's layer (studio/) lives next to app.py, not in the package

from merlion_core.jobs.backend import LocalBackend  # noqa: E402
from merlion_core.jobs.spec import JobSpec  # noqa: E402
from merlion_core.jobs.store import FINAL, JobStore, read_log  # noqa: E402

TAG = "demo"
"""The demo jobs' tag (the runner's sweep column): ``merlion jobs list --sweep demo``."""

DEFAULT_STEPS: list[dict[str, Any]] = [
    {"kind": "collect", "config": {"env": "maze", "behaviour": "medium", "noise": 0.5, "n": 20_000}, "inputs": {}},
    {
        "kind": "train-encoder",
        "config": {"method": "merlion", "options": {"steps": 2_000, "batch_size": 64}},
        "inputs": {"dataset": (0, "dataset")},
    },
    {
        "kind": "train-agent",
        "config": {
            "algo": "cql",
            "steps": 2_000,
            "eval_every": 250,
            "eval_episodes": 10,
            "options": {"batch_size": 64},
        },
        "inputs": {"dataset": (0, "dataset"), "encoder": (1, "encoder")},
    },
]
"""Used when the app has no demo chain of its own (the same sizes as the app's demo)."""


def app_chains() -> Any | None:
    """The app's chains module (studio.chains) or None when the app has no such layer."""
    try:
        from studio import chains
    except ModuleNotFoundError as exc:
        if exc.name not in ("studio", "studio.chains"):
            raise
        return None
    for name in ("DEMO", "demo_steps", "Chain", "save"):
        if not hasattr(chains, name):
            raise SystemExit(
                f"build_demo: studio.chains has no {name}: the app's demo API changed, update docker/build_demo.py"
            )
    return chains


def demo_steps(chains: Any | None, env: str) -> list[dict[str, Any]]:
    """The demo chain's steps for one environment (the app's own steps when it has them)."""
    if chains is None:
        steps = copy.deepcopy(DEFAULT_STEPS)
    else:
        steps = [
            {"kind": s.kind, "config": copy.deepcopy(s.config), "seed": s.seed, "inputs": dict(s.inputs)}
            for s in chains.demo_steps()
        ]
    for step in steps:
        if step["kind"] == "collect":
            step["config"]["env"] = env
    return steps


def advance(backend: LocalBackend, store: JobStore, steps: list[dict[str, Any]]) -> None:
    """Submit every step of a chain whose inputs succeeded (in place: sets step['job'])."""
    for step in steps:
        if step.get("job") is not None:
            continue
        config = copy.deepcopy(step["config"])
        for key, (index, result_key) in step["inputs"].items():
            upstream = steps[index].get("job")
            record = store.get(upstream) if upstream is not None else None
            if record is None or record.status != "succeeded":
                break
            config[key] = (record.result or {})[result_key]
        else:
            step["config"] = config
            step["job"] = backend.submit(JobSpec(step["kind"], config, step.get("seed", 0)), sweep=TAG)
            print(f"build_demo: job {step['job']}: {step['kind']} {config}", flush=True)


def run_chains(store: JobStore, chains_by_env: dict[str, list[dict[str, Any]]], timeout: float) -> None:
    backend = LocalBackend(store, start_supervisor=False)
    deadline = time.monotonic() + timeout
    while True:
        for steps in chains_by_env.values():
            advance(backend, store, steps)
        records = [store.get(s["job"]) for steps in chains_by_env.values() for s in steps if s.get("job")]
        bad = [r for r in records if r.status in FINAL and r.status != "succeeded"]
        if bad:
            job = bad[0]
            tail = read_log(store.log_path(job.id))[-3000:]
            raise SystemExit(f"build_demo: job {job.id} ({job.kind}) {job.status}: {job.exit_reason}\n{tail}")
        total = sum(len(steps) for steps in chains_by_env.values())
        if len(records) == total and all(r.status == "succeeded" for r in records):
            return
        if time.monotonic() > deadline:
            raise SystemExit(
                f"build_demo: not done after {timeout:.0f} s: "
                + ", ".join(f"{r.id} {r.kind} {r.status}" for r in records)
            )
        time.sleep(1.0)


def record_app_demo(chains: Any, steps: list[dict[str, Any]]) -> None:
    """Write the maze chain as the app's demo chain (status 'done': the app will not rebuild it)."""
    app_steps = chains.demo_steps()
    for app_step, step in zip(app_steps, steps, strict=True):
        app_step.config = step["config"]
        app_step.job = step["job"]
    chains.save(chains.Chain(chains.DEMO, app_steps, time.time()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--envs",
        default="maze,multistep-maze",
        help="environments, comma-separated; the first one's chain becomes the app's demo chain",
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before giving up")
    args = parser.parse_args(argv)

    chains = app_chains()
    store = JobStore()  # $MERLION_RUNS_DIR
    envs = [e.strip() for e in args.envs.split(",") if e.strip()]
    chains_by_env = {env: demo_steps(chains, env) for env in envs}
    log = open(store.root / "supervisor.log", "ab")
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "merlion_core.cli", "supervisor", "--runs", str(store.root)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=str(store.root),
    )
    started = time.monotonic()
    try:
        run_chains(store, chains_by_env, args.timeout)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(30)
        log.close()
    if chains is not None:
        record_app_demo(chains, chains_by_env[envs[0]])
        print(f"build_demo: recorded the {envs[0]} chain as the app's demo chain", flush=True)
    print(
        f"build_demo: {sum(map(len, chains_by_env.values()))} jobs succeeded in {time.monotonic() - started:.0f} s "
        f"(runs folder {store.root}, uid {os.getuid()})",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
