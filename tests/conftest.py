"""Shared fixtures of the tests: the app tests' studio home, and a session-wide check that the
suite leaves no background process of ours behind (the core's other tests need nothing else)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

BACKGROUND_MODULES = ("merlion_core.jobs.supervisor", "merlion_core.jobs.worker", "studio.warmstart_worker")
"""What a job supervisor, a job worker and the warm-start worker run as (``python -m MODULE``)."""
SESSION_ENV = "MERLION_TEST_SESSION"
"""Set for the session: every process it starts inherits it, so its own are told from others'."""
LEFTOVER_GRACE = 5.0
"""Seconds processes that are ending by themselves (an owned supervisor whose owner just ended)
get before they count as left behind."""


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, kernel start time) of ``pid``, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[19]


def _background_processes() -> dict[int, tuple[str, str]]:
    """{pid: (start time, module)} of every running process started as ``python -m`` one of
    BACKGROUND_MODULES (zombies have no command line and are not listed)."""
    found: dict[int, tuple[str, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        modules = [m for m in BACKGROUND_MODULES if m.encode() in argv]
        stat = _stat(int(entry.name)) if modules else None
        if stat is not None:
            found[int(entry.name)] = (stat[1], modules[0])
    return found


def _started_by_this_session(pid: int, token: str) -> bool:
    """A descendant of this pytest process, or a process that inherited this session's marker
    (a worker whose supervisor ended has been re-parented: its environment still says whose it is)."""
    try:
        if f"{SESSION_ENV}={token}".encode() in (Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")):
            return True
    except OSError:
        pass
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        if pid == os.getpid():
            return True
        stat = _stat(pid)
        if stat is None:
            return False
        pid = stat[0]
    return False


def leftover_processes(before: dict[int, tuple[str, str]], token: str) -> dict[int, tuple[str, str]]:
    """Supervisors, job workers and warm-start workers this session started that still run."""
    return {
        pid: info
        for pid, info in _background_processes().items()
        if before.get(pid, (None,))[0] != info[0] and _started_by_this_session(pid, token)
    }


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind():
    """Fail the session when a test left a job supervisor, a job worker or a warm-start worker
    running (after LEFTOVER_GRACE); those are killed first, so the next run starts clean. Only
    processes this session started count (another test run on the machine is left alone)."""
    token = f"{os.getpid()}-{time.time_ns()}"
    previous = os.environ.get(SESSION_ENV)
    os.environ[SESSION_ENV] = token
    before = _background_processes()
    yield
    deadline = time.monotonic() + LEFTOVER_GRACE
    left = leftover_processes(before, token)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = leftover_processes(before, token)
    for pid, (start, _) in left.items():
        if pid > 1 and pid != os.getpid() and (_stat(pid) or (0, None))[1] == start:  # never -1/0/1, never reused
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    if previous is None:
        os.environ.pop(SESSION_ENV, None)
    else:
        os.environ[SESSION_ENV] = previous
    if left:
        listed = ", ".join(f"pid {pid} ({module})" for pid, (_, module) in sorted(left.items()))
        pytest.fail(f"the tests left {len(left)} background process(es) running (now killed): {listed}", pytrace=False)


@pytest.fixture(scope="session")
def studio_home(tmp_path_factory):
    """A real studio home (dataset, two encoders, an agent, succeeded jobs), built once."""
    from studio_fixture import build_home

    return build_home(tmp_path_factory.mktemp("studio-home"))


@pytest.fixture()
def studio_env(studio_home, monkeypatch):
    """Point the app at the fixture home; no demo, no supervisor, warm-start worker or chain
    advancer thread started (a thread would outlive the test and its home)."""
    from studio_fixture import quiet_app

    quiet_app(monkeypatch, studio_home["home"])
    return studio_home
