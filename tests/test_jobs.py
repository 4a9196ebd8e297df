"""Jobs in one process: specs, the store's state machine, the progress reporter, sweep grids,
checkpoints that resume bit for bit, worker environments."""

import json
import os
import threading

import numpy as np
import pytest
import torch

from merlion_core.checkpoints import CheckpointError, checkpoint_steps
from merlion_core.config import ConfigError
from merlion_core.jobs.processes import is_alive, process_start, worker_env
from merlion_core.jobs.runner import run_job
from merlion_core.jobs.spec import JobSpec, validate, wants_gpu
from merlion_core.jobs.store import JobStateError, JobStore, read_spec_file, runs_dir
from merlion_core.jobs.sweep import expand
from merlion_core.jobs.worker import JobCancelled, Reporter


@pytest.fixture
def store(tmp_path):
    s = JobStore(tmp_path / "runs")
    yield s
    s.close()


def test_spec_validation_fills_defaults_and_fixes_paths(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    spec = validate(JobSpec("train-agent", {"dataset": "data", "algo": "dcql", "steps": 50}, 3))
    assert spec.config["dataset"] == str(tmp_path / "data")  # relative -> absolute at submission
    assert spec.config["eval_episodes"] == 20 and spec.config["checkpoint_every"] == 1000 and spec.seed == 3
    with pytest.raises(ConfigError, match="unknown key.*stpes"):
        validate(JobSpec("train-agent", {"dataset": "data", "stpes": 5}))
    with pytest.raises(FileNotFoundError, match="dataset: .*missing does not exist"):
        validate(JobSpec("train-agent", {"dataset": "missing"}))
    with pytest.raises(ValueError, match="dataset: required"):
        validate(JobSpec("train-encoder", {}))
    with pytest.raises(ValueError, match="options.seed: give the job's seed"):
        validate(JobSpec("train-agent", {"dataset": "data", "options": {"seed": 1}}))
    with pytest.raises(ValueError, match="kind: unknown 'train'"):
        validate(JobSpec("train", {}))
    with pytest.raises(ValueError, match="steps: must be >= 1"):
        validate(JobSpec("train-agent", {"dataset": "data", "steps": 0}))
    with pytest.raises(ValueError, match="seed: must be an integer >= 0"):
        validate(JobSpec("collect", {}, -1))
    assert validate(JobSpec("collect", {"n": 10})).config["env_config"] is None
    assert wants_gpu("train-agent", {"device": "auto"}) and not wants_gpu("train-agent", {"device": "cpu"})
    assert not wants_gpu("collect", {})


def test_store_state_machine(store):
    job = store.submit("collect", {"n": 5}, 1)
    assert store.get(job).status == "queued" and store.job_dir(job).is_dir()
    assert store.claim(job) and not store.claim(job)  # only one launcher gets it
    assert store.get(job).attempts == 1
    assert store.request_cancel(job) == "requested" and store.cancel_requested(job)
    assert store.finish(job, "cancelled", "stopped")
    assert not store.finish(job, "failed", "late")  # a final status is never overwritten
    assert store.get(job).exit_reason == "stopped"
    with pytest.raises(JobStateError, match="already cancelled"):
        store.request_cancel(job)
    store.requeue(job, resume=True)
    again = store.get(job)
    assert (again.status, again.resume, again.cancel_requested_at, again.exit_reason) == ("queued", 1, None, None)
    queued = store.submit("collect", {}, 0)
    assert store.request_cancel(queued) == "cancelled"
    with pytest.raises(JobStateError, match="only failed or cancelled"):
        store.requeue(store.submit("collect", {}, 0), resume=True)
    store.add_metrics(job, 10, {"loss": 1.5, "flag": True, "name": "x", "n": 3})
    store.add_metrics(job, 20, {"loss": 1.0})
    assert [(m["step"], m["name"], m["value"]) for m in store.metrics(job)] == [
        (10, "loss", 1.5),
        (10, "n", 3.0),
        (20, "loss", 1.0),
    ]
    assert store.drop_metrics_after(job, 10) == 1 and len(store.metrics(job)) == 2
    assert [e["event"] for e in store.events() if e["job_id"] == job] == [
        "submit",
        "cancel-requested",
        "cancelled",
        "requeue",
    ]
    assert [j.id for j in store.list("queued")] == [job, 3]
    assert JobStore(store.root).get(job).config == {"n": 5}  # another connection sees it (WAL)
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_runs_folder_and_spec_files(tmp_path, monkeypatch):
    monkeypatch.setenv("MERLION_RUNS_DIR", str(tmp_path / "elsewhere"))
    assert runs_dir() == tmp_path / "elsewhere" and runs_dir(tmp_path / "x") == tmp_path / "x"
    (tmp_path / "a.yaml").write_text("kind: collect\nconfig: {n: 5}\n")
    assert read_spec_file(tmp_path / "a.yaml", "--spec") == {"kind": "collect", "config": {"n": 5}}
    (tmp_path / "b.yaml").write_text("!!python/object/apply:os.system ['true']\n")
    with pytest.raises(ValueError, match="b.yaml: not valid YAML"):
        read_spec_file(tmp_path / "b.yaml", "--spec")  # safe_load: no tags that run code
    with pytest.raises(FileNotFoundError, match="--spec: .*c.json: no such file"):
        read_spec_file(tmp_path / "c.json", "--spec")


def test_reporter_turns_progress_into_metrics_and_cancels(store):
    job = store.submit("collect", {}, 0)
    store.claim(job)
    cancel = threading.Event()
    report = Reporter(store, job, cancel)
    report(100, {"loss": 0.5})  # (step, metrics)
    report({"step": 200, "loss": 0.25, "note": "x"})  # (point,)
    report(10, 50)  # a counter: (done, total)
    report(20, 50)  # within half a second of the last counter row: heartbeat only
    report(50, 50)  # the final count is always stored
    report(50, 50)  # ... once
    rows = [(m["step"], m["name"], m["value"]) for m in store.metrics(job)]
    assert rows == [(100, "loss", 0.5), (200, "loss", 0.25), (10, "progress", 10.0), (50, "progress", 50.0)]
    assert (store.get(job).step, store.get(job).total) == (50, 50)
    cancel.set()
    with pytest.raises(JobCancelled, match="cancelled at step 50"):
        report(60, 100)


def test_sweep_grid_expands_every_combination_once_per_seed():
    sweep = expand(
        {
            "name": "s",
            "kind": "train-agent",
            "config": {"dataset": "d", "options": {"lr": 0.1}},
            "grid": {"algo": ["bc", "dcql"], "options.alpha": [0.5, 1.0]},
            "seeds": [0, 1],
        }
    )
    assert sweep.name == "s" and len(sweep.specs) == 8
    combos = [(s.config["algo"], s.config["options"]["alpha"], s.seed) for s in sweep.specs]
    assert combos == [(a, x, seed) for a in ("bc", "dcql") for x in (0.5, 1.0) for seed in (0, 1)]
    assert all(s.config["options"]["lr"] == 0.1 and s.config["dataset"] == "d" for s in sweep.specs)
    assert expand({"kind": "collect"}, "file").specs == [JobSpec("collect", {}, 0)]
    for bad, message in [
        ({"kind": "x"}, "kind: 'x' is not one of"),
        ({"kind": "collect", "grd": {}}, "unknown key"),
        ({"kind": "collect", "grid": {"n": []}}, "non-empty list"),
        ({"kind": "collect", "seeds": [0.5]}, "list of integers"),
        ({"kind": "collect", "grid": {"n": list(range(101)), "noise": list(range(100))}}, "10100 runs; at most 10000"),
    ]:
        with pytest.raises(ValueError, match=message):
            expand(bad)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from merlion_core.data.collect import collect
    from merlion_core.data.io import save_dataset

    return save_dataset(
        collect("maze", "expert", 0.0, 2000, seed=0, env_overrides={"n_actuators": 6}),
        tmp_path_factory.mktemp("jobs") / "data",
    )


@pytest.mark.parametrize("algo", ["cql"])
def test_resumed_training_equals_uninterrupted_training(algo, tiny_dataset, tmp_path):
    """Stop after the step-40 checkpoint, resume: same weights, optimizer moments and curve as one run."""
    from merlion_core.algos.artifacts import load_agent
    from merlion_core.pipelines.agent import train_agent
    from merlion_core.pipelines.encoder import train_encoder

    torch.set_num_threads(1)
    encoder = None
    if algo == "cql":  # latent CQL also draws its own noise from a generator that must be restored
        encoder = tmp_path / "enc"
        train_encoder(tiny_dataset, "external", encoder)
    kwargs = dict(
        steps=60,
        eval_every=20,
        eval_episodes=1,
        device="cpu",
        encoder_dir=encoder,
        overrides={"hidden": (16, 16), "batch_size": 32},
    )
    full = train_agent(tiny_dataset, algo, tmp_path / "full", **kwargs)

    class Stop(Exception):
        pass

    def stop_at_40(step, point):
        if step == 40:
            raise Stop

    with pytest.raises(Stop):
        train_agent(
            tiny_dataset,
            algo,
            tmp_path / "part",
            progress=stop_at_40,
            checkpoint_dir=tmp_path / "ck",
            checkpoint_every=20,
            **kwargs,
        )
    assert checkpoint_steps(tmp_path / "ck") == [20, 40]  # the last two are kept
    seen = []
    resumed = train_agent(
        tiny_dataset,
        algo,
        tmp_path / "part",
        progress=lambda s, p: seen.append(s),
        checkpoint_dir=tmp_path / "ck",
        checkpoint_every=20,
        resume=True,
        **kwargs,
    )
    assert seen == [60]  # continued at the saved step, not from 0
    a, b = load_agent(tmp_path / "full").agent.state_dict(), load_agent(tmp_path / "part").agent.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["last"] == full["last"]
    curve = json.loads((tmp_path / "part" / "metrics.json").read_text())["curve"]
    assert [p["step"] for p in curve] == [20, 40, 60]
    with pytest.raises(CheckpointError, match="belongs to a different run"):
        train_agent(
            tiny_dataset,
            algo,
            tmp_path / "other",
            checkpoint_dir=tmp_path / "ck",
            checkpoint_every=20,
            resume=True,
            **{**kwargs, "steps": 80},
        )


@pytest.mark.parametrize(
    "method, options",
    [
        ("merlion", {"steps": 60, "log_every": 20, "batch_size": 32, "hidden": 16, "action_embed_dim": 8}),
        ("transition", {"steps": 300, "batch_size": 32}),  # the shared train_loop (reports every 100 steps)
    ],
)
def test_resumed_encoder_training_equals_uninterrupted_training(method, options, tiny_dataset, tmp_path):
    from merlion_core.pipelines.encoder import train_encoder
    from merlion_core.representation.artifacts import load_representation

    torch.set_num_threads(1)
    kwargs = dict(overrides=options, device="cpu")
    every = options.get("log_every", 100)
    train_encoder(tiny_dataset, method, tmp_path / "full", **kwargs)

    class Stop(Exception):
        pass

    def stop(step, metrics):
        if step == 2 * every:
            raise Stop

    with pytest.raises(Stop):
        train_encoder(
            tiny_dataset,
            method,
            tmp_path / "part",
            progress=stop,
            checkpoint_dir=tmp_path / "ck",
            checkpoint_every=every,
            **kwargs,
        )
    assert checkpoint_steps(tmp_path / "ck") == [every, 2 * every]
    seen = []
    train_encoder(
        tiny_dataset,
        method,
        tmp_path / "part",
        progress=lambda step, m: seen.append(step),
        checkpoint_dir=tmp_path / "ck",
        checkpoint_every=every,
        resume=True,
        **kwargs,
    )
    assert seen == [3 * every]  # continued at the saved step (optimizer, schedule, batch stream restored)
    a = load_representation(tmp_path / "full").representation.state_dict()
    b = load_representation(tmp_path / "part").representation.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bench_job_reports_each_finished_run(tiny_dataset, tmp_path):
    calls = []
    config = {
        "env": "maze",
        "methods": ["bc", "dcql"],
        "seeds": 1,
        "steps": 20,
        "options": {"dataset": str(tiny_dataset), "eval_every": 10, "eval_episodes": 2, "workers": 1},
    }
    result = run_job(
        "bench", config, 0, tmp_path / "a", lambda *a, **k: calls.append((a, k)), checkpoint_dir=tmp_path / "c"
    )
    assert set(result["methods"]) == {"bc", "dcql"} and result["methods"]["bc"]["seeds"] == 1
    finished = [a[1]["runs_finished"] for a, _ in calls if len(a) > 1 and isinstance(a[1], dict)]
    assert finished == [1, 2] and all(k.get("total") == 2 for a, k in calls if len(a) > 1 and isinstance(a[1], dict))
    assert (tmp_path / "a" / "bench" / "summary.json").exists()


def test_worker_environment_and_liveness():
    env = worker_env(3, "1", base={"PATH": "/bin", "PYTHONPATH": "/x"})
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == env["MERLION_JOB_THREADS"] == "3"
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    assert env["PYTHONPATH"].split(os.pathsep)[1] == "/x"
    assert worker_env(1, None, base={})["CUDA_VISIBLE_DEVICES"] == ""  # a CPU slot sees no GPU
    me = os.getpid()
    assert is_alive(me, process_start(me)) and not is_alive(me, "0") and not is_alive(None)
    assert not is_alive(2**22 + 12345)


def test_collect_job_runs_in_process(store):
    job = store.submit(
        "collect", validate(JobSpec("collect", {"n": 500, "n_envs": 8, "env_config": {"n_actuators": 6}}, 2)).config, 2
    )
    store.claim(job)
    from merlion_core.jobs.worker import run_worker

    assert run_worker(store, job) == 0
    record = store.get(job)
    assert record.status == "succeeded" and record.result["n_transitions"] == 500
    from merlion_core.data.io import load_dataset

    assert np.all(load_dataset(record.result["dataset"]).actions < 64)


def test_supervisor_hands_out_one_gpu_per_job_and_cpu_slots_to_the_rest(tmp_path, monkeypatch):
    from merlion_core.jobs.supervisor import Supervisor, SupervisorConfig, Worker

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # the GPUs this machine may use
    supervisor = Supervisor(tmp_path / "runs", SupervisorConfig(slots=4))
    assert supervisor.gpus == ["3", "5"] and supervisor.threads >= 1
    started = []

    def fake_start(job_id, gpu):  # record instead of spawning a process
        started.append((job_id, gpu))
        supervisor.workers[job_id] = Worker(0, None, gpu, None)

    monkeypatch.setattr(supervisor, "start_worker", fake_start)
    store = supervisor.store
    gpu_jobs = [store.submit("train-agent", {"device": "auto"}, s) for s in range(3)]
    cpu_job = store.submit("train-agent", {"device": "cpu"}, 0)
    collect_job = store.submit("collect", {}, 0)
    supervisor.launch()
    assert started == [(gpu_jobs[0], "3"), (gpu_jobs[1], "5"), (cpu_job, None), (collect_job, None)]
    assert store.get(gpu_jobs[2]).status == "queued"  # waits for a GPU; the CPU jobs behind it went ahead
    del supervisor.workers[gpu_jobs[0]]
    supervisor.launch()
    assert started[-1] == (gpu_jobs[2], "3")
    supervisor.store.close()
