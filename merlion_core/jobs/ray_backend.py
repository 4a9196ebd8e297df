"""Ray as the scale-out backend, behind the same submit/status/cancel/metrics interface.

Without an address, ``RayBackend`` starts a local Ray (``ray.init(address="local")``) in this
process and runs each job as a Ray task (1 CPU; 1 GPU when the job wants one and the cluster has
some). The task claims the job in the store and runs the very worker code the supervisor runs
(:func:`merlion_core.jobs.worker.run_worker`), so metrics, heartbeats, logs and the final status
land in the same SQLite store and Ray runs look like local ones. The local Ray lives as long as
this process: ``merlion sweep --backend ray`` waits for its runs.

With an address (a cluster's dashboard, ``http://HEAD:8265``), each job becomes a Ray job
submitted through the Ray Jobs API (``POST /api/jobs/``) whose entrypoint is
``python -m merlion_core.jobs.worker ID --runs RUNS --claim``: the cluster needs merlion_core
installed and this runs folder mounted at the same path. Ray 2.60 enables token authentication
for clusters it starts locally; the token (``RAY_AUTH_TOKEN``, the file named by
``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``) is sent as ``Authorization: Bearer TOKEN``.
See docs/jobs.md for the security notes (a Ray head listens on every interface).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from merlion_core.jobs.backend import Backend
from merlion_core.jobs.processes import THREAD_VARS, THREADS_ENV, package_root
from merlion_core.jobs.spec import wants_gpu
from merlion_core.jobs.store import JobStore

CANCEL_GRACE = 10.0
TERMINAL_RAY_STATES = ("SUCCEEDED", "FAILED", "STOPPED")


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RuntimeError(
            "--backend ray: Ray is not installed (pip install 'ray[default]==2.60.0', or the project's [ray] extra)"
        ) from None
    return ray


def ray_token() -> str | None:
    """The Ray auth token this machine has: $RAY_AUTH_TOKEN, the $RAY_AUTH_TOKEN_PATH file, ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    return path.read_text().strip() if path.is_file() else None


def worker_env_vars(threads: int = 1) -> dict[str, str]:
    """What a Ray task or Ray job needs in its environment: our import path and its thread share."""
    env = {THREADS_ENV: str(threads), **{name: str(threads) for name in THREAD_VARS}}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root(), os.environ.get("PYTHONPATH", "")]))
    return env


def run_in_ray_task(job_id: int, runs: str) -> int:
    """A Ray task's body: claim the queued job, then run it like a local worker, logging to its file."""
    from merlion_core.jobs.worker import run_worker

    store = JobStore(runs)
    try:
        if not store.claim(job_id, backend="ray"):
            return 0  # cancelled while it waited in Ray's queue
        log_path = store.log_path(job_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        saved = os.dup(1), os.dup(2)
        with open(log_path, "ab") as log_file:  # the worker's output goes to the job's log, like locally
            os.dup2(log_file.fileno(), 1)
            os.dup2(log_file.fileno(), 2)
            try:
                return run_worker(store, job_id, threads=1)
            finally:
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        store.close()


class RayBackend(Backend):
    """Jobs as Ray tasks on a local Ray, or as Ray jobs on a cluster (``address``)."""

    name = "ray"

    def __init__(self, store: JobStore, *, address: str | None = None, num_cpus: int | None = None) -> None:
        super().__init__(store)
        self.ray = import_ray()
        self.address = address
        self.refs: dict[int, Any] = {}
        self.client = None
        if address:
            from ray.job_submission import JobSubmissionClient

            token = ray_token()
            headers = {"Authorization": f"Bearer {token}"} if token else None
            self.client = JobSubmissionClient(address, headers=headers)
        else:
            self.ray.init(
                address="local",
                num_cpus=num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": worker_env_vars()},
            )
            self.has_gpus = self.ray.cluster_resources().get("GPU", 0) > 0
            self.task = self.ray.remote(run_in_ray_task)

    def launch(self, job_id: int) -> None:
        job = self.store.get(job_id)
        if self.client is not None:
            submission = self.client.submit_job(
                entrypoint=f"python -m merlion_core.jobs.worker {job_id} --runs {self.store.root} --claim",
                submission_id=f"merlion-{job_id}-{job.attempts + 1}-{int(time.time())}",
                entrypoint_num_cpus=1,
                entrypoint_num_gpus=1 if wants_gpu(job.kind, job.config) else 0,
                runtime_env={"env_vars": worker_env_vars()},
            )
            self.store.set_external_id(job_id, submission)
            return
        gpus = 1 if self.has_gpus and wants_gpu(job.kind, job.config) else 0
        self.refs[job_id] = self.task.options(num_cpus=1, num_gpus=gpus, max_retries=0).remote(
            job_id, str(self.store.root)
        )

    def poll(self) -> None:
        now = time.time()
        for job in self.store.list(("queued", "running"), backend="ray"):
            if job.id not in self.refs and (self.client is None or not job.external_id):
                continue  # another driver's job
            ended = self._ended(job)
            if ended is not None and self.store.get(job.id).status in ("queued", "running"):
                self.store.claim(job.id, backend="ray")  # a job that never started goes through running
                self.store.finish(job.id, "cancelled" if job.cancel_requested_at else "failed", ended)
            elif job.cancel_requested_at is not None and now - job.cancel_requested_at > CANCEL_GRACE:
                self._force_stop(job)
                self.store.finish(
                    job.id, "cancelled", f"cancelled: did not stop within {CANCEL_GRACE:g} s, Ray stopped it"
                )

    def _ended(self, job: Any) -> str | None:
        """Why Ray's side of a still-open job has ended, or None while it runs."""
        if self.client is not None:
            if not job.external_id:
                return None
            info = self.client.get_job_info(job.external_id)
            state = str(getattr(info.status, "value", info.status))
            return None if state not in TERMINAL_RAY_STATES else f"Ray job {job.external_id} {state}: {info.message}"
        ref = self.refs.get(job.id)
        if ref is None:
            return None
        ready, _ = self.ray.wait([ref], timeout=0)
        if not ready:
            return None
        try:
            code = self.ray.get(ref)
        except Exception as exc:  # the task itself died (worker crash, cancel): one line
            return f"Ray task failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        return f"Ray task ended (exit code {code}) without a final status"

    def _force_stop(self, job: Any) -> None:
        if self.client is not None and job.external_id:
            self.client.stop_job(job.external_id)
        elif job.id in self.refs:
            self.ray.cancel(self.refs[job.id], force=True)

    def stop(self, job_id: int) -> None:
        """Cooperative first: the task's heartbeat thread sees the request in the store; ``poll``
        forces it after the grace period."""

    def close(self) -> None:
        if self.client is None and self.ray.is_initialized():
            self.ray.shutdown()
