"""The job store: one SQLite database in WAL mode under a runs folder, and a folder per job.

Every file format of the jobs package lives here::

    RUNS/jobs.sqlite              tables jobs, metrics (job, step, name, value), events
    RUNS/supervisor.lock          flock-ed by the running supervisor (its pid inside)
    RUNS/supervisor.log           the detached supervisor's output
    RUNS/jobs/<id>/job.log        the worker's stdout and stderr
    RUNS/jobs/<id>/artifacts/     what the job writes (dataset, encoder, agent, benchmark)
    RUNS/jobs/<id>/checkpoints/   training checkpoints (resume)

Many processes (supervisor, workers, CLI, app) open the database at once: every write is one
short transaction, WAL lets readers run beside the writer, and ``busy_timeout`` waits out locks.

Where the runs folder is (one rule for the CLI, the app and the workers: :func:`runs_dir`): an
explicit path (``--runs``), else $MERLION_RUNS_DIR, else $MERLION_STUDIO_HOME/runs, else the
caller's default (the CLI: ./runs; the app: runs/ in the repository).

A failed job records why in ``failure``: ``error`` (the job raised an exception: running it again
fails the same way, so it is not resumable), ``killed`` (its process was killed or vanished) or
``interrupted`` (stopped from outside, e.g. Ctrl-C). Only killed, interrupted and cancelled jobs
can be resumed (:func:`resumable`).
"""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL = frozenset({"succeeded", "failed", "cancelled"})
DEFAULT_RUNS = "runs"
RUNS_ENV = "MERLION_RUNS_DIR"
HOME_ENV = "MERLION_STUDIO_HOME"
"""Folder holding data/ and runs/ (the app's home): runs go to $MERLION_STUDIO_HOME/runs."""
FAILURES = ("error", "killed", "interrupted")
"""Why a failed job failed: an exception raised by the job; its process killed or gone; stopped from outside."""
RESUMABLE_FAILURES = frozenset({"killed", "interrupted"})
MAX_SPEC_BYTES = 1024**2

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    config TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,
    backend TEXT NOT NULL DEFAULT 'local',
    sweep TEXT,
    created_at REAL NOT NULL,
    launched_at REAL,
    started_at REAL,
    finished_at REAL,
    heartbeat REAL,
    pid INTEGER,
    pid_start TEXT,
    gpu TEXT,
    exit_reason TEXT,
    cancel_requested_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    resume INTEGER NOT NULL DEFAULT 0,
    step INTEGER,
    total INTEGER,
    result TEXT,
    external_id TEXT,
    failure TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, backend);
CREATE TABLE IF NOT EXISTS metrics (
    job_id INTEGER NOT NULL,
    step INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_job ON metrics(job_id, step);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    job_id INTEGER,
    event TEXT NOT NULL,
    running INTEGER,
    detail TEXT
);
"""


class JobNotFound(LookupError):
    """No job with that id in this runs folder."""


class JobStateError(ValueError):
    """The job is not in a state that allows the request (one-line message)."""


class NoJobStore(LookupError):
    """The runs folder holds no jobs database (nothing was ever submitted there)."""


def runs_dir(path: str | os.PathLike | None = None, *, default: str | os.PathLike = DEFAULT_RUNS) -> Path:
    """The runs folder (absolute), one rule for the CLI and the app: ``path`` (``--runs``), else
    $MERLION_RUNS_DIR, else $MERLION_STUDIO_HOME/runs, else ``default`` (relative: to the current
    folder; the CLI's is ./runs, the app passes runs/ under its home)."""
    home = os.environ.get(HOME_ENV)
    chosen = path or os.environ.get(RUNS_ENV) or (Path(home).expanduser() / "runs" if home else default)
    return Path(chosen).expanduser().resolve()


def failure_of(reason: str | None) -> str:
    """The failure kind a reason without one reads as (stores written before the ``failure`` column,
    writers that do not say): "ExceptionName: message" is an error raised by the job; anything else
    (the supervisor's "worker killed by signal 9 (SIGKILL)", "no heartbeat for ...", "worker process
    gone ...") is a killed process."""
    text = reason or ""
    head = text.split(":", 1)[0]
    name = head.replace(".", "").replace("_", "").isalnum()
    return "error" if name and (":" in text or head.endswith(("Error", "Exception"))) else "killed"


def read_spec_file(path: str | os.PathLike, what: str) -> Any:
    """A YAML or JSON document (a job config, a sweep spec), size-capped, never executing tags."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{what}: {file}: no such file")
    if file.stat().st_size > MAX_SPEC_BYTES:
        raise ValueError(f"{what}: {file}: larger than {MAX_SPEC_BYTES // 1024} KiB")
    text = file.read_text()
    try:
        return json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(
            f"{what}: {file}: not valid {'JSON' if file.suffix == '.json' else 'YAML'} ({str(exc).splitlines()[0]})"
        ) from None


@dataclass
class JobRecord:
    """One row of the jobs table (``config`` and ``result`` decoded)."""

    id: int
    kind: str
    config: dict[str, Any]
    seed: int
    status: str
    backend: str
    sweep: str | None
    created_at: float
    launched_at: float | None
    started_at: float | None
    finished_at: float | None
    heartbeat: float | None
    pid: int | None
    pid_start: str | None
    gpu: str | None
    exit_reason: str | None
    cancel_requested_at: float | None
    attempts: int
    resume: int
    step: int | None
    total: int | None
    result: dict[str, Any] | None
    external_id: str | None
    failure: str | None = None
    """For a failed job: error (raised by the job: not resumable), killed or interrupted."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resumable(job: JobRecord) -> bool:
    """Whether ``merlion jobs resume`` may queue the job again: cancelled, killed or interrupted
    jobs; not a job that failed with its own error (it would fail the same way) nor an unfinished one."""
    return job.status == "cancelled" or (job.status == "failed" and job.failure in RESUMABLE_FAILURES)


def resume_refusal(job: JobRecord) -> str | None:
    """Why the job cannot be resumed (one line), or None when it can."""
    if resumable(job):
        return None
    if job.status == "failed":
        error = ((job.exit_reason or "").split(":", 1)[0].splitlines() or ["an error"])[0][:80]
        return (
            f"job {job.id}: failed with its own error ({error}), not interrupted: a resume would fail the same "
            f"way; fix the cause and submit it again (merlion jobs show {job.id} for the whole message)"
        )
    return (
        f"job {job.id}: is {job.status}; only failed or cancelled jobs can be resumed "
        "(failed: killed or interrupted, not by the job's own error)"
    )


class JobStore:
    """The jobs database of one runs folder; open one per process (or thread).

    ``create=False`` (read-only commands, cancel, resume): raise :class:`NoJobStore` when the
    folder holds no database, and create nothing on disk."""

    def __init__(self, root: str | os.PathLike | None = None, *, create: bool = True) -> None:
        self.root = runs_dir(root)
        self.path = self.root / "jobs.sqlite"
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
            target = str(self.path)
        elif not self.path.is_file():
            raise NoJobStore(f"no jobs in {self.root} (no jobs.sqlite there)")
        else:  # mode=rw: never creates the file, even when it is removed meanwhile
            target = f"{self.path.resolve().as_uri()}?mode=rw"
        try:
            self.db = sqlite3.connect(
                target, timeout=60.0, isolation_level=None, check_same_thread=False, uri=not create
            )
        except sqlite3.OperationalError:
            raise NoJobStore(f"no jobs in {self.root} (jobs.sqlite cannot be opened)") from None
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA busy_timeout = 60000")
        if create:
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.executescript(SCHEMA)
        elif self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'").fetchone() is None:
            self.db.close()
            raise NoJobStore(f"no jobs in {self.root} (jobs.sqlite holds no jobs table)")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self._migrate()

    def _migrate(self) -> None:
        """Bring a store of an older version up to date: the ``failure`` column, filled in for old
        failed jobs from their reason. A store that cannot be written (read-only files) is read as
        it is: records then infer ``failure`` from the reason."""
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(jobs)")}
        if "failure" in columns:
            return
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                if "failure" not in {row[1] for row in self.db.execute("PRAGMA table_info(jobs)")}:
                    self.db.execute("ALTER TABLE jobs ADD COLUMN failure TEXT")
                    failed = self.db.execute("SELECT id, exit_reason FROM jobs WHERE status = 'failed'").fetchall()
                    self.db.executemany(
                        "UPDATE jobs SET failure = ? WHERE id = ?", [(failure_of(r[1]), r[0]) for r in failed]
                    )
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError:  # read-only: leave it to _record
            pass

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ layout
    def job_dir(self, job_id: int) -> Path:
        return self.root / "jobs" / str(int(job_id))

    def log_path(self, job_id: int) -> Path:
        return self.job_dir(job_id) / "job.log"

    def artifacts_dir(self, job_id: int) -> Path:
        return self.job_dir(job_id) / "artifacts"

    def checkpoint_dir(self, job_id: int) -> Path:
        return self.job_dir(job_id) / "checkpoints"

    @property
    def lock_path(self) -> Path:
        return self.root / "supervisor.lock"

    @property
    def supervisor_log(self) -> Path:
        return self.root / "supervisor.log"

    # ------------------------------------------------------------------ jobs
    def submit(
        self, kind: str, config: dict[str, Any], seed: int, *, backend: str = "local", sweep: str | None = None
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO jobs (kind, config, seed, status, backend, sweep, created_at) "
            "VALUES (?, ?, ?, 'queued', ?, ?, ?)",
            (kind, json.dumps(config, sort_keys=True), int(seed), backend, sweep, time.time()),
        )
        if cur.lastrowid is None:
            raise RuntimeError("job store: INSERT into jobs returned no row id")
        job_id = int(cur.lastrowid)
        self.job_dir(job_id).mkdir(parents=True, exist_ok=True)
        self.event(job_id, "submit")
        return job_id

    def get(self, job_id: int) -> JobRecord:
        row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (int(job_id),)).fetchone()
        if row is None:
            raise JobNotFound(f"job {job_id}: no such job in {self.root}")
        return _record(row)

    def list(
        self, status: str | Iterable[str] | None = None, *, backend: str | None = None, sweep: str | None = None
    ) -> list[JobRecord]:
        query, args = "SELECT * FROM jobs WHERE 1=1", []
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            query += f" AND status IN ({','.join('?' * len(statuses))})"
            args += statuses
        if backend is not None:
            query += " AND backend = ?"
            args.append(backend)
        if sweep is not None:
            query += " AND sweep = ?"
            args.append(sweep)
        return [_record(row) for row in self.db.execute(query + " ORDER BY id", args)]

    def _update(self, job_id: int, where: str, **values: Any) -> bool:
        sets = ", ".join(f"{key} = ?" for key in values)
        cur = self.db.execute(f"UPDATE jobs SET {sets} WHERE id = ? AND ({where})", (*values.values(), int(job_id)))
        return cur.rowcount == 1

    def claim(self, job_id: int, backend: str = "local") -> bool:
        """queued -> running (by whoever launches it); False when someone else got there first."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            ok = self._update(
                job_id,
                "status = 'queued'",
                status="running",
                launched_at=time.time(),
                backend=backend,
                pid=None,
                pid_start=None,
                started_at=None,
                heartbeat=None,
                exit_reason=None,
                attempts=self.get(job_id).attempts + 1,
            )
        finally:
            self.db.execute("COMMIT")
        return ok

    def set_process(self, job_id: int, pid: int, pid_start: str | None, gpu: str | None = None) -> None:
        self._update(job_id, "status = 'running'", pid=int(pid), pid_start=pid_start, gpu=gpu)

    def set_external_id(self, job_id: int, external_id: str) -> None:
        self._update(job_id, "1", external_id=external_id)

    def mark_started(self, job_id: int, pid: int, pid_start: str | None) -> None:
        now = time.time()
        self._update(job_id, "status = 'running'", pid=int(pid), pid_start=pid_start, started_at=now, heartbeat=now)

    def beat(self, job_id: int, step: int | None = None, total: int | None = None) -> None:
        values: dict[str, Any] = {"heartbeat": time.time()}
        if step is not None:
            values["step"] = int(step)
        if total is not None:
            values["total"] = int(total)
        self._update(job_id, "status = 'running'", **values)

    def finish(
        self,
        job_id: int,
        status: str,
        reason: str | None = None,
        result: dict[str, Any] | None = None,
        *,
        failure: str | None = None,
    ) -> bool:
        """running -> a final status; False (nothing changed) when the job was no longer running.

        ``failure`` (status failed): error, killed or interrupted; when not given, read from the
        reason (:func:`failure_of`: "ExceptionName: ..." is an error, anything else a killed process)."""
        if status not in FINAL:
            raise ValueError(f"status: {status!r} is not final")
        if failure is not None and failure not in FAILURES:
            raise ValueError(f"failure: {failure!r} is not one of {', '.join(FAILURES)}")
        ok = self._update(
            job_id,
            "status = 'running'",
            status=status,
            exit_reason=reason,
            finished_at=time.time(),
            result=None if result is None else json.dumps(result, sort_keys=True, default=str),
            failure=(failure or failure_of(reason)) if status == "failed" else None,
        )
        if ok:
            self.event(job_id, status, detail=reason)
        return ok

    def request_cancel(self, job_id: int) -> str:
        """A queued job is cancelled now ('cancelled'); a running one is asked to stop ('requested')."""
        now = time.time()
        if self._update(
            job_id, "status = 'queued'", status="cancelled", finished_at=now, exit_reason="cancelled before it started"
        ):
            self.event(job_id, "cancelled", detail="queued")
            return "cancelled"
        if self._update(job_id, "status = 'running' AND cancel_requested_at IS NULL", cancel_requested_at=now):
            self.event(job_id, "cancel-requested")
            return "requested"
        job = self.get(job_id)
        if job.status == "running":
            return "requested"
        raise JobStateError(f"job {job_id}: already {job.status}")

    def cancel_requested(self, job_id: int) -> bool:
        row = self.db.execute("SELECT cancel_requested_at FROM jobs WHERE id = ?", (int(job_id),)).fetchone()
        return row is not None and row[0] is not None

    def requeue(self, job_id: int, *, resume: bool) -> None:
        """A failed or cancelled job goes back to the queue (``resume``: from its latest checkpoint;
        only a :func:`resumable` job: killed, interrupted or cancelled, not one that raised its own error)."""
        job = self.get(job_id)
        if job.status not in ("failed", "cancelled"):
            raise JobStateError(
                f"job {job_id}: is {job.status}; only failed or cancelled jobs can be resumed "
                "(failed: killed or interrupted, not by the job's own error)"
            )
        refusal = resume_refusal(job) if resume else None
        if refusal is not None:
            raise JobStateError(refusal)
        self._update(
            job_id,
            "status IN ('failed', 'cancelled')",
            status="queued",
            resume=int(resume),
            cancel_requested_at=None,
            exit_reason=None,
            finished_at=None,
            result=None,
            failure=None,
        )
        self.event(job_id, "requeue", detail="resume" if resume else "restart")

    # ------------------------------------------------------------------ metrics and events
    def add_metrics(self, job_id: int, step: int, values: dict[str, Any]) -> None:
        now = time.time()
        rows = [
            (int(job_id), int(step), str(name), float(value), now)
            for name, value in values.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        ]
        if rows:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("INSERT INTO metrics (job_id, step, name, value, time) VALUES (?, ?, ?, ?, ?)", rows)
            self.db.execute("COMMIT")

    def drop_metrics_after(self, job_id: int, step: int) -> int:
        """Remove metric rows past ``step`` (a resumed job recomputes them); returns how many."""
        return self.db.execute("DELETE FROM metrics WHERE job_id = ? AND step > ?", (int(job_id), int(step))).rowcount

    def metrics(self, job_id: int, name: str | None = None) -> builtins.list[dict[str, Any]]:
        query = "SELECT step, name, value, time FROM metrics WHERE job_id = ?"
        args: list[Any] = [int(job_id)]
        if name is not None:
            query += " AND name = ?"
            args.append(name)
        return [dict(row) for row in self.db.execute(query + " ORDER BY rowid", args)]

    def event(self, job_id: int | None, event: str, running: int | None = None, detail: str | None = None) -> None:
        self.db.execute(
            "INSERT INTO events (time, job_id, event, running, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time(), job_id, event, running, detail),
        )

    def events(self, event: str | None = None) -> builtins.list[dict[str, Any]]:
        query, args = "SELECT * FROM events", []
        if event is not None:
            query, args = query + " WHERE event = ?", [event]
        return [dict(row) for row in self.db.execute(query + " ORDER BY id", args)]


def _record(row: sqlite3.Row) -> JobRecord:
    data = dict(row)
    data["config"] = json.loads(data["config"])
    data["result"] = json.loads(data["result"]) if data["result"] else None
    if data["status"] == "failed" and not data.get("failure"):  # a store that could not be migrated
        data["failure"] = failure_of(data["exit_reason"])
    return JobRecord(**data)


def read_log(path: Path, max_bytes: int = 1024**2) -> str:
    """The last ``max_bytes`` of a job's log ('' before it has one)."""
    if not path.is_file():
        return ""
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - max_bytes))
        return handle.read().decode("utf-8", errors="replace")
