"""OS-process helpers of the jobs package: liveness by pid and start time, process-group kills,
the environment a worker starts with (thread counts, GPU, import path), GPU counting."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

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
    if not pid:
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
