"""The ``warm-start`` and ``umap`` job kinds and the UMAP projection (merlion_core.projection).

Tests that call UMAP are marked slow: umap-learn's first call in a process compiles numba code
for 30-50 s. Everything else (specs, validation, the artifact format, the warm-start kind through
the runner) is in the default suite.
"""

import json

import numpy as np
import pytest
import torch

from merlion_core.config import from_dict, to_dict
from merlion_core.jobs.runner import run_job
from merlion_core.jobs.spec import KINDS, JobSpec, UmapJob, WarmStartJob, validate
from merlion_core.jobs.store import JobStore
from merlion_core.jobs.worker import run_worker
from merlion_core.projection import load_projection, save_projection, umap_projection
from merlion_core.representation.artifacts import latest_frame, load_representation


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 64-action maze dataset, a small MERLION encoder (d = 4) and a Rand-1 encoder (d = 3)."""
    from merlion_core.data.collect import collect
    from merlion_core.data.io import save_dataset
    from merlion_core.pipelines.encoder import train_encoder

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("embedding-jobs")
    data = save_dataset(collect("maze", "medium", 0.5, 2000, seed=0, env_overrides={"n_actuators": 6}), root / "data")
    merlion = train_encoder(
        data,
        "merlion",
        root / "merlion",
        device="cpu",
        overrides={"steps": 20, "batch_size": 32, "hidden": 16, "action_embed_dim": 8, "dim": 4},
    )
    rand = train_encoder(data, "rand1", root / "rand1", overrides={"dim": 3})
    return {"dataset": str(data), "merlion": merlion["out"], "rand1": rand["out"], "root": root}


# ---------------------------------------------------------------------------- specs (no UMAP)
def test_specs_round_trip_and_validate(tiny):
    for kind, config in (
        ("umap", {"encoder": tiny["rand1"], "rows": [3, 7], "n_neighbors": 5}),
        ("warm-start", {"encoder": tiny["merlion"], "p": 1, "state": [0.5, 0.5, 0.0]}),
    ):
        spec = validate(JobSpec(kind, config, 2))
        parsed = from_dict(KINDS[kind], json.loads(json.dumps(spec.config)))
        assert to_dict(parsed) == spec.config and spec.seed == 2
    umap = from_dict(UmapJob, validate(JobSpec("umap", {"encoder": tiny["rand1"]})).config)
    assert (umap.rows, umap.n_neighbors, umap.min_dist, umap.dataset) == ((0,), 15, 0.1, None)
    warm = from_dict(WarmStartJob, validate(JobSpec("warm-start", {"encoder": tiny["merlion"], "p": 1})).config)
    assert warm.p == 1.0 and isinstance(warm.p, float) and warm.save_encoder and warm.state == ()
    for kind, config, message in [
        ("umap", {"encoder": tiny["rand1"], "rows": []}, "rows: need at least one"),
        ("umap", {"encoder": tiny["rand1"], "rows": [-1]}, "rows: need at least one dataset row index >= 0"),
        ("umap", {"encoder": tiny["rand1"], "n_neighbors": 1}, "n_neighbors: must be >= 2, got 1"),
        ("umap", {"encoder": tiny["rand1"], "min_dist": float("nan")}, "min_dist: must be >= 0, got nan"),
        ("umap", {"encoder": tiny["rand1"], "nneighbors": 5}, "unknown key"),
        ("umap", {}, "encoder: required"),
        ("umap", {"encoder": str(tiny["root"] / "missing")}, "encoder: .*missing does not exist"),
        ("warm-start", {"encoder": tiny["merlion"], "tau": 1.5}, "tau: must be <= 1, got 1.5"),
        ("warm-start", {"encoder": tiny["merlion"], "p": -0.1}, "p: must be >= 0"),
        ("warm-start", {"encoder": tiny["merlion"], "frame_every": 0}, "frame_every: must be >= 1"),
    ]:
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            validate(JobSpec(kind, config))


def test_cli_submits_both_kinds(tiny, tmp_path, capsys):
    from merlion_core.cli.main import main

    runs = tmp_path / "runs"
    for kind, config in (
        ("umap", {"encoder": tiny["rand1"], "rows": [1]}),
        ("warm-start", {"encoder": tiny["merlion"]}),
    ):
        assert (
            main(
                [
                    "jobs",
                    "submit",
                    kind,
                    "--config",
                    json.dumps(config),
                    "--seed",
                    "4",
                    "--no-supervisor",
                    "--runs",
                    str(runs),
                ]
            )
            == 0
        )
    assert (
        main(
            [
                "jobs",
                "submit",
                "umap",
                "--config",
                json.dumps({"encoder": tiny["rand1"], "min_dist": -1}),
                "--no-supervisor",
                "--runs",
                str(runs),
            ]
        )
        == 1
    )
    assert "min_dist: must be >= 0" in capsys.readouterr().err
    store = JobStore(runs)
    jobs = store.list("queued")
    store.close()
    assert [(j.kind, j.seed, j.backend) for j in jobs] == [("umap", 4, "local"), ("warm-start", 4, "local")]
    assert jobs[0].config["rows"] == [1] and jobs[1].config["p"] == 0.01


def test_projection_archive_round_trip_and_errors(tmp_path):
    coords = np.arange(24, dtype=np.float32).reshape(2, 6, 2)
    path = save_projection(tmp_path / "p", coords, np.array([5, 9]), {"n_neighbors": 4})
    loaded, rows, config = load_projection(tmp_path / "p")
    np.testing.assert_array_equal(loaded, coords)
    assert rows.tolist() == [5, 9] and config == {"n_neighbors": 4} and path.name == "umap.npz"
    np.savez(tmp_path / "bad.npz", coords=np.zeros((2, 6, 3), np.float32), rows=np.arange(2))
    with pytest.raises(ValueError, match="bad.npz: coords must be float32 \\[R, A, 2\\]"):
        load_projection(tmp_path / "bad.npz")
    np.savez(tmp_path / "obj.npz", coords=np.array([{"a": 1}], dtype=object), rows=np.arange(1))
    with pytest.raises(ValueError, match="obj.npz: not a projection archive"):
        load_projection(tmp_path / "obj.npz")  # object arrays are never unpickled
    with pytest.raises(ValueError, match="coords must be \\[R, A, 2\\] with R = 3"):
        save_projection(tmp_path / "q", coords, np.arange(3), {})


@pytest.mark.parametrize(
    "points, kwargs, message",
    [
        (np.zeros(10), {}, "must be a 2-D array"),
        (np.zeros((5, 3)), {"n_neighbors": 5}, "5 points; need at least n_neighbors \\+ 1 = 6"),
        (np.where(np.arange(30).reshape(10, 3) == 13, np.nan, 1.0), {"n_neighbors": 4}, "row 4 is not"),
        (np.zeros((10, 3)), {"n_neighbors": 4}, "1 distinct points; need at least n_neighbors \\+ 1 = 5"),
        (np.zeros((10, 3)), {"n_neighbors": 1}, "n_neighbors must be an integer >= 2"),
        (np.zeros((10, 3)), {"n_neighbors": 4, "min_dist": -0.5}, "min_dist must be a finite number >= 0"),
        (np.array([["a", "b"]] * 10), {"n_neighbors": 4}, "must be real numbers"),
    ],
)
def test_umap_projection_rejects_bad_input_before_importing_umap(points, kwargs, message):
    with pytest.raises(ValueError, match=message):
        umap_projection(points, **kwargs)


# ---------------------------------------------------------------------------- warm-start kind
def _weights(path: str) -> torch.Tensor:
    encoder = load_representation(path).representation.encoder
    assert isinstance(encoder, torch.nn.Module)
    return torch.cat([p.detach().flatten() for p in encoder.parameters()])


def test_warm_start_kind_through_the_worker_changes_the_encoder_and_p_matters(tiny, tmp_path):
    torch.set_num_threads(1)
    store = JobStore(tmp_path / "runs")
    state = [0.2, 0.3, 0.0]  # tau = 1: every action but the most likely one is out of distribution, so p acts
    ids = [
        store.submit(
            "warm-start",
            validate(
                JobSpec(
                    "warm-start",
                    {"encoder": tiny["merlion"], "p": p, "tau": 1.0, "steps": 10, "frame_every": 5, "state": state},
                    1,
                )
            ).config,
            1,
        )
        for p in (0.0, 1.0)
    ]
    for job_id in ids:
        assert store.claim(job_id)
        assert run_worker(store, job_id, threads=1) == 0
    records = [store.get(job_id) for job_id in ids]
    assert [r.status for r in records] == ["succeeded", "succeeded"] and (records[0].step, records[0].total) == (10, 10)
    assert {m["step"] for m in store.metrics(ids[0])} >= {5, 10}  # the frames' losses, as metric rows
    before = _weights(tiny["merlion"])
    after = [_weights(r.result["encoder"]) for r in records]
    assert (after[0] - before).abs().max() > 1e-5  # the warm start trained the encoder
    assert (after[1] - after[0]).abs().max() > 1e-6  # and p changes what it learns
    frames = store.artifacts_dir(ids[1]) / "frames"
    assert sorted(f.name for f in frames.glob("step-*.npy")) == [
        "step-000000.npy",
        "step-000005.npy",
        "step-000010.npy",
    ]
    rep = load_representation(records[1].result["encoder"])
    with torch.no_grad():
        final = rep.representation.embed_all(torch.tensor([state]))[0].numpy()
    step, frame = latest_frame(frames)
    assert step == 10 and frame.shape == (64, 4) and np.allclose(frame, final, atol=1e-6)  # last frame = saved encoder
    assert rep.config.p == 1.0 and rep.info["warm_start"]["from"] == tiny["merlion"]
    store.close()


def test_warm_start_kind_refuses_other_encoders_and_bad_states(tiny, tmp_path):
    progress = lambda *a, **k: None  # noqa: E731
    with pytest.raises(ValueError, match="warm starts need a MERLION encoder, got rand1"):
        run_job("warm-start", {"encoder": tiny["rand1"]}, 0, tmp_path / "a", progress, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="state must be 3 finite numbers .* got 2"):
        run_job(
            "warm-start",
            {"encoder": tiny["merlion"], "state": [0.1, 0.2]},
            0,
            tmp_path / "b",
            progress,
            checkpoint_dir=tmp_path,
        )


def test_umap_kind_checks_rows_before_projecting(tiny, tmp_path):
    with pytest.raises(ValueError, match="rows: every row must be in 0..1999 .* got \\[2000\\]"):
        run_job(
            "umap",
            {"encoder": tiny["rand1"], "rows": [2000]},
            0,
            tmp_path / "a",
            lambda *a, **k: None,
            checkpoint_dir=tmp_path,
        )


# ---------------------------------------------------------------------------- UMAP itself (slow)
def _two_clusters(n: int = 40, d: int = 10, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0.0, 1.0, (n, d)), rng.normal(8.0, 1.0, (n, d))]).astype(np.float32)


def separation(xy: np.ndarray, labels: np.ndarray) -> float:
    """Least distance between points of different clusters / largest distance inside one cluster."""
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    same = labels[:, None] == labels[None]
    return float(d[~same].min() / d[same].max())


@pytest.mark.slow
def test_umap_projection_is_deterministic_and_keeps_clusters_apart():
    points = _two_clusters()
    labels = np.repeat([0, 1], 40)
    xy = umap_projection(points, n_neighbors=10, min_dist=0.1, seed=3)
    assert xy.shape == (80, 2) and xy.dtype == np.float32 and np.isfinite(xy).all()
    np.testing.assert_array_equal(xy, umap_projection(points, n_neighbors=10, min_dist=0.1, seed=3))
    assert not np.array_equal(xy, umap_projection(points, n_neighbors=10, min_dist=0.1, seed=4))
    assert separation(xy, labels) > 1.0  # every cross-cluster gap beats every within-cluster spread
    shuffled = np.random.default_rng(0).permutation(len(points))  # a broken (label-blind) view fails it
    assert separation(xy, labels[shuffled]) < 0.1
    repeated = np.concatenate([points, points[:5]])  # copies: one place each, the same on every run
    xy_repeated = umap_projection(repeated, n_neighbors=10, seed=3)
    np.testing.assert_array_equal(xy_repeated[80:], xy_repeated[:5])
    np.testing.assert_array_equal(xy_repeated, umap_projection(repeated, n_neighbors=10, seed=3))


@pytest.mark.slow
def test_umap_kind_through_the_worker_writes_coordinates(tiny, tmp_path):
    store = JobStore(tmp_path / "runs")
    config = validate(JobSpec("umap", {"encoder": tiny["rand1"], "rows": [0, 5], "n_neighbors": 8}, 7)).config
    job_id = store.submit("umap", config, 7)
    assert store.claim(job_id) and run_worker(store, job_id, threads=1) == 0
    job = store.get(job_id)
    assert job.status == "succeeded" and (job.step, job.total) == (2, 2)
    assert [m["value"] for m in store.metrics(job_id, "points")] == [128.0]
    coords, rows, saved = load_projection(job.result["projection"])
    assert coords.shape == (2, 64, 2) and rows.tolist() == [0, 5]
    assert saved["n_neighbors"] == 8 and saved["seed"] == 7 and saved["dim"] == 3 and saved["method"] == "rand1"
    from merlion_core.data.io import load_dataset

    obs = np.asarray(load_dataset(tiny["dataset"]).observations)[[0, 5]]
    with torch.no_grad():
        e = load_representation(tiny["rand1"]).representation.embed_all(torch.as_tensor(obs)).numpy()
    np.testing.assert_array_equal(coords.reshape(-1, 2), umap_projection(e.reshape(-1, 3), n_neighbors=8, seed=7))
    store.close()
