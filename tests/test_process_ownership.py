"""Background processes tied to their owner (docs/jobs.md, "Concurrency, threads, GPUs"; docs/app.md).

A supervisor started with an owner (the app passes its pid) retires once the owner is gone: it
launches no more queued jobs, interrupts its running ones (a cancel request: they end cancelled,
resumable), waits for their workers and exits, letting go of its lock; a new supervisor started
meanwhile takes over once it has. The warm-start worker does the same for the app that started it.
A supervisor without an owner (the CLI's) keeps running after the process that started it is gone.

The owner here is a ``sleep`` process the test kills. Every process a test starts is killed in its
``finally`` (and tests/conftest.py checks that none is left behind).
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from polling import wait_for

from merlion_core.jobs.backend import LocalBackend
from merlion_core.jobs.processes import is_alive, kill_group, package_root
from merlion_core.jobs.spec import JobSpec
from merlion_core.jobs.store import FINAL, JobStore
from merlion_core.jobs.supervisor import SupervisorConfig, ensure_supervisor, supervisor_owner, supervisor_pid

SMALL = {"n_actuators": 6}
CONFIG = SupervisorConfig(slots=1, threads=1, poll=0.05, cancel_grace=3.0, idle_exit=60.0)


def short(seed=0):
    return JobSpec(
        "collect", {"env": "maze", "behaviour": "expert", "n": 2000, "n_envs": 64, "env_config": SMALL}, seed
    )


def long(seed=0):  # one environment stepped 200,000 times: about a minute here, far longer than a test
    return JobSpec(
        "collect", {"env": "maze", "behaviour": "random", "n": 200_000, "n_envs": 1, "env_config": SMALL}, seed
    )


def running(store, job_id, min_step=100):
    job = store.get(job_id)
    return job.status == "running" and job.pid and (job.step or 0) >= min_step and job


def start_owner():
    """A stand-in for the app: a process that runs until the test kills it."""
    return subprocess.Popen(["sleep", "300"])


def end(process):
    if process.poll() is None:
        process.kill()
    process.wait()


def kill_pid(pid):
    if pid is not None and pid > 1 and is_alive(pid):  # never -1 (every process) or 0 (our group)
        os.kill(pid, signal.SIGKILL)


def cleanup(store, *pids):
    for pid in pids:
        kill_pid(pid)
    for job in store.list("running"):
        if job.pid and is_alive(job.pid, job.pid_start):
            kill_group(job.pid)
    store.close()


def test_a_supervisor_interrupts_its_jobs_and_exits_when_its_owner_dies(tmp_path):
    root = tmp_path / "runs"
    store = JobStore(root)
    backend = LocalBackend(store, start_supervisor=False)
    owner, pid = start_owner(), None
    try:
        pid = ensure_supervisor(root, CONFIG, owner_pid=owner.pid)
        wait_for(lambda: supervisor_pid(root) == pid)
        assert supervisor_owner(root) == owner.pid
        assert json.loads((root / "supervisor.owner").read_text())["owner_pid"] == owner.pid
        job_id, queued = backend.submit(long()), backend.submit(short())
        job = wait_for(lambda: running(store, job_id))
        end(owner)
        gone_at = time.monotonic()
        # the running job is asked to stop; it ends cancelled at a step, and can be resumed
        final = wait_for(lambda: (j := store.get(job_id)).status in FINAL and j, timeout=30)
        assert final.status == "cancelled" and final.exit_reason.startswith("cancelled by request (cancelled at step")
        [interrupt] = store.events("interrupt")
        assert interrupt["job_id"] == job_id and f"owner pid {owner.pid} gone" in interrupt["detail"]
        assert f"owner pid {owner.pid} gone" in store.log_path(job_id).read_text()
        # the supervisor exits within seconds and lets go of the runs folder
        wait_for(lambda: not is_alive(pid) and supervisor_pid(root) is None, timeout=30)
        assert time.monotonic() - gone_at < 8.0
        assert not (root / "supervisor.owner").exists()
        assert not is_alive(job.pid, job.pid_start)  # its worker is gone too
        # the queued job was never launched: it waits for the next supervisor
        assert store.get(queued).status == "queued" and queued not in [e["job_id"] for e in store.events("launch")]
        store.requeue(job_id, resume=True)
        assert store.get(job_id).status == "queued"
    finally:
        end(owner)
        cleanup(store, pid)


def test_a_new_supervisor_takes_over_from_a_retiring_one(tmp_path):
    """While a retiring supervisor waits for a worker that does not stop (here: stopped with
    SIGSTOP, killed after cancel_grace), ensure_supervisor starts a new one that runs the queue."""
    root = tmp_path / "runs"
    store = JobStore(root)
    backend = LocalBackend(store, start_supervisor=False)
    owner, app, old, new = start_owner(), start_owner(), None, None
    try:
        old = ensure_supervisor(root, CONFIG, owner_pid=owner.pid)
        wait_for(lambda: supervisor_pid(root) == old)
        stuck = backend.submit(long())
        job = wait_for(lambda: running(store, stuck))
        os.kill(job.pid, signal.SIGSTOP)
        queued = backend.submit(short())
        end(owner)
        wait_for(lambda: store.events("interrupt"), timeout=15)  # the old one retires; it runs for cancel_grace
        assert supervisor_pid(root) == old
        new = ensure_supervisor(root, CONFIG, owner_pid=app.pid)
        assert new != old
        ended = wait_for(lambda: (j := store.get(stuck)).status in FINAL and j, timeout=30)
        assert ended.status == "cancelled" and "process group was killed" in ended.exit_reason
        wait_for(lambda: supervisor_pid(root) == new, timeout=30)
        assert supervisor_owner(root) == app.pid
        done = wait_for(lambda: (j := store.get(queued)).status in FINAL and j, timeout=30)
        assert done.status == "succeeded", done.exit_reason
        assert [e["job_id"] for e in store.events("launch")] == [stuck, queued]
    finally:
        end(owner)
        end(app)
        cleanup(store, old, new)


def test_a_supervisor_without_an_owner_outlives_the_process_that_started_it(tmp_path):
    """`merlion jobs submit` starts a supervisor and exits at once: that supervisor has no owner and
    keeps serving (until its idle exit)."""
    root = tmp_path / "runs"
    store = JobStore(root)
    pid = None
    try:
        submitted = subprocess.run(
            [sys.executable, "-m", "merlion_core.cli", "jobs", "submit", "collect", "--runs", str(root)]
            + ["--config", json.dumps(short().config), "--json"],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": package_root()},
            timeout=60,
        )
        assert submitted.returncode == 0, submitted.stderr
        job_id = json.loads(submitted.stdout)["id"]
        pid = wait_for(lambda: supervisor_pid(root))
        assert supervisor_owner(root) is None
        assert json.loads((root / "supervisor.owner").read_text())["owner_pid"] is None  # recorded: no owner
        first = wait_for(lambda: (j := store.get(job_id)).status in FINAL and j, timeout=30)
        assert first.status == "succeeded", first.exit_reason
        later = LocalBackend(store, start_supervisor=False).submit(short(seed=1))  # its starter is long gone
        second = wait_for(lambda: (j := store.get(later)).status in FINAL and j, timeout=30)
        assert second.status == "succeeded", second.exit_reason
        assert is_alive(pid) and supervisor_pid(root) == pid and not store.events("interrupt")
    finally:
        cleanup(store, pid)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """A 64-action maze dataset and a small MERLION encoder (d = 4)."""
    import torch

    from merlion_core.data.collect import collect
    from merlion_core.data.io import save_dataset
    from merlion_core.pipelines.encoder import train_encoder

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("owned-warm-start")
    data = save_dataset(collect("maze", "medium", 0.5, 2000, seed=0, env_overrides=SMALL), root / "data")
    overrides = {"steps": 5, "batch_size": 32, "hidden": 16, "action_embed_dim": 8, "dim": 4}
    trained = train_encoder(data, "merlion", root / "merlion", device="cpu", overrides=overrides)
    return {"dataset": str(data), "encoder": str(trained["out"])}


def test_the_warm_start_worker_interrupts_its_job_and_exits_when_its_owner_dies(encoder, tmp_path, monkeypatch):
    from studio import jobs_client, warmstart

    monkeypatch.setenv("MERLION_STUDIO_HOME", str(tmp_path))
    monkeypatch.delenv("MERLION_RUNS_DIR", raising=False)
    owner, pid = start_owner(), None
    store = JobStore(tmp_path / "runs")
    try:
        pid = warmstart.ensure_worker(owner_pid=owner.pid)
        wait_for(lambda: warmstart.worker_pid() == pid)
        # a slider move: far more steps than the test lasts (the worker pays torch's start-up first)
        job_id = warmstart.submit(
            warmstart.slider_job(encoder["encoder"], encoder["dataset"], 0.3, 0.3, steps=1_000_000, state=())
        )
        assert warmstart.ensure_worker(owner_pid=owner.pid) == pid  # the same worker serves it
        wait_for(lambda: (j := jobs_client.get(job_id)).status == "running" and (j.step or 0) >= 10, timeout=40)
        end(owner)
        gone_at = time.monotonic()
        final = wait_for(lambda: (j := jobs_client.get(job_id)).status in FINAL and j, timeout=30)
        assert final.status == "cancelled" and final.exit_reason.startswith("interrupted at step")
        assert f"(pid {owner.pid}) is gone" in final.exit_reason
        wait_for(lambda: not is_alive(pid) and warmstart.worker_pid() is None, timeout=30)
        assert time.monotonic() - gone_at < 8.0
    finally:
        end(owner)
        cleanup(store, pid)


def test_the_app_ties_the_supervisor_it_starts_to_itself(tmp_path, monkeypatch):
    """Every path by which the app starts a supervisor (submit, cancel, resume) names the app's pid as
    its owner, so stopping the app ends the supervisor too; the CLI's backend names none."""
    import merlion_core.jobs.backend as backend
    from merlion_core.jobs.spec import JobSpec
    from merlion_core.jobs.store import JobStore
    from studio import jobs_client

    calls: list[int | None] = []
    monkeypatch.setenv("MERLION_STUDIO_HOME", str(tmp_path))
    monkeypatch.delenv("MERLION_RUNS_DIR", raising=False)
    monkeypatch.setattr(backend, "ensure_supervisor", lambda root, owner_pid=None: calls.append(owner_pid))
    monkeypatch.setattr(jobs_client, "ensure_supervisor", lambda root, owner_pid=None: calls.append(owner_pid))
    job_id = jobs_client.submit("collect", {"env": "maze", "n": 100}, seed=0)
    store = JobStore(tmp_path / "runs")
    assert store.claim(job_id)
    store.finish(job_id, "failed", "killed by the test", failure="killed")
    jobs_client.resume(job_id)
    assert store.claim(job_id)  # running again: a cancel asks the supervisor to enforce it
    assert jobs_client.cancel(job_id) == "requested"
    assert calls == [os.getpid()] * 3
    backend.LocalBackend(JobStore(tmp_path / "cli-runs")).submit(JobSpec("collect", {"env": "maze", "n": 100}, 0))
    assert calls[-1] is None
