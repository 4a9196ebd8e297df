"""The supervisor: launches queued local jobs as worker processes with bounded concurrency.

One per runs folder (it holds an flock on RUNS/supervisor.lock). Each tick it reaps finished
workers (a worker that died without reporting is marked failed with the reason: the signal
or exit code), kills the process group of a job whose cancel request went unanswered for
``cancel_grace`` seconds or whose heartbeat is older than ``stale_after``, then launches queued
jobs into free slots. Workers run in their own sessions, so they outlive the supervisor; a
restarted supervisor adopts the ones still alive (same pid and start time) and marks the others
failed. ``ensure_supervisor`` starts a detached one on demand (CLI, app).

A supervisor may have an owner (``owner_pid``: the app passes its own pid; the CLI's supervisors
have none). It records it in RUNS/supervisor.owner and looks at it every tick; once the owner is
gone it retires: it launches no more queued jobs (they stay queued for the next supervisor),
interrupts the jobs it runs (a cancel request: they stop between steps and end ``cancelled``,
resumable from their latest checkpoint; a worker that has not stopped after ``cancel_grace`` is
killed), waits for their workers to exit, and exits, letting go of its lock.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from merlion_core.config import from_json, to_json
from merlion_core.jobs.processes import (
    Owner,
    cpu_count,
    is_alive,
    kill_group,
    owner_gone,
    package_root,
    process_start,
    read_owner,
    remove_owner,
    take_lock,
    visible_gpus,
    worker_env,
    write_owner,
)
from merlion_core.jobs.spec import wants_gpu
from merlion_core.jobs.store import JobRecord, JobStateError, JobStore, runs_dir

START_GRACE = 30.0
"""Seconds a launched worker has to record its pid before it counts as lost."""
RETIRE_WAIT = 120.0
"""Seconds a new supervisor waits for a retiring one (its owner gone) to let go of the lock."""


@dataclass(frozen=True)
class SupervisorConfig:
    """Settings of the job supervisor."""

    slots: int = 0
    """Jobs running at once (0: one per CPU core)."""
    gpus: int = -1
    """GPUs to hand out, one job each (-1: those CUDA_VISIBLE_DEVICES or nvidia-smi shows)."""
    threads: int = 0
    """Threads per job for torch and OpenMP (0: the cores divided by the slots, at least 1)."""
    poll: float = 0.2
    """Seconds between two looks at the store."""
    cancel_grace: float = 10.0
    """Seconds a cancelled job has to stop by itself before its process group is killed."""
    stale_after: float = 120.0
    """Seconds without a heartbeat after which a live worker counts as hung and is killed."""
    idle_exit: float = 0.0
    """Exit after this many seconds with nothing queued or running (0: never)."""
    owner_pid: int = 0
    """Pid of the process served (the app; 0: none): once it is gone, interrupt the jobs and exit."""
    nice: int = 10
    """Niceness added to each job worker (0-19; 0: the supervisor's priority): pages stay quick while jobs train."""

    def __post_init__(self) -> None:
        if not 0 <= self.nice <= 19:
            raise ValueError(f"SupervisorConfig.nice: must be in [0, 19], got {self.nice}")


class SupervisorRunning(RuntimeError):
    """Another supervisor holds this runs folder."""


@dataclass
class Worker:
    pid: int
    start: str | None
    gpu: str | None
    process: subprocess.Popen | None  # None: adopted from a previous supervisor


class Supervisor:
    def __init__(self, root: str | os.PathLike | None = None, config: SupervisorConfig = SupervisorConfig()) -> None:
        self.store = JobStore(root)
        self.config = config
        self.slots = config.slots or cpu_count()
        self.threads = config.threads or max(1, cpu_count() // self.slots)
        gpus = visible_gpus()
        self.gpus = gpus if config.gpus < 0 else (gpus + [str(i) for i in range(len(gpus), config.gpus)])[: config.gpus]
        self.workers: dict[int, Worker] = {}
        self.lock_handle: TextIO | None = None
        self.idle_since = time.monotonic()
        self.stopping = False
        self.owner = Owner.of(config.owner_pid)
        self.retiring = False

    # ------------------------------------------------------------------ lifecycle
    def acquire(self) -> None:
        # supervisor_pid() holds the lock for an instant when it looks; a retiring holder (its
        # owner gone) lets go once its jobs are stopped
        handle = take_lock(self.store.lock_path, wait_retiring=RETIRE_WAIT)
        if handle is None:
            holder = self.store.lock_path.read_text().strip() or "?"
            raise SupervisorRunning(f"a supervisor (pid {holder}) already runs for {self.store.root}")
        self.lock_handle = handle
        write_owner(self.store.lock_path, self.owner)

    def release(self) -> None:
        """Let go of the lock (and the owner record next to it)."""
        if self.lock_handle is not None:
            remove_owner(self.store.lock_path)
            self.lock_handle.close()
            self.lock_handle = None

    def run(self) -> None:
        self.acquire()
        try:
            self.serve()
        finally:
            self.release()

    def serve(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        self.log(
            f"supervisor pid {os.getpid()}: {self.slots} slots, {self.threads} threads per job, "
            f"GPUs {self.gpus or 'none'}, runs {self.store.root}"
            + (f", owner pid {self.owner.pid}" if self.owner else "")
        )
        if self.owner is not None and not self.owner.alive():  # gone before we started: touch nothing
            self.log(f"owner pid {self.owner.pid} is already gone: exiting")
            return
        self.adopt()
        while not self.stopping:
            if self.owner is not None and not self.retiring and not self.owner.alive():
                self.retire()
            self.tick()
            if self.retiring and not self.workers:
                self.log(f"owner pid {self.owner.pid if self.owner else '?'} gone and no job running: exiting")
                return
            if self.config.idle_exit and time.monotonic() - self.idle_since > self.config.idle_exit:
                self.log(f"idle for {self.config.idle_exit:g} s: exiting")
                break
            time.sleep(self.config.poll)
        self.log("supervisor stopped (workers keep running; the next supervisor adopts them)")

    def retire(self) -> None:
        """The owner is gone: take no new jobs and ask every running one to stop (a cancel
        request; ``enforce`` kills a worker that has not stopped after ``cancel_grace``)."""
        self.retiring = True
        owner = self.owner.pid if self.owner else "?"
        self.log(f"owner pid {owner} is gone: no new jobs; interrupting {len(self.workers)} running job(s)")
        for job_id in list(self.workers):
            try:
                self.store.request_cancel(job_id)
            except JobStateError:
                continue  # it ended meanwhile
            detail = f"owner pid {owner} gone: cancel requested (resume it to continue from its latest checkpoint)"
            self.store.event(job_id, "interrupt", running=len(self.workers), detail=detail)
            try:
                with open(self.store.log_path(job_id), "a") as log:
                    log.write(f"[{time.strftime('%H:%M:%S')}] supervisor: {detail}\n")
            except OSError:
                pass

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    # ------------------------------------------------------------------ one look at the store
    def adopt(self) -> None:
        """Take over the running local jobs of a previous supervisor (or mark them lost)."""
        for job in self.store.list("running", backend="local"):
            if job.pid and is_alive(job.pid, job.pid_start):
                self.workers[job.id] = Worker(job.pid, job.pid_start, job.gpu, None)
                self.store.event(job.id, "adopt", running=len(self.workers), detail=f"pid {job.pid}")
                self.log(f"job {job.id}: adopted worker pid {job.pid}")
            elif job.pid is None and time.time() - (job.launched_at or 0) < START_GRACE:
                self.workers[job.id] = Worker(0, None, job.gpu, None)  # launched just before a restart
            else:
                self.lost(job, "worker process gone (found dead when the supervisor started)")

    def tick(self) -> None:
        self.reap()
        self.enforce()
        if not self.retiring:
            self.launch()
        if self.workers or self.store.list("queued", backend="local"):
            self.idle_since = time.monotonic()

    def reap(self) -> None:
        for job_id, worker in list(self.workers.items()):
            if worker.process is not None:
                code = worker.process.poll()
                if code is None:
                    continue
                reason = (
                    f"worker killed by signal {-code} ({signal.Signals(-code).name})"
                    if code < 0
                    else f"worker exited with status {code} without reporting"
                )
            elif worker.pid == 0:  # adopted before it recorded its pid
                job = self.store.get(job_id)
                if job.pid:
                    worker.pid, worker.start = job.pid, job.pid_start
                    continue
                if time.time() - (job.launched_at or 0) < START_GRACE:
                    continue
                reason = "worker never started"
            elif is_alive(worker.pid, worker.start):
                continue
            else:
                reason = "worker process gone without reporting (exit status unknown: adopted worker)"
            self.gone(job_id, reason)

    def gone(self, job_id: int, reason: str) -> None:
        del self.workers[job_id]
        job = self.store.get(job_id)
        if job.status == "running":  # the worker did not write its own final status
            self.lost(job, reason)
        self.store.event(
            job_id, "exit", running=len(self.workers), detail=job.status if job.status != "running" else reason
        )

    def lost(self, job: JobRecord, reason: str) -> None:
        status = "cancelled" if job.cancel_requested_at is not None else "failed"
        if self.store.finish(job.id, status, reason, failure="killed" if status == "failed" else None):
            self.log(f"job {job.id}: {status}: {reason}")

    def enforce(self) -> None:
        """Kill workers that ignore a cancel request or stopped beating; fail Ray jobs that went silent."""
        now = time.time()
        for job in self.store.list("running", backend="ray"):
            if now - (job.heartbeat or job.launched_at or now) > self.config.stale_after:
                self.store.finish(
                    job.id,
                    "failed",
                    f"no heartbeat for {self.config.stale_after:g} s "
                    "(its Ray task, or the driver that ran it, is gone)",
                    failure="killed",
                )
        for job in self.store.list("running", backend="local"):
            worker = self.workers.get(job.id)
            if worker is None or not worker.pid:
                continue
            if job.cancel_requested_at is not None and now - job.cancel_requested_at > self.config.cancel_grace:
                kill_group(worker.pid)
                self.store.finish(
                    job.id,
                    "cancelled",
                    f"cancelled: the worker did not stop within "
                    f"{self.config.cancel_grace:g} s, its process group was killed",
                )
            elif job.heartbeat is not None and now - job.heartbeat > self.config.stale_after:
                kill_group(worker.pid)
                self.store.finish(
                    job.id,
                    "failed",
                    f"no heartbeat for {now - job.heartbeat:.0f} s: worker hung, its process group was killed",
                    failure="killed",
                )

    def launch(self) -> None:
        for job in self.store.list("queued", backend="local"):
            if len(self.workers) >= self.slots:
                return
            gpu = None
            if self.gpus and wants_gpu(job.kind, job.config):
                busy = {w.gpu for w in self.workers.values()}
                free = [g for g in self.gpus if g not in busy]
                if not free:
                    continue  # waits for a GPU; CPU-only jobs behind it may still start
                gpu = free[0]
            if not self.store.claim(job.id):
                continue
            self.start_worker(job.id, gpu)

    def start_worker(self, job_id: int, gpu: str | None) -> None:
        log_path = self.store.log_path(job_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                [
                    *[sys.executable, "-m", "merlion_core.jobs.worker", str(job_id), "--runs", str(self.store.root)],
                    *(["--nice", str(self.config.nice)] if self.config.nice else []),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=worker_env(self.threads, gpu),
                cwd=str(self.store.root),
            )
        self.workers[job_id] = Worker(process.pid, process_start(process.pid), gpu, process)
        self.store.set_process(job_id, process.pid, self.workers[job_id].start, gpu)
        self.store.event(job_id, "launch", running=len(self.workers), detail=f"pid {process.pid}")
        self.log(
            f"job {job_id}: launched pid {process.pid} ({len(self.workers)}/{self.slots} slots"
            + (f", GPU {gpu}" if gpu else "")
            + ")"
        )


def supervisor_pid(root: str | os.PathLike | None = None) -> int | None:
    """The pid of the supervisor holding this runs folder, or None when none runs."""
    return lock_holder_pid(runs_dir(root) / "supervisor.lock")


def lock_holder_pid(path: str | os.PathLike) -> int | None:
    """The pid written in the lock file ``path`` while a live process holds its flock (-1 when
    held but unreadable), else None."""
    path = Path(path)
    if not path.exists():
        return None
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            text = handle.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def supervisor_owner(root: str | os.PathLike | None = None) -> int | None:
    """The owner pid the running supervisor of this runs folder serves (None: none runs, or it has
    no owner)."""
    folder = runs_dir(root)
    owner = read_owner(folder / "supervisor.lock", supervisor_pid(folder))
    return owner.pid if owner else None


def ensure_supervisor(
    root: str | os.PathLike | None = None,
    config: SupervisorConfig = SupervisorConfig(idle_exit=600.0),
    *,
    owner_pid: int | None = None,
) -> int:
    """The running supervisor's pid, or the pid of a detached one started now (its own session,
    output to RUNS/supervisor.log; by default it exits after 10 idle minutes).

    ``owner_pid``: the process a supervisor started now serves (the app passes ``os.getpid()``):
    when it is gone the supervisor interrupts its jobs and exits. None (the default) keeps
    ``config.owner_pid``, 0 unless set: no owner, as for the CLI. A running supervisor is used
    whatever its owner, unless it is retiring (its owner gone): then a new one is started, which
    takes over the runs folder once the retiring one has let go of it."""
    folder = runs_dir(root)
    pid = supervisor_pid(folder)
    if pid is not None and not owner_gone(folder / "supervisor.lock", pid):
        return pid
    if owner_pid is not None:
        if owner_pid < 0:
            raise ValueError(f"owner_pid: must be a pid (> 0) or 0 for none, got {owner_pid}")
        config = replace(config, owner_pid=int(owner_pid))
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        dict.fromkeys([package_root(), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    )
    with open(folder / "supervisor.log", "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "merlion_core.jobs.supervisor", "--runs", str(folder), "--config", to_json(config)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=str(folder),
        )
    return process.pid


def main(argv: list[str] | None = None) -> int:
    """``python -m merlion_core.jobs.supervisor --runs DIR --config JSON`` (``merlion supervisor`` is the
    command for people; this entry stays light: no torch import)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m merlion_core.jobs.supervisor")
    parser.add_argument("--runs", help="runs folder (default: $MERLION_RUNS_DIR or ./runs)")
    parser.add_argument("--config", default="{}", help="SupervisorConfig as a JSON object")
    args = parser.parse_args(argv)
    try:
        Supervisor(args.runs, from_json(SupervisorConfig, args.config)).run()
    except SupervisorRunning as exc:
        print(f"supervisor: {exc}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
