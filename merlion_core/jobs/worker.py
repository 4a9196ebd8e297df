"""One job in its own process: ``python -m merlion_core.jobs.worker JOB_ID --runs DIR``.

The supervisor (or a Ray task) starts it with stdout/stderr going to the job's log. It marks
the job started, runs it, and writes the final status itself: succeeded (with a result),
failed (with the exception's whole message, failure ``error``: not resumable; ``interrupted``
for Ctrl-C or SystemExit) or cancelled. Progress callbacks become metric rows
and heartbeats; a background thread beats every second and watches for a cancel request,
which the next progress callback turns into :class:`JobCancelled` (a cooperative stop between
steps; the supervisor kills the process group if that does not come in time).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import traceback
from typing import Any

from merlion_core.jobs.processes import THREADS_ENV, process_start
from merlion_core.jobs.runner import run_job
from merlion_core.jobs.spec import TORCH_KINDS
from merlion_core.jobs.store import JobStore

HEARTBEAT_SECONDS = 1.0
COUNTER_METRIC_SECONDS = 0.5


class JobCancelled(Exception):
    """Raised from a progress callback when the job was asked to stop."""


class Reporter:
    """The progress callback of every kind: ``(step, metrics)`` or ``(done, total)``; raises to cancel."""

    def __init__(self, store: JobStore, job_id: int, cancel: threading.Event) -> None:
        self.store, self.job_id, self.cancel = store, job_id, cancel
        self.step = 0
        self.last_counter = (0.0, -1)  # (time, step) of the last counter row

    def __call__(self, *args: Any, total: int | None = None, **_: Any) -> None:
        if self.cancel.is_set():
            raise JobCancelled(f"cancelled at step {self.step}")
        step, metrics = self.step, None
        if args and isinstance(args[0], dict):  # (point,) with a "step" key
            metrics = args[0]
            step = int(metrics.get("step", step))
        elif args and isinstance(args[0], (int, float)):
            step = int(args[0])
            if len(args) > 1 and isinstance(args[1], dict):  # (step, metrics)
                metrics = args[1]
            elif len(args) > 1 and isinstance(args[1], (int, float)):  # (done, total): a counter
                total = int(args[1])
        self.step = step
        now = time.monotonic()
        if metrics is None:  # counters come often: one row per half second, and the final count once
            finished = total is not None and step >= total
            if step == self.last_counter[1] or (now - self.last_counter[0] < COUNTER_METRIC_SECONDS and not finished):
                return
            self.last_counter = (now, step)
            metrics = {"progress": step}
        self.store.add_metrics(self.job_id, step, {k: v for k, v in metrics.items() if k != "step"})
        self.store.beat(self.job_id, step, total)


class Heartbeat(threading.Thread):
    """Beats every second and sets ``cancel`` once the store holds a cancel request."""

    def __init__(self, root: Any, job_id: int, cancel: threading.Event) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.root, self.job_id, self.cancel = root, job_id, cancel
        self.done = threading.Event()

    def run(self) -> None:
        store = JobStore(self.root)
        try:
            while not self.done.wait(HEARTBEAT_SECONDS):
                store.beat(self.job_id)
                if store.cancel_requested(self.job_id):
                    self.cancel.set()
        finally:
            store.close()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _prepare_resume(store: JobStore, job_id: int, kind: str) -> None:
    from merlion_core.checkpoints import checkpoint_steps

    steps = checkpoint_steps(store.checkpoint_dir(job_id)) if kind in ("train-agent", "train-encoder") else []
    start = steps[-1] if steps else 0
    dropped = store.drop_metrics_after(job_id, start)
    log(
        f"resuming from step {start}"
        + (" (no checkpoint: from the start)" if not steps else "")
        + f"; dropped {dropped} metric rows after it"
    )


def run_worker(store: JobStore, job_id: int, threads: int | None = None) -> int:
    """Run job ``job_id`` (already claimed: status running) in this process; returns an exit code."""
    job = store.get(job_id)
    if job.status != "running":
        log(f"job {job_id} is {job.status}, not running: nothing to do")
        return 0
    pid = os.getpid()
    store.mark_started(job_id, pid, process_start(pid))
    threads = threads or int(os.environ.get(THREADS_ENV, "0") or 0) or None
    log(
        f"job {job_id}: {job.kind} seed {job.seed} attempt {job.attempts} pid {pid} threads {threads} "
        f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}"
    )
    if job.kind in TORCH_KINDS:
        import torch

        if threads:
            torch.set_num_threads(threads)
        log(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, cuda available: {torch.cuda.is_available()}"
        )
    if job.resume:
        _prepare_resume(store, job_id, job.kind)
    else:
        store.drop_metrics_after(job_id, -1)
    cancel = threading.Event()
    if job.cancel_requested_at is not None:
        cancel.set()
    reporter = Reporter(store, job_id, cancel)
    heartbeat = Heartbeat(store.root, job_id, cancel)
    heartbeat.start()
    try:
        reporter()  # a cancel that came before the start stops here
        result = run_job(
            job.kind,
            job.config,
            job.seed,
            store.artifacts_dir(job_id),
            reporter,
            checkpoint_dir=store.checkpoint_dir(job_id),
            resume=bool(job.resume),
        )
    except JobCancelled as exc:
        log(str(exc))
        store.finish(job_id, "cancelled", f"cancelled by request ({exc})")
        return 0
    except BaseException as exc:  # any failure: the traceback to the log, the whole message to the store
        traceback.print_exc()
        message = str(exc)
        store.finish(
            job_id,
            "failed",
            f"{type(exc).__name__}: {message}" if message else type(exc).__name__,
            failure="interrupted" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "error",
        )
        return 1
    finally:
        heartbeat.done.set()
        heartbeat.join(timeout=5)
    store.finish(job_id, "succeeded", None, result)
    log(f"job {job_id}: succeeded")
    return 0


def lower_priority(nice: int) -> int:
    """Add ``nice`` to this process's niceness, and set its scheduler autogroup's to the same: where the
    kernel groups processes by session (sched(7), ``/proc/sys/kernel/sched_autogroup_enabled``), a worker
    in a session of its own competes as a whole group at the group's niceness, whatever its own.
    Returns the new niceness."""
    value = os.nice(nice)
    try:
        with open("/proc/self/autogroup", "w") as autogroup:
            autogroup.write(str(value))
    except OSError:  # no autogroups (or not allowed): the process's own niceness still counts within its group
        pass
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m merlion_core.jobs.worker", description="run one job")
    parser.add_argument("job_id", type=int)
    parser.add_argument(
        "--runs", help="runs folder (default: $MERLION_RUNS_DIR, else $MERLION_STUDIO_HOME/runs, else ./runs)"
    )
    parser.add_argument("--claim", action="store_true", help="claim the queued job first (Ray Jobs API entrypoint)")
    parser.add_argument("--nice", type=int, default=0, help="niceness to add to this process first (0-19)")
    args = parser.parse_args(argv)
    if not 0 <= args.nice <= 19:
        parser.error(f"--nice: must be in [0, 19], got {args.nice}")
    if args.nice:
        log(f"job {args.job_id}: niceness {lower_priority(args.nice)}")
    store = JobStore(args.runs)
    try:
        if args.claim and not store.claim(args.job_id, backend="ray"):
            log(f"job {args.job_id} is no longer queued: nothing to do")
            return 0
        return run_worker(store, args.job_id)
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
