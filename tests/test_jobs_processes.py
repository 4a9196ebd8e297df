"""Jobs as real OS processes: lifecycle, a SIGKILLed worker, a restarted supervisor, bounded
concurrency, cancel (queued, running, unresponsive) and resume from a checkpoint.

Each test runs its own supervisor (``python -m merlion_core.jobs.supervisor``) on a fresh runs
folder and kills it and every worker it started on teardown. Jobs are tiny collections on a
64-action maze; a "long" one steps a single environment (about 4,000 transitions/s here).
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from polling import wait_for

from merlion_core.config import to_json
from merlion_core.jobs.backend import LocalBackend
from merlion_core.jobs.processes import is_alive, package_root
from merlion_core.jobs.spec import JobSpec
from merlion_core.jobs.store import FINAL, JobStateError, JobStore
from merlion_core.jobs.supervisor import SupervisorConfig

SMALL = {"n_actuators": 6}


def short(seed=0, n=3000):
    return JobSpec(
        "collect", {"env": "maze", "behaviour": "expert", "noise": 0.0, "n": n, "n_envs": 64, "env_config": SMALL}, seed
    )


def long(seed=0, n=200_000):
    return JobSpec("collect", {"env": "maze", "behaviour": "random", "n": n, "n_envs": 1, "env_config": SMALL}, seed)


class Harness:
    """A runs folder, its store, a supervisor process that can be killed and restarted."""

    def __init__(self, root, **config):
        self.root = root
        self.store = JobStore(root)
        self.backend = LocalBackend(self.store, start_supervisor=False)
        self.config = SupervisorConfig(**{"slots": 2, "threads": 1, "poll": 0.05, "cancel_grace": 2.0, **config})
        self.supervisor = None

    def start(self):
        env = {**os.environ, "PYTHONPATH": package_root()}
        self.supervisor = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "merlion_core.jobs.supervisor",
                "--runs",
                str(self.root),
                "--config",
                to_json(self.config),
            ],
            stdout=open(self.root / "supervisor.log", "ab"),
            stderr=subprocess.STDOUT,
            env=env,
        )
        wait_for(
            lambda: (
                (self.root / "supervisor.lock").exists()
                and (self.root / "supervisor.lock").read_text().strip() == str(self.supervisor.pid)
            )
        )

    def kill_supervisor(self):
        self.supervisor.send_signal(signal.SIGKILL)
        self.supervisor.wait()

    def submit(self, spec):
        return self.backend.submit(spec)

    def wait_final(self, job_ids, timeout=60.0):
        return wait_for(
            lambda: all(self.store.get(i).status in FINAL for i in job_ids) and [self.store.get(i) for i in job_ids],
            timeout,
        )

    def wait_running(self, job_id, min_step=1):
        return wait_for(
            lambda: (
                (job := self.store.get(job_id)).status == "running" and job.pid and (job.step or 0) >= min_step and job
            )
        )

    def close(self):
        if self.supervisor is not None and self.supervisor.poll() is None:
            self.supervisor.kill()
            self.supervisor.wait()
        for job in self.store.list("running"):
            if job.pid and is_alive(job.pid, job.pid_start):
                os.killpg(job.pid, signal.SIGKILL)
        self.store.close()


@pytest.fixture
def harness(tmp_path):
    made = []

    def make(**config):
        made.append(Harness(tmp_path / f"runs{len(made)}", **config))
        return made[-1]

    yield make
    for h in made:
        h.close()


def test_lifecycle_through_the_cli(tmp_path, capsys):
    from merlion_core.cli.main import main
    from merlion_core.data.collect import collect
    from merlion_core.data.io import load_dataset
    from merlion_core.jobs.supervisor import supervisor_pid

    runs = tmp_path / "runs"
    config = tmp_path / "collect.yaml"
    config.write_text("env: maze\nbehaviour: expert\nnoise: 0.0\nn: 3000\nenv_config: {n_actuators: 6}\n")
    try:
        assert (
            main(["jobs", "submit", "collect", "--config", str(config), "--seed", "7", "--runs", str(runs), "--json"])
            == 0
        )
        submitted = json.loads(capsys.readouterr().out)
        assert submitted["status"] == "queued" and submitted["seed"] == 7
        store = JobStore(runs)
        job = wait_for(lambda: store.get(1).status in FINAL and store.get(1), timeout=60)
        assert job.status == "succeeded", job.exit_reason
        assert main(["jobs", "show", "1", "--runs", str(runs), "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["result"]["n_transitions"] == 3000
        assert shown["latest_metrics"]["progress"] == {"step": 3000, "value": 3000.0}
        assert shown["started_at"] <= shown["finished_at"] and shown["attempts"] == 1
        assert main(["jobs", "list", "--runs", str(runs), "--json"]) == 0
        assert [j["status"] for j in json.loads(capsys.readouterr().out)] == ["succeeded"]
        assert main(["jobs", "logs", "1", "--runs", str(runs)]) == 0
        assert "job 1: succeeded" in capsys.readouterr().out
        # the artifact is the same dataset a direct collection with that seed gives, bit for bit
        saved = load_dataset(shown["result"]["dataset"])
        direct = collect("maze", "expert", 0.0, 3000, seed=7, n_envs=256, env_overrides=SMALL)
        assert np.array_equal(saved.actions, direct.actions) and np.array_equal(saved.rewards, direct.rewards)
        # errors are one line and exit 1
        assert main(["jobs", "show", "99", "--runs", str(runs)]) == 1
        assert "job 99: no such job" in capsys.readouterr().err
        assert main(["jobs", "cancel", "1", "--runs", str(runs)]) == 1
        assert "already succeeded" in capsys.readouterr().err
        assert main(["jobs", "submit", "collect", "--config", '{"nn": 5}', "--runs", str(runs)]) == 1
        assert "unknown key(s) nn" in capsys.readouterr().err
    finally:
        pid = supervisor_pid(runs)
        if pid is not None and pid > 0:  # -1: held but unreadable (os.kill(-1) signals every process)
            os.kill(pid, signal.SIGKILL)


def test_sigkill_of_a_worker_fails_its_job_fast_and_others_continue(harness):
    h = harness(slots=2)
    h.start()
    victim = h.submit(long())
    others = [h.submit(short(seed)) for seed in (1, 2, 3)]
    job = h.wait_running(victim, min_step=100)
    os.kill(job.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    failed = wait_for(lambda: (j := h.store.get(victim)).status != "running" and j, timeout=5.0)
    assert time.monotonic() - killed_at < 5.0
    assert failed.status == "failed" and failed.exit_reason == "worker killed by signal 9 (SIGKILL)"
    assert all(j.status == "succeeded" for j in h.wait_final(others))


def test_eight_jobs_on_two_slots_never_more_than_two_at_once(harness):
    h = harness(slots=2)
    ids = [h.submit(short(seed)) for seed in range(8)]
    started = time.monotonic()
    h.start()
    jobs = h.wait_final(ids)
    seconds = time.monotonic() - started
    assert [j.status for j in jobs] == ["succeeded"] * 8
    launches = h.store.events("launch")
    assert sorted(e["job_id"] for e in launches) == ids
    assert max(e["running"] for e in launches) == 2  # the supervisor's own count at each launch
    # and the workers' own start/finish times never overlap by more than two
    edges = sorted([(j.started_at, 1) for j in jobs] + [(j.finished_at, -1) for j in jobs], key=lambda e: (e[0], e[1]))
    assert max(np.cumsum([d for _, d in edges])) <= 2
    print(f"8 short jobs on 2 slots: {seconds:.2f} s")


def test_cancel_a_queued_a_running_and_an_unresponsive_job(harness):
    h = harness(slots=1, cancel_grace=1.0)
    h.start()
    running, queued = h.submit(long()), h.submit(short())
    h.wait_running(running, min_step=100)
    assert h.backend.cancel(queued) == "cancelled"
    assert h.store.get(queued).exit_reason == "cancelled before it started"
    assert h.backend.cancel(running) == "requested"
    job = h.wait_final([running], timeout=10)[0]
    assert job.status == "cancelled" and job.exit_reason.startswith("cancelled by request (cancelled at step")
    wait_for(lambda: not is_alive(job.pid, job.pid_start), timeout=5)  # the worker exits by itself
    assert h.store.get(queued).pid is None and queued not in [e["job_id"] for e in h.store.events("launch")]
    with pytest.raises(JobStateError, match="already cancelled"):
        h.backend.cancel(queued)
    # a worker that cannot answer (stopped) is killed with its process group after the grace period
    stuck = h.submit(long(seed=1))
    job = h.wait_running(stuck, min_step=100)
    os.kill(job.pid, signal.SIGSTOP)
    h.backend.cancel(stuck)
    job = h.wait_final([stuck], timeout=10)[0]
    assert job.status == "cancelled" and "process group was killed" in job.exit_reason
    wait_for(lambda: not is_alive(job.pid, job.pid_start), timeout=5)


def test_supervisor_killed_and_restarted_adopts_and_marks(harness):
    h = harness(slots=2)
    h.start()
    survivor, victim = h.submit(long(n=20_000)), h.submit(long(seed=1))
    queued = h.submit(short())
    h.wait_running(survivor, min_step=100)
    victim_job = h.wait_running(victim, min_step=100)
    h.kill_supervisor()
    down_at = time.time()
    os.kill(victim_job.pid, signal.SIGKILL)  # dies while no supervisor watches
    time.sleep(1.0)
    assert h.store.get(survivor).status == "running"  # workers outlive their supervisor
    up_at = time.time()
    h.start()
    jobs = h.wait_final([survivor, victim, queued])
    assert [j.status for j in jobs] == ["succeeded", "failed", "succeeded"]
    assert jobs[1].exit_reason == "worker process gone (found dead when the supervisor started)"
    assert [e["job_id"] for e in h.store.events("adopt")] == [survivor]
    progress = h.store.metrics(survivor, "progress")
    steps = [row["step"] for row in progress]
    assert steps == sorted(set(steps)) and steps[-1] == 20_000  # no metric lost or doubled
    assert any(down_at < row["time"] < up_at for row in progress)  # written while unsupervised
    assert jobs[0].result["n_transitions"] == 20_000


@pytest.mark.slow  # two worker processes importing torch and an in-process reference: 10-30 s here
def test_resume_from_a_checkpoint_continues_at_the_saved_step(harness, tmp_path):
    """A SIGKILLed train-agent job resumed with `jobs resume` semantics ends where an uninterrupted run
    does (the default suite checks the same in one process: tests/test_jobs.py)."""
    import torch

    from merlion_core.algos.artifacts import load_agent
    from merlion_core.checkpoints import checkpoint_steps
    from merlion_core.data.collect import collect
    from merlion_core.data.io import save_dataset
    from merlion_core.pipelines.agent import train_agent

    torch.set_num_threads(1)
    dataset = save_dataset(collect("maze", "expert", 0.0, 3000, seed=0, env_overrides=SMALL), tmp_path / "data")
    config = {
        "dataset": str(dataset),
        "algo": "bc",
        "steps": 600,
        "eval_every": 100,
        "eval_episodes": 1,
        "checkpoint_every": 100,
        "device": "cpu",
        "options": {"hidden": [32, 32], "batch_size": 64},
    }
    h = harness(slots=1)
    h.start()
    job_id = h.submit(JobSpec("train-agent", config, 5))
    job = h.wait_running(job_id, min_step=200)
    os.kill(job.pid, signal.SIGKILL)
    assert h.wait_final([job_id])[0].status == "failed"
    saved = checkpoint_steps(h.store.checkpoint_dir(job_id))[-1]
    assert 200 <= saved < 600
    h.store.requeue(job_id, resume=True)
    job = h.wait_final([job_id])[0]
    assert job.status == "succeeded" and job.attempts == 2 and job.result["last"]["step"] == 600
    log = h.store.log_path(job_id).read_text()
    assert f"resuming from step {saved}" in log
    assert [row["step"] for row in h.store.metrics(job_id, "loss")] == list(range(100, 700, 100))
    # the resumed run ends exactly where an uninterrupted one does
    reference = train_agent(
        dataset,
        "bc",
        tmp_path / "ref",
        steps=600,
        eval_every=100,
        eval_episodes=1,
        device="cpu",
        overrides={**config["options"], "seed": 5},
    )
    resumed = load_agent(job.result["agent"]).agent.state_dict()
    expected = load_agent(tmp_path / "ref").agent.state_dict()
    assert all(torch.equal(resumed[k], expected[k]) for k in expected)
    assert job.result["last"]["loss"] == reference["last"]["loss"]


@pytest.mark.parametrize("nice", [0, 7])
def test_workers_run_at_the_configured_niceness(harness, nice):
    """Jobs train below the app's priority (SupervisorConfig.nice), so pages stay quick on a busy machine."""
    h = harness(slots=1, nice=nice)
    h.start()
    job = h.wait_running(h.submit(long()), min_step=100)
    expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + nice)
    assert os.getpriority(os.PRIO_PROCESS, job.pid) == expected
    autogroup = f"/proc/{job.pid}/autogroup"  # the worker's own session is its own scheduling group
    if nice and os.path.exists(autogroup):
        assert open(autogroup).read().split()[-1] == str(expected)


def test_niceness_out_of_range_is_refused():
    with pytest.raises(ValueError, match=r"SupervisorConfig.nice: must be in \[0, 19\], got 20"):
        SupervisorConfig(nice=20)
