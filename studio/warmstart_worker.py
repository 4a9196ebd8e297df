"""The resident warm-start worker: ``python -m studio.warmstart_worker`` (started by
studio.warmstart.ensure_worker; one per runs folder, held by an flock; exits when idle).

It claims the newest queued warm-start job, supersedes older ones, and runs it with the jobs
runner's own entry point (merlion_core.jobs.runner.run_warm_start), keeping encoders and datasets
loaded between jobs."""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path
from typing import Any

from merlion_core.config import from_dict
from merlion_core.jobs.processes import process_start
from merlion_core.jobs.runner import load_input, run_warm_start
from merlion_core.jobs.store import JobRecord, JobStore
from studio import settings
from studio.warmstart import BACKEND, KIND, WarmStartJob, lock_path

POLL_SECONDS = 0.05
IDLE_EXIT_SECONDS = 900.0


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


def newest_queued(store: JobStore) -> JobRecord | None:
    """The newest queued warm-start job; older queued ones are cancelled (superseded)."""
    queued = [job for job in store.list("queued", backend=BACKEND) if job.kind == KIND]
    for old in queued[:-1]:
        store.request_cancel(old.id)
    return queued[-1] if queued else None


def run(store: JobStore, job: JobRecord, models: Models) -> None:
    config = from_dict(WarmStartJob, job.config)
    store.mark_started(job.id, os.getpid(), process_start(os.getpid()))

    def progress(step: int, metrics: dict[str, Any], total: int | None = None) -> None:
        if metrics:
            store.add_metrics(job.id, step, metrics)
        store.beat(job.id, step, total)
        if step and (
            store.cancel_requested(job.id) or any(q.kind == KIND for q in store.list("queued", backend=BACKEND))
        ):
            raise Superseded(f"superseded or cancelled at step {step}")

    try:
        result = run_warm_start(config, job.seed, store.artifacts_dir(job.id), progress, load=models)
    except Superseded as exc:
        store.finish(job.id, "cancelled", str(exc))
        return
    except Exception as exc:  # noqa: BLE001 - the job fails with one line; the worker goes on
        store.finish(job.id, "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500])
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


def main() -> int:
    store = JobStore(settings.runs_dir())
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another worker serves this runs folder
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    import torch

    torch.set_num_threads(1)
    warm_up()
    models = Models()
    # jobs this worker's predecessor left running are lost: fail them
    for lost in store.list("running", backend=BACKEND):
        store.finish(lost.id, "failed", "warm-start worker restarted")
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < IDLE_EXIT_SECONDS:
        job = newest_queued(store)
        if job is None or not store.claim(job.id, backend=BACKEND):
            time.sleep(POLL_SECONDS)
            continue
        run(store, store.get(job.id), models)
        idle_since = time.monotonic()
    return 0


if __name__ == "__main__":
    sys.exit(main())
