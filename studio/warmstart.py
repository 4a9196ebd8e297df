"""Warm-start jobs for the p / tau sliders: the runner's ``warm-start`` kind, run by a resident worker.

``warm-start`` is a kind of the jobs runner (merlion_core.jobs.spec.WarmStartJob, entry point
merlion_core.jobs.runner.run_warm_start). For latency the app records its slider jobs with
backend ``studio`` (the runner's supervisor leaves that backend alone) and runs them in ONE
resident worker process (``python -m studio.warmstart_worker``) that keeps torch, the encoder and
the dataset loaded and calls the same ``run_warm_start`` with the same config: a slider move
becomes a job, the worker claims the newest one (older ones are superseded), re-trains phi with
the new p and tau (models frozen) and writes each frame's embeddings as it goes. Jobs, metrics,
heartbeats, cancel requests and statuses are the store's, so the Runs page and ``merlion jobs
list`` show them.

The worker belongs to the app process that started it (its owner, recorded in
STUDIO/warmstart.owner next to the lock): once that process is gone the worker takes no new job,
interrupts the one it runs (cancelled between frames) and exits.

Frame files: RUNS/jobs/<id>/artifacts/frames/step-<N>.npy, f32[A, D] at the requested state
(merlion_core.representation.artifacts.write_frame / latest_frame).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from merlion_core.config import to_dict
from merlion_core.jobs.spec import JobSpec, WarmStartJob, validate
from merlion_core.representation import artifacts
from merlion_core.representation.artifacts import write_frame
from studio import jobs_client, settings

__all__ = ["WarmStartJob", "write_frame", "latest_frame", "submit", "follow", "ensure_worker"]

KIND = "warm-start"
BACKEND = "studio"
TAG = "studio:warm-start"


def slider_job(
    encoder: str, dataset: str | None, p: float, tau: float, steps: int, state: tuple[float, ...]
) -> WarmStartJob:
    """The config of a slider move: frames only (the warm-started encoder is not saved)."""
    return WarmStartJob(encoder=encoder, dataset=dataset, p=p, tau=tau, steps=steps, state=state, save_encoder=False)


def frames_dir(job_id: int) -> Path:
    with jobs_client.open_store() as store:
        return store.artifacts_dir(job_id) / "frames"


def latest_frame(job_id: int) -> tuple[int, np.ndarray] | None:
    """(step, f32[A, D]) of the newest frame of a warm-start job, or None before the first."""
    return artifacts.latest_frame(frames_dir(job_id))


FRAME_POLL = 0.1
"""Seconds between two looks at a running job's frames."""
FIRST_DRAW_WAIT = 0.5
"""Seconds before the first redraw: a job that finishes within them (the maze's 60 steps take
0.3-0.5 s) is drawn once, at its last frame; a longer one shows its newest frame then."""
REDRAW_SECONDS = 0.5
"""Least time between two chart redraws: Streamlit remounts a Plotly chart whenever its figure
changes, and a remount of thousands of WebGL points takes a browser 0.5-0.9 s (measured on this
machine's headless chromium): a redraw queued behind another only delays the newest frame."""
FOLLOW_SECONDS = 60.0


def frame_and_caption(job_id: int, base: np.ndarray) -> tuple[int | None, np.ndarray, str, bool]:
    """(frame step or None, the embeddings to show, a caption, whether the job is final)."""
    job = jobs_client.get(job_id)
    frame = latest_frame(job_id)
    final = not jobs_client.is_active(job)
    if frame is None:
        return None, base, f"warm start job #{job.id}: {job.status}", final
    return (
        frame[0],
        frame[1],
        (
            f"warm start job #{job.id} (p = {job.config['p']}, tau = {job.config['tau']}): "
            f"step {frame[0]}/{job.config['steps']}, {job.status}"
        ),
        final,
    )


def follow(
    job_id: int, base: np.ndarray, draw: Callable[[np.ndarray, str], None], caption: Callable[[str], object]
) -> None:
    """Stream a warm-start job's frames into a chart while a worker runs it: ``draw(embeddings,
    text)`` redraws the chart (at most every REDRAW_SECONDS, and always for the last frame),
    ``caption(text)`` updates the text in between. The first redraw waits up to FIRST_DRAW_WAIT
    for the job to finish (a short job is drawn once, at its last frame). Returns when the job is
    final (or no worker serves it, or after FOLLOW_SECONDS)."""
    started = time.monotonic()
    step, shown, text, final = frame_and_caption(job_id, base)
    while not final and worker_pid() is not None and time.monotonic() - started < FIRST_DRAW_WAIT:
        time.sleep(FRAME_POLL / 2)
        step, shown, text, final = frame_and_caption(job_id, base)
    draw(shown, text)
    drawn_at, drawn_step = time.monotonic(), step
    while not final and worker_pid() is not None and time.monotonic() - started < FOLLOW_SECONDS:
        time.sleep(FRAME_POLL)
        step, shown, new_text, final = frame_and_caption(job_id, base)
        if new_text == text:
            continue
        text = new_text
        # a frame already drawn is never drawn again (the same chart twice in one run is a duplicate
        # element): the last frame redraws only if it is new, else only the caption changes
        if step != drawn_step and (final or time.monotonic() - drawn_at >= REDRAW_SECONDS):
            draw(shown, text)
            drawn_at, drawn_step = time.monotonic(), step
        else:
            caption(text)
    if step != drawn_step:
        draw(shown, text)


def session_tag(session: str = "") -> str:
    """The jobs store's ``sweep`` tag of one browser session's warm starts (all sessions share
    one worker; a slider move supersedes only its own session's older warm starts)."""
    return f"{TAG}:{session}" if session else TAG


def submit(job: WarmStartJob, seed: int = 0, session: str = "") -> int:
    """Record a warm-start job (validated by the runner's spec: one-line ValueError; the older
    queued or running ones of the same ``session`` are cancelled: superseded) and make sure the
    resident worker runs. Other sessions' warm starts go on."""
    spec = validate(JobSpec(KIND, to_dict(job), seed))
    tag = session_tag(session)
    with jobs_client.open_store() as store:
        for old in store.list(("queued", "running"), backend=BACKEND, sweep=tag):
            if old.kind == KIND:
                store.request_cancel(old.id)
        job_id = store.submit(KIND, spec.config, spec.seed, backend=BACKEND, sweep=tag)
    ensure_worker()
    return job_id


def lock_path() -> Path:
    return settings.studio_dir() / "warmstart.lock"


def worker_pid() -> int | None:
    """The resident worker's pid when one holds the lock, else None."""
    from merlion_core.jobs.supervisor import lock_holder_pid

    return lock_holder_pid(lock_path())


def ensure_worker(owner_pid: int | None = None) -> int:
    """The resident worker's pid, starting one (detached, one torch thread) when none runs. Called
    when the Embeddings page opens, so torch is loaded before the first slider move.

    ``owner_pid``: the process a worker started now serves and ends with (None: this process, the
    app; 0: none). A worker whose owner is gone is retiring: a new one is started, and takes over
    once the old one has let go of the lock."""
    from merlion_core.jobs.processes import owner_gone

    pid = worker_pid()
    if pid is not None and not owner_gone(lock_path(), pid):
        return pid
    owner = os.getpid() if owner_pid is None else int(owner_pid)
    if owner < 0:
        raise ValueError(f"owner_pid: must be a pid (> 0) or 0 for none, got {owner}")
    folder = settings.studio_dir()
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(
        dict.fromkeys([str(settings.REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    )
    env[settings.RUNS_ENV] = str(settings.runs_dir())
    with open(folder / "warmstart.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "studio.warmstart_worker", "--owner-pid", str(owner)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=str(settings.REPO_ROOT),
        )
    return process.pid
