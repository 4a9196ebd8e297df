"""A 2 x 2 sweep on a local Ray with num_cpus=2: the runs land in the same store as local jobs."""

import pytest

from merlion_core.jobs.store import JobStore
from merlion_core.jobs.sweep import expand

pytestmark = pytest.mark.slow

SWEEP = {
    "name": "ray-2x2",
    "kind": "collect",
    "config": {"env": "maze", "noise": 0.0, "n": 2000, "n_envs": 64, "env_config": {"n_actuators": 6}},
    "grid": {"behaviour": ["expert", "random"]},
    "seeds": [0, 1],
}


def test_two_by_two_sweep_on_a_local_ray(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (optional extra: pip install 'ray[default]==2.60.0')")
    from merlion_core.data.io import load_dataset
    from merlion_core.jobs.ray_backend import RayBackend

    store = JobStore(tmp_path / "runs")
    try:
        backend = RayBackend(store, num_cpus=2)
    except Exception as exc:  # a machine where Ray cannot start its processes
        pytest.skip(f"Ray cannot start here: {str(exc).splitlines()[0]}")
    try:
        assert ray.cluster_resources()["CPU"] == 2
        sweep = expand(SWEEP)
        ids = [backend.submit(spec, sweep=sweep.name) for spec in sweep.specs]
        records = backend.wait(ids, timeout=300)
    finally:
        backend.close()
    assert [r.status for r in records] == ["succeeded"] * 4, [r.exit_reason for r in records]
    assert all(r.backend == "ray" and r.sweep == "ray-2x2" and r.attempts == 1 for r in records)
    assert [(r.config["behaviour"], r.seed) for r in records] == [
        ("expert", 0),
        ("expert", 1),
        ("random", 0),
        ("random", 1),
    ]
    # metrics, heartbeats and logs flowed into the store exactly as for local jobs
    for r in records:
        assert store.metrics(r.id, "progress")[-1]["step"] == 2000 and r.heartbeat >= r.started_at
        assert f"job {r.id}: succeeded" in store.log_path(r.id).read_text()
    # never more than num_cpus=2 at once (each task takes 1 CPU), measured by the workers themselves
    edges = sorted([(r.started_at, 1) for r in records] + [(r.finished_at, -1) for r in records])
    running, peak = 0, 0
    for _, delta in edges:
        running += delta
        peak = max(peak, running)
    assert peak <= 2
    # the seeds made different data, the behaviours different returns
    data = {(r.config["behaviour"], r.seed): load_dataset(r.result["dataset"]) for r in records}
    assert not (data["expert", 0].actions == data["expert", 1].actions).all()
    assert data["expert", 0].rewards.sum() > data["random", 0].rewards.sum()
