"""OS-process helpers of the jobs package: liveness by pid and start time, process-group kills,
the environment a worker starts with (thread counts, GPU, import path), GPU counting, and owners
(a background process that serves another one, the app, and ends when that one is gone)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

THREADS_ENV = "MERLION_JOB_THREADS"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (a pid reused by another process has another one)."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def is_alive(pid: int | None, start: str | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, when ``start`` is known, is still the same process."""
    if pid is None or int(pid) <= 0:  # os.kill(0 or -N, 0) would ask about process groups
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True  # no /proc: trust the signal check
    if state in ("Z", "X"):
        return False
    return start is None or process_start(pid) == start


def kill_group(pid: int) -> None:
    """SIGKILL the worker's whole process group (it leads its own session)."""
    if int(pid) <= 1:  # never init, and killpg(0) would be our own group
        return
    try:
        os.killpg(int(pid), signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """GPU ids this process may use: $CUDA_VISIBLE_DEVICES when set, else those nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [part.strip() for part in visible.split(",") if part.strip()]
        return [] if not ids or ids[0].startswith("-") else ids
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def package_root() -> str:
    """The folder holding this merlion_core (children import the same code as their parent)."""
    return str(Path(__file__).resolve().parents[2])


def worker_env(threads: int, gpu: str | None, base: dict[str, str] | None = None) -> dict[str, str]:
    """A worker's environment: ``threads`` for every thread pool, one GPU or none, our import path."""
    env = dict(os.environ if base is None else base)
    env[THREADS_ENV] = str(threads)
    for name in THREAD_VARS:
        env[name] = str(threads)
    env["CUDA_VISIBLE_DEVICES"] = gpu or ""  # a CPU slot sees no GPU, so device auto stays on the CPU
    paths = [package_root()] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ---------------------------------------------------------------------- owners
@dataclass(frozen=True)
class Owner:
    """The process a background process serves (the app that started it): its pid and kernel
    start time, so that a reused pid does not count as the owner still running."""

    pid: int
    start: str | None

    @classmethod
    def of(cls, pid: int | None) -> Owner | None:
        """The owner ``pid`` (None for no owner: None, 0 or less)."""
        if pid is None or int(pid) <= 0:
            return None
        return cls(int(pid), process_start(int(pid)))

    def alive(self) -> bool:
        """Cheap: one ``os.kill(pid, 0)`` and one read of /proc/<pid>/stat."""
        return is_alive(self.pid, self.start)


def owner_path(lock: str | os.PathLike) -> Path:
    """Where the holder of the lock file ``lock`` records its owner: RUNS/supervisor.lock ->
    RUNS/supervisor.owner (the lock itself holds only the holder's pid)."""
    return Path(lock).with_suffix(".owner")


def write_owner(lock: str | os.PathLike, owner: Owner | None) -> None:
    """Record this process (the lock's holder) and its owner (or none) next to ``lock``."""
    record = {
        "pid": os.getpid(),
        "start": process_start(os.getpid()),
        "owner_pid": owner.pid if owner else None,
        "owner_start": owner.start if owner else None,
    }
    path = owner_path(lock)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def remove_owner(lock: str | os.PathLike) -> None:
    """Remove the owner record when it is this process's (call before letting go of the lock)."""
    path = owner_path(lock)
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def read_owner(lock: str | os.PathLike, holder: int | None) -> Owner | None:
    """The owner recorded by ``holder`` (the pid holding ``lock``), or None: no owner, or no
    record of that holder (a record left by an earlier holder does not count)."""
    if holder is None or holder <= 0:
        return None
    try:
        record = json.loads(owner_path(lock).read_text())
        if record.get("pid") != holder or not record.get("owner_pid"):
            return None
        return Owner(int(record["owner_pid"]), record.get("owner_start"))
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return None


def owner_gone(lock: str | os.PathLike, holder: int | None) -> bool:
    """Whether ``holder`` (holding ``lock``) is retiring: it has an owner and that owner is gone."""
    owner = read_owner(lock, holder)
    return owner is not None and not owner.alive()


def take_lock(lock: str | os.PathLike, *, attempts: int = 10, wait_retiring: float = 0.0) -> TextIO | None:
    """flock ``lock`` (exclusive) and write this process's pid in it; returns the open handle
    (keep it: closing it lets go), or None when another process holds it. A few quick attempts
    (readers such as ``lock_holder_pid`` hold it for an instant); while the holder is retiring
    (``owner_gone``), up to ``wait_retiring`` seconds more for it to finish and let go."""
    handle = open(lock, "a+")
    deadline = time.monotonic() + wait_retiring
    attempt = 0
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            attempt += 1
            if attempt >= attempts:
                handle.seek(0)
                text = handle.read().strip()
                holder = int(text) if text.isdigit() else None
                if time.monotonic() >= deadline or not owner_gone(lock, holder):
                    handle.close()
                    return None
            time.sleep(0.05 if attempt < attempts else 0.2)
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
