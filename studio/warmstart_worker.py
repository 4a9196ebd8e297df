"""The resident warm-start worker: ``python -m studio.warmstart_worker [--owner-pid PID]``
(started by studio.warmstart.ensure_worker; one per runs folder, held by an flock; exits when
idle, or once its owner, the app process that started it, is gone).

It claims the newest queued warm-start job, supersedes older ones, and runs it with the jobs
runner's own entry point (merlion_core.jobs.runner.run_warm_start), keeping encoders and datasets
loaded between jobs. Its owner is recorded next to the lock (STUDIO/warmstart.owner) and looked
at every poll and every frame: once it is gone the worker takes no new job, the running one ends
``cancelled`` ("interrupted at step N: ...") at its next frame, and the worker exits."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from merlion_core.config import from_dict
from merlion_core.jobs.processes import Owner, process_start, remove_owner, take_lock, write_owner
from merlion_core.jobs.runner import load_input, run_warm_start
from merlion_core.jobs.store import JobRecord, JobStore
from studio import settings
from studio.warmstart import BACKEND, KIND, WarmStartJob, lock_path

POLL_SECONDS = 0.05
IDLE_EXIT_SECONDS = 900.0
RETIRE_WAIT = 30.0
"""Seconds a new worker waits for a retiring one (its owner gone) to let go of the lock."""


class Models:
    """Encoders and datasets kept loaded between jobs (keyed by path and mtime): the runner's
    ``load``; run_warm_start warm-starts a copy, so the cached encoder stays as saved."""

    def __init__(self) -> None:
        self.cache: dict[tuple[str, str, float], Any] = {}

    def __call__(self, what: str, path: str) -> Any:
        key = (what, path, Path(path).stat().st_mtime)
        if key not in self.cache:
            self.cache[key] = load_input(what, path)
        return self.cache[key]


class Superseded(Exception):
    """A newer slider move (or a cancel request) came: stop this warm start between frames."""


class OwnerGone(Exception):
    """The app this worker serves is gone: stop this warm start between frames, then exit."""


def newest_queued(store: JobStore) -> JobRecord | None:
    """The next warm start to run: each session's newest queued one (its older queued ones are
    cancelled: superseded), the session that has waited longest first."""
    newest: dict[str | None, JobRecord] = {}
    for job in store.list("queued", backend=BACKEND):  # oldest first
        if job.kind != KIND:
            continue
        if job.sweep in newest:
            store.request_cancel(newest[job.sweep].id)
        newest[job.sweep] = job
    return min(newest.values(), key=lambda job: job.id) if newest else None


def run(store: JobStore, job: JobRecord, models: Models, owner: Owner | None = None) -> None:
    config = from_dict(WarmStartJob, job.config)
    store.mark_started(job.id, os.getpid(), process_start(os.getpid()))

    def progress(step: int, metrics: dict[str, Any], total: int | None = None) -> None:
        if metrics:
            store.add_metrics(job.id, step, metrics)
        store.beat(job.id, step, total)
        if owner is not None and not owner.alive():
            raise OwnerGone(f"interrupted at step {step}: the app that started the worker (pid {owner.pid}) is gone")
        if step and (
            store.cancel_requested(job.id)
            or any(q.kind == KIND for q in store.list("queued", backend=BACKEND, sweep=job.sweep))
        ):
            raise Superseded(f"superseded or cancelled at step {step}")

    try:
        result = run_warm_start(config, job.seed, store.artifacts_dir(job.id), progress, load=models)
    except (Superseded, OwnerGone) as exc:
        store.finish(job.id, "cancelled", str(exc))
        return
    except Exception as exc:  # noqa: BLE001 - the job fails with its whole message; the worker goes on
        store.finish(
            job.id, "failed", f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, failure="error"
        )
        return
    store.finish(job.id, "succeeded", None, result)


def warm_up() -> None:
    """One tiny warm start: torch's first optimiser step costs seconds (lazy initialisation);
    paying it at start-up keeps the first slider move fast."""
    import numpy as np

    from merlion_core.data.dataset import from_arrays
    from merlion_core.representation.merlion import MerlionConfig, build, warm_start

    n = 16
    dataset = from_arrays(
        dict(
            observations=np.zeros((n, 3), np.float32),
            actions=np.arange(n) % 4,
            rewards=np.zeros(n, np.float32),
            next_observations=np.zeros((n, 3), np.float32),
            terminals=np.zeros(n, bool),
            timeouts=np.arange(n) == n - 1,
        ),
        n_actions=4,
    )
    rep = build(MerlionConfig(batch_size=4, hidden=8, action_embed_dim=4), 4, 3)
    for _ in warm_start(rep, dataset, p=0.1, tau=0.3, steps=2, yield_every=1, device="cpu"):
        pass


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio.warmstart_worker")
    parser.add_argument("--owner-pid", type=int, default=0, help="exit once this process is gone (0: never)")
    args = parser.parse_args(argv)
    owner = Owner.of(args.owner_pid)
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = take_lock(path, wait_retiring=RETIRE_WAIT)
    if handle is None:
        return 0  # another worker serves this runs folder
    write_owner(path, owner)
    try:
        return serve(owner)
    finally:
        remove_owner(path)
        handle.close()


def serve(owner: Owner | None) -> int:
    log(f"warm-start worker pid {os.getpid()}" + (f", owner pid {owner.pid}" if owner else ", no owner"))
    store = JobStore(settings.runs_dir())
    import torch

    torch.set_num_threads(1)
    warm_up()
    models = Models()
    # jobs this worker's predecessor left running are lost: fail them
    for lost in store.list("running", backend=BACKEND):
        store.finish(lost.id, "failed", "warm-start worker restarted", failure="interrupted")
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < IDLE_EXIT_SECONDS:
        if owner is not None and not owner.alive():
            log(f"owner pid {owner.pid} is gone: exiting")
            break
        job = newest_queued(store)
        if job is None or not store.claim(job.id, backend=BACKEND):
            time.sleep(POLL_SECONDS)
            continue
        run(store, store.get(job.id), models, owner)
        idle_since = time.monotonic()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
