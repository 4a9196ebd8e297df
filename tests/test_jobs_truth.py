"""Jobs tell the truth (issue 26, item 2): a training job's progress is its training step whether or
not it evaluates; only interrupted, killed or cancelled jobs are offered a resume, and a job that
failed with its own error shows that error whole; one rule for where runs live, shared by the CLI
and the app; read-only commands create nothing."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess

import pytest
import torch

from merlion_core.cli.main import main
from merlion_core.jobs import store as store_module
from merlion_core.jobs import worker
from merlion_core.jobs.processes import process_start
from merlion_core.jobs.spec import JobSpec, validate
from merlion_core.jobs.store import SCHEMA, JobStateError, JobStore, runs_dir
from merlion_core.jobs.worker import run_worker

SMALL = {"n_actuators": 6}  # a 64-action maze: every run here takes a second or two


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from merlion_core.data.collect import collect
    from merlion_core.data.io import save_dataset

    return save_dataset(
        collect("maze", "expert", 0.0, 2000, seed=0, env_overrides=SMALL), tmp_path_factory.mktemp("truth") / "maze"
    )


@pytest.fixture
def no_runs_env(monkeypatch):
    monkeypatch.delenv("MERLION_RUNS_DIR", raising=False)
    monkeypatch.delenv("MERLION_STUDIO_HOME", raising=False)


def agent_config(dataset, **fields):
    config = {
        "dataset": str(dataset),
        "algo": "bc",
        "steps": 200,
        "eval_every": 0,
        "eval_episodes": 1,
        "device": "cpu",
        "checkpoint_every": 0,
        "options": {"hidden": [16], "batch_size": 32},
        **fields,
    }
    return validate(JobSpec("train-agent", config, 0)).config


def run_in_process(store: JobStore, kind: str, config: dict) -> int:
    job = store.submit(kind, config, 0)
    assert store.claim(job)
    run_worker(store, job)
    return job


# ---------------------------------------------------------------------------------- 1. progress
@pytest.mark.parametrize("eval_every", [0, 100])
def test_an_agent_job_reports_its_training_step_whether_or_not_it_evaluates(
    eval_every, tiny_dataset, tmp_path, monkeypatch
):
    torch.set_num_threads(1)
    monkeypatch.setattr(worker, "COUNTER_METRIC_SECONDS", 0.0)  # store every count (normally: twice a second)
    store = JobStore(tmp_path / "runs")
    job = run_in_process(store, "train-agent", agent_config(tiny_dataset, eval_every=eval_every))
    record = store.get(job)
    assert record.status == "succeeded" and (record.step, record.total) == (200, 200)
    # the step went up during the run, every 10 steps (1/100 of the run, at least 10), not every step
    assert [row["step"] for row in store.metrics(job, "progress")] == list(range(0, 201, 10))
    # the learning curve is logged where it was: at the evaluation points, else at the end
    assert [row["step"] for row in store.metrics(job, "loss")] == ([100, 200] if eval_every else [200])
    # an encoder job ends at its total too
    options = {"steps": 30, "batch_size": 32, "hidden": 16, "action_embed_dim": 8}
    encoder = {"dataset": str(tiny_dataset), "method": "merlion", "device": "cpu", "options": options}
    encoder = validate(JobSpec("train-encoder", encoder, 0)).config
    job = run_in_process(store, "train-encoder", encoder)
    record = store.get(job)
    assert record.status == "succeeded" and (record.step, record.total) == (30, 30)
    assert store.metrics(job, "progress")[-1]["step"] == 30
    store.close()


def test_counting_steps_changes_neither_the_weights_nor_the_logged_means(tiny_dataset, tmp_path, monkeypatch):
    """The step count splits each logging window into reports; the window's means are recombined."""
    from merlion_core.algos.artifacts import load_agent
    from merlion_core.pipelines import agent as agent_module

    assert agent_module.step_progress_every(20_000, 2000) == 200
    assert agent_module.step_progress_every(300, 1000) == 10
    assert agent_module.step_progress_every(20_000, 997) == 997  # a prime window: no count every step
    torch.set_num_threads(1)
    kwargs = dict(steps=120, eval_every=60, eval_episodes=1, device="cpu", overrides={"hidden": [16], "batch_size": 32})
    counted: list[tuple[int, int]] = []
    split = agent_module.train_agent(
        tiny_dataset, "bc", tmp_path / "split", step_progress=lambda *a: counted.append(a), **kwargs
    )
    assert counted == [(0, 120)] + [(s, 120) for s in range(10, 121, 10)]
    monkeypatch.setattr(agent_module, "step_progress_every", lambda steps, log_every: log_every)  # one report a log
    whole = agent_module.train_agent(tiny_dataset, "bc", tmp_path / "whole", **kwargs)
    a, b = load_agent(tmp_path / "split").agent.state_dict(), load_agent(tmp_path / "whole").agent.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    curves = [json.loads((tmp_path / name / "metrics.json").read_text())["curve"] for name in ("split", "whole")]
    assert [p["step"] for p in curves[0]] == [p["step"] for p in curves[1]] == [60, 120]
    for mine, theirs in zip(*curves, strict=True):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
    assert split["last"]["normalised_score"] == whole["last"]["normalised_score"]


# ---------------------------------------------------------------------------------- 2. resume
LONG_KEY = "no_such_option\nsecond line " + "x" * 600


def test_a_job_that_failed_with_its_own_error_is_not_resumable_and_says_why_whole(
    tiny_dataset, tmp_path, capsys, no_runs_env
):
    from merlion_core.pipelines.agent import agent_config as make_config
    from studio import jobs_client

    runs = tmp_path / "runs"
    store = JobStore(runs)
    job = run_in_process(store, "train-agent", agent_config(tiny_dataset, options={LONG_KEY: 1}))
    with pytest.raises(ValueError) as raised:
        make_config("bc", {LONG_KEY: 1})
    record = store.get(job)
    assert record.status == "failed"
    assert record.exit_reason == f"ValueError: {raised.value}"  # whole: every line, no cut at 500 characters
    assert len(record.exit_reason) > 600 and "\nsecond line " in record.exit_reason
    capsys.readouterr()
    assert main(["jobs", "resume", str(job), "--runs", str(runs), "--no-supervisor"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"job {job}: failed with its own error (ValueError)" in err
    assert store.get(job).status == "failed" and store.get(job).attempts == 1  # not queued again
    with pytest.raises(JobStateError, match="failed with its own error"):
        store.requeue(job, resume=True)
    assert main(["jobs", "show", str(job), "--runs", str(runs), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["exit_reason"] == record.exit_reason and shown["resumable"] is False
    assert main(["jobs", "show", str(job), "--runs", str(runs)]) == 0
    assert "x" * 600 in capsys.readouterr().out
    assert record.failure == "error" and not store_module.resumable(record)
    assert not jobs_client.can_resume(record) and "ValueError" in jobs_client.why_not_resumable(record)
    assert jobs_client.rows([record])[0].reason == record.exit_reason
    store.close()


def test_killed_and_cancelled_jobs_are_resumable(tmp_path, capsys, no_runs_env):
    from merlion_core.jobs.supervisor import Supervisor, SupervisorConfig, Worker

    supervisor = Supervisor(tmp_path / "runs", SupervisorConfig(slots=1))
    store = supervisor.store
    killed = store.submit("collect", {"n": 5}, 0)
    store.claim(killed)
    process = subprocess.Popen(["sleep", "60"])  # stands in for the worker process
    try:
        supervisor.workers[killed] = Worker(process.pid, process_start(process.pid), None, process)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        supervisor.reap()  # what the supervisor does with a worker that died without reporting
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    record = store.get(killed)
    assert record.status == "failed" and record.exit_reason == "worker killed by signal 9 (SIGKILL)"
    cancelled = store.submit("collect", {"n": 5}, 0)
    store.claim(cancelled)
    store.request_cancel(cancelled)
    store.finish(cancelled, "cancelled", "cancelled by request (cancelled at step 3)")
    capsys.readouterr()
    assert main(["jobs", "show", str(killed), "--runs", str(tmp_path / "runs"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["resumable"] is True
    assert record.failure == "killed" and store_module.resumable(record)
    assert store_module.resumable(store.get(cancelled)) and store.get(cancelled).failure is None
    for job in (killed, cancelled):
        assert main(["jobs", "resume", str(job), "--runs", str(tmp_path / "runs"), "--no-supervisor"]) == 0
        again = store.get(job)
        assert (again.status, again.resume, again.failure, again.exit_reason) == ("queued", 1, None, None)
    capsys.readouterr()
    store.close()


def test_an_old_store_without_the_failure_column_is_read_and_migrated(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    old = sqlite3.connect(runs / "jobs.sqlite")
    old.executescript(SCHEMA.replace(",\n    failure TEXT", ""))  # the schema before the failure column
    for reason in ("ValueError: bad option", "worker killed by signal 9 (SIGKILL)", "no heartbeat for 130 s: hung"):
        old.execute(
            "INSERT INTO jobs (kind, config, seed, status, created_at, exit_reason) VALUES "
            "('collect', '{}', 0, 'failed', 0, ?)",
            (reason,),
        )
    old.commit()
    old.close()
    store = JobStore(runs)
    assert [(job.failure, store_module.resumable(job)) for job in store.list()] == [
        ("error", False),
        ("killed", True),
        ("killed", True),
    ]
    assert "failure" in {row[1] for row in store.db.execute("PRAGMA table_info(jobs)")}  # migrated in place
    store.close()


def test_the_train_page_offers_resume_only_for_interrupted_jobs(tiny_dataset, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest
    from studio_fixture import quiet_app

    from studio import jobs_client, settings

    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    (home / "data" / "maze").symlink_to(tiny_dataset, target_is_directory=True)
    quiet_app(monkeypatch, home)
    monkeypatch.setattr(jobs_client, "ensure_supervisor", lambda *a, **k: 0)
    store = JobStore(settings.runs_dir())
    config = agent_config(tiny_dataset)
    ids = {}
    for name, reason in (  # as the worker and the supervisor write them
        ("error", f"ValueError: bc: no option(s) {LONG_KEY}"),
        ("killed", "worker killed by signal 9 (SIGKILL)"),
        ("cancelled", "cancelled by request (cancelled at step 100)"),
        ("succeeded", None),
    ):
        ids[name] = store.submit("train-agent", config, 0, sweep="studio:train")
        store.claim(ids[name])
        store.finish(ids[name], name if name in ("cancelled", "succeeded") else "failed", reason)
    at = AppTest.from_file(str(settings.REPO_ROOT / "pages" / "train.py"), default_timeout=120).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert table.loc[ids["error"], "reason"] == f"ValueError: bc: no option(s) {LONG_KEY}"  # whole
    offered = {}
    for name, job in ids.items():
        at.selectbox(key="train.jobs.pick").set_value(job).run()
        offered[name] = not at.button(key="train.jobs.resume").disabled
    assert offered == {"error": False, "killed": True, "cancelled": True, "succeeded": False}
    at.selectbox(key="train.jobs.pick").set_value(ids["killed"]).run()
    at.button(key="train.jobs.resume").click().run()
    assert store.get(ids["killed"]).status == "queued" and store.get(ids["error"]).status == "failed"
    store.close()


# ---------------------------------------------------------------------------------- 3. one runs folder
def test_studio_home_moves_the_runs_of_the_cli_and_the_app_alike(tmp_path, monkeypatch, capsys, no_runs_env):
    from studio import jobs_client, settings

    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("MERLION_STUDIO_HOME", str(home))
    with jobs_client.open_store() as store:  # a job the app submitted
        job = store.submit("collect", {"n": 5}, 0, sweep="studio:data")
    assert main(["jobs", "list", "--json"]) == 0
    assert [j["id"] for j in json.loads(capsys.readouterr().out)] == [job]
    assert main(["jobs", "show", str(job)]) == 0 and "collect" in capsys.readouterr().out
    assert settings.runs_dir() == runs_dir() == (home / "runs").resolve()
    assert not (cwd / "runs").exists()
    # the one rule: --runs, else $MERLION_RUNS_DIR, else $MERLION_STUDIO_HOME/runs, else the default
    monkeypatch.setenv("MERLION_RUNS_DIR", str(tmp_path / "r"))
    assert runs_dir() == settings.runs_dir() == (tmp_path / "r").resolve()
    assert runs_dir(tmp_path / "x") == (tmp_path / "x").resolve()
    monkeypatch.delenv("MERLION_RUNS_DIR")
    monkeypatch.delenv("MERLION_STUDIO_HOME")
    assert runs_dir() == (cwd / "runs").resolve() and settings.runs_dir() == settings.REPO_ROOT / "runs"
    # the app asks the core's rule, it does not have its own
    monkeypatch.setattr(store_module, "runs_dir", lambda path=None, default="runs": tmp_path / "from-the-core")
    assert settings.runs_dir() == tmp_path / "from-the-core"


# ---------------------------------------------------------------------------------- 4. read-only
def test_read_only_commands_create_nothing(tmp_path, monkeypatch, capsys, no_runs_env):
    monkeypatch.chdir(tmp_path)
    assert main(["jobs", "list"]) == 0
    assert capsys.readouterr().out.strip() == f"no jobs in {tmp_path.resolve() / 'runs'}"
    assert main(["jobs", "list", "--json"]) == 0 and json.loads(capsys.readouterr().out) == []
    for command in (
        ["show", "3"],
        ["show", "3", "--json"],
        ["logs", "3"],
        ["cancel", "3"],
        ["resume", "3", "--no-supervisor"],
    ):
        assert main(["jobs", *command]) == 1, command
        err = capsys.readouterr().err.strip()
        assert err == f"merlion: error: job 3: no such job in {tmp_path.resolve() / 'runs'}", command
    assert main(["jobs", "list", "--runs", str(tmp_path / "elsewhere")]) == 0
    assert "no jobs in" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # nothing written anywhere
    with pytest.raises(store_module.NoJobStore):
        JobStore(tmp_path / "runs", create=False)
    assert list(tmp_path.iterdir()) == []
