"""The interface every backend implements (submit, status, cancel, metrics, wait), and the local one.

A backend runs job specs somewhere and keeps their state in the runs folder's store, so every
reader (CLI, app) sees local and Ray jobs alike. ``LocalBackend`` queues the job in the store
and makes sure a supervisor runs; the supervisor does the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from merlion_core.jobs.spec import JobSpec, validate
from merlion_core.jobs.store import FINAL, JobRecord, JobStore
from merlion_core.jobs.supervisor import ensure_supervisor


class Backend:
    """The one base class of the backends; subclasses implement ``launch`` and ``stop``."""

    name = "base"

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def submit(self, spec: JobSpec, *, sweep: str | None = None, check_inputs: bool = True) -> int:
        spec = validate(spec, check_inputs=check_inputs)
        job_id = self.store.submit(spec.kind, spec.config, spec.seed, backend=self.name, sweep=sweep)
        self.launch(job_id)
        return job_id

    def status(self, job_id: int) -> JobRecord:
        return self.store.get(job_id)

    def metrics(self, job_id: int, name: str | None = None) -> list[dict[str, Any]]:
        return self.store.metrics(job_id, name)

    def cancel(self, job_id: int) -> str:
        outcome = self.store.request_cancel(job_id)
        if outcome == "requested":
            self.stop(job_id)
        return outcome

    def wait(
        self,
        job_ids: Iterable[int],
        *,
        timeout: float | None = None,
        poll: float = 0.5,
        on_update: Callable[[list[JobRecord]], None] | None = None,
    ) -> list[JobRecord]:
        """Block until every job is final (or ``timeout`` seconds); returns their records."""
        ids = list(job_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.poll()
            records = [self.store.get(i) for i in ids]
            if on_update is not None:
                on_update(records)
            if all(r.status in FINAL for r in records) or (deadline is not None and time.monotonic() > deadline):
                return records
            time.sleep(poll)

    # --- implemented by subclasses -------------------------------------------------------------
    def launch(self, job_id: int) -> None:
        """Start (or hand over) a freshly queued job."""
        raise NotImplementedError

    def stop(self, job_id: int) -> None:
        """Make a running job stop (after its cancel request is in the store)."""

    def poll(self) -> None:
        """Bring the store up to date with the backend (called by ``wait``)."""

    def close(self) -> None:
        """Release what the backend holds."""


class LocalBackend(Backend):
    """Jobs on this machine: queued in the store, launched by the supervisor (started on demand)."""

    name = "local"

    def __init__(self, store: JobStore, *, start_supervisor: bool = True, owner_pid: int | None = None) -> None:
        """``owner_pid``: the process the supervisor serves (the app); it interrupts its jobs and exits
        when that process is gone. None: no owner (the CLI's supervisor, which exits when idle)."""
        super().__init__(store)
        self.start_supervisor = start_supervisor
        self.owner_pid = owner_pid

    def launch(self, job_id: int) -> None:
        if self.start_supervisor:
            ensure_supervisor(self.store.root, owner_pid=self.owner_pid)

    def stop(self, job_id: int) -> None:
        if self.start_supervisor:  # it enforces the grace period and kills the process group
            ensure_supervisor(self.store.root, owner_pid=self.owner_pid)
