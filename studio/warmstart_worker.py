"""The resident warm-start worker: ``python -m studio.warmstart_worker`` (started by
studio.warmstart.ensure_worker; one per runs folder, held by an flock; exits when idle).

It claims the newest queued warm-start job, supersedes older ones, and streams frames."""

from __future__ import annotations

import copy
import fcntl
import os
import sys
import time
from pathlib import Path
from typing import Any

from merlion_core.config import from_dict
from merlion_core.jobs.processes import process_start
from merlion_core.jobs.store import JobRecord, JobStore
from studio import settings
from studio.warmstart import BACKEND, KIND, WarmStartJob, lock_path, write_frame

POLL_SECONDS = 0.05
IDLE_EXIT_SECONDS = 900.0


class Models:
    """Encoders and datasets kept loaded between jobs (keyed by path and mtime); each job starts
    from a fresh copy of the saved encoder."""

    def __init__(self) -> None:
        self.cache: dict[tuple[str, str, float], Any] = {}

    def get(self, kind: str, path: str) -> Any:
        key = (kind, path, Path(path).stat().st_mtime)
        if key not in self.cache:
            if kind == "encoder":
                from merlion_core.representation.artifacts import load_representation

                self.cache[key] = load_representation(path).representation
            else:
                from merlion_core.data.io import load_dataset

                self.cache[key] = load_dataset(path)
        return self.cache[key]


def newest_queued(store: JobStore) -> JobRecord | None:
    """The newest queued warm-start job; older queued ones are cancelled (superseded)."""
    queued = [job for job in store.list("queued", backend=BACKEND) if job.kind == KIND]
    for old in queued[:-1]:
        store.request_cancel(old.id)
    return queued[-1] if queued else None


def run(store: JobStore, job: JobRecord, models: Models) -> None:
    import numpy as np

    from merlion_core.representation.merlion import warm_start

    config = from_dict(WarmStartJob, job.config)
    store.mark_started(job.id, os.getpid(), process_start(os.getpid()))
    try:
        rep = copy.deepcopy(models.get("encoder", config.encoder))
        dataset = models.get("dataset", config.dataset)
        if not hasattr(rep, "behaviour_model"):
            raise ValueError(f"{config.encoder}: warm starts need a MERLION encoder, got {getattr(rep, 'method', '?')}")
        frames = store.artifacts_dir(job.id) / "frames"
        state = np.asarray(config.state, dtype=np.float32)[None]
        import torch

        with torch.no_grad():
            write_frame(frames, 0, rep.embed_all(torch.as_tensor(state))[0].numpy())
        store.beat(job.id, 0, config.steps)
        for update in warm_start(rep, dataset, p=config.p, tau=config.tau, steps=config.steps,
                                 yield_every=config.frame_every, states=state, device="cpu", seed=job.seed):
            write_frame(frames, update.step, update.embeddings[0])
            store.add_metrics(job.id, update.step, update.metrics)
            store.beat(job.id, update.step, config.steps)
            if store.cancel_requested(job.id) or any(q.kind == KIND for q in store.list("queued", backend=BACKEND)):
                store.finish(job.id, "cancelled", f"superseded or cancelled at step {update.step}")
                return
        store.finish(job.id, "succeeded", None, {"frames": str(frames), "steps": config.steps})
    except Exception as exc:  # noqa: BLE001 - the job fails with one line; the worker goes on
        store.finish(job.id, "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500])


def warm_up() -> None:
    """One tiny warm start: torch's first optimiser step costs seconds (lazy initialisation);
    paying it at start-up keeps the first slider move fast."""
    import numpy as np

    from merlion_core.data.dataset import from_arrays
    from merlion_core.representation.merlion import MerlionConfig, build, warm_start

    n = 16
    dataset = from_arrays(dict(observations=np.zeros((n, 3), np.float32), actions=np.arange(n) % 4,
                               rewards=np.zeros(n, np.float32), next_observations=np.zeros((n, 3), np.float32),
                               terminals=np.zeros(n, bool), timeouts=np.arange(n) == n - 1), n_actions=4)
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
    for job in store.list("running", backend=BACKEND):
        store.finish(job.id, "failed", "warm-start worker restarted")
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
