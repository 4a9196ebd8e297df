"""The app's thin adapter over the jobs runner (merlion_core.jobs): submit, list, cancel, resume,
metrics and learning curves. Every page goes through here; nothing here trains anything.

A store is opened per call (SQLite in WAL mode: cheap to open, safe across threads and
processes). Jobs the app submits carry a tag in the runner's ``sweep`` column ("studio:..."),
so the demo's jobs can be told apart.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from merlion_core.jobs.backend import LocalBackend
from merlion_core.jobs.spec import JobSpec
from merlion_core.jobs.store import FINAL, JobRecord, JobStore, read_log, resumable, resume_refusal
from merlion_core.jobs.supervisor import ensure_supervisor
from studio import settings

ACTIVE = ("queued", "running")
RESULT_PATH_KEYS = {"collect": "dataset", "train-encoder": "encoder", "train-agent": "agent", "train-online": "agent"}
"""The result key holding the path a finished job produced."""


@contextmanager
def open_store() -> Iterator[JobStore]:
    store = JobStore(settings.runs_dir())
    try:
        yield store
    finally:
        store.close()


def submit(kind: str, config: dict[str, Any], seed: int = 0, tag: str | None = None) -> int:
    """Queue a job (validated by the runner: one-line ValueError on a bad config) and make sure a
    supervisor runs; returns its id."""
    with open_store() as store:
        return LocalBackend(store, owner_pid=os.getpid()).submit(JobSpec(kind, dict(config), int(seed)), sweep=tag)


def jobs(kind: str | None = None, status: str | tuple[str, ...] | None = None) -> list[JobRecord]:
    """All jobs (newest last), optionally of one kind and status."""
    with open_store() as store:
        found = store.list(status)
    return [job for job in found if kind is None or job.kind == kind]


def get(job_id: int) -> JobRecord:
    with open_store() as store:
        return store.get(job_id)


def cancel(job_id: int) -> str:
    """'cancelled' (it was queued) or 'requested' (it stops at its next step)."""
    with open_store() as store:
        job = store.get(job_id)
        if job.backend == "local":
            return LocalBackend(store, owner_pid=os.getpid()).cancel(job_id)
        return store.request_cancel(job_id)


def can_resume(job: JobRecord) -> bool:
    """Whether to offer Resume: an interrupted, killed or cancelled job, never one that failed with its
    own error (it would fail the same way)."""
    return resumable(job)


def why_not_resumable(job: JobRecord) -> str | None:
    """The one-line reason Resume is not offered (None when it is)."""
    return resume_refusal(job)


def resume(job_id: int) -> None:
    """Queue an interrupted, killed or cancelled job again, from its latest checkpoint (JobStateError,
    one line, otherwise: a job that failed with its own error is refused)."""
    with open_store() as store:
        job = store.get(job_id)
        store.requeue(job_id, resume=True)
        if job.backend == "local":
            ensure_supervisor(store.root, owner_pid=os.getpid())


def metric_series(job_id: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps int64[N], values float64[N]) of one metric of a job, in logging order."""
    with open_store() as store:
        rows = store.metrics(job_id, name)
    steps = np.fromiter((row["step"] for row in rows), dtype=np.int64, count=len(rows))
    values = np.fromiter(
        (np.nan if row["value"] is None else row["value"] for row in rows), dtype=np.float64, count=len(rows)
    )
    return steps, values


def latest_metrics(job_id: int) -> dict[str, float]:
    with open_store() as store:
        rows = store.metrics(job_id)
    return {row["name"]: row["value"] for row in rows}


def log_tail(job_id: int, max_bytes: int = 20_000) -> str:
    with open_store() as store:
        return read_log(store.log_path(job_id), max_bytes)


def output_path(job: JobRecord) -> Path | None:
    """The dataset / encoder / agent folder a succeeded job wrote, or None."""
    key = RESULT_PATH_KEYS.get(job.kind)
    if job.status != "succeeded" or key is None or not job.result or not job.result.get(key):
        return None
    return Path(job.result[key])


def progress_fraction(job: JobRecord) -> float:
    if job.status == "succeeded":
        return 1.0
    if not job.total or job.step is None:
        return 0.0
    return float(min(1.0, max(0.0, job.step / job.total)))


def is_active(job: JobRecord) -> bool:
    return job.status not in FINAL


@dataclass(frozen=True)
class JobRow:
    """One line of the app's job tables."""

    id: int
    kind: str
    status: str
    progress: str
    label: str
    reason: str


def describe(job: JobRecord) -> str:
    """A short human label: what the job trains or collects, on what."""
    cfg = job.config
    if job.kind == "collect":
        return f"{cfg.get('env')} {cfg.get('behaviour')} noise {cfg.get('noise')} n={cfg.get('n')}"
    if job.kind == "train-encoder":
        return f"{cfg.get('method')} encoder on {Path(str(cfg.get('dataset', ''))).name} (seed {job.seed})"
    if job.kind == "train-agent":
        encoder = f" + encoder #{_job_of(cfg['encoder'])}" if cfg.get("encoder") else ""
        return f"{cfg.get('algo')}{encoder} {cfg.get('steps')} steps (seed {job.seed})"
    if job.kind == "train-online":
        from studio.curves import run_length

        steps = run_length(job)[1]
        env = f" on {cfg['env']}" if cfg.get("env") else ""
        return f"online cql + encoder #{_job_of(str(cfg.get('encoder', '')))}{env} {steps} env steps (seed {job.seed})"
    if job.kind == "warm-start":
        return f"warm start p={cfg.get('p')} tau={cfg.get('tau')}"
    if job.kind == "umap":
        return (
            f"UMAP of encoder #{_job_of(str(cfg.get('encoder', '')))} at rows {cfg.get('rows')} "
            f"(n_neighbors {cfg.get('n_neighbors')}, min_dist {cfg.get('min_dist')})"
        )
    return job.kind


def _job_of(path: str) -> str:
    """The job id in a path .../jobs/<id>/artifacts/... (or the folder name)."""
    parts = Path(path).parts
    return parts[parts.index("jobs") + 1] if "jobs" in parts[:-1] else Path(path).name


def rows(records: list[JobRecord]) -> list[JobRow]:
    out = []
    for job in records:
        progress = "-" if job.step is None else (f"{job.step}/{job.total}" if job.total else str(job.step))
        out.append(JobRow(job.id, job.kind, job.status, progress, describe(job), job.exit_reason or ""))
    return out
