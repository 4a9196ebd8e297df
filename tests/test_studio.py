"""The app layer's plain-Python parts: PNG, uploads, chains (the demo), curves, the explorer's
numerics, the warm-start adapter, and the layering rule (only three studio modules touch streamlit)."""

from __future__ import annotations

import ast
import io
import struct
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from studio import explore, png, uploads

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- layering
def test_only_the_ui_modules_import_streamlit_and_the_core_never_imports_the_app():
    ui = {"page", "loaders", "forms", "navigation"}
    for path in sorted((ROOT / "studio").glob("*.py")):
        names = {
            n.module if isinstance(n, ast.ImportFrom) else a.name
            for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, (ast.Import, ast.ImportFrom))
            for a in (n.names if isinstance(n, ast.Import) else [n])
        }
        uses_streamlit = any(str(name).startswith("streamlit") for name in names)
        assert uses_streamlit == (path.stem in ui), f"studio/{path.name}: streamlit import is {uses_streamlit}"
    for path in (ROOT / "merlion_core").rglob("*.py"):
        assert "import studio" not in path.read_text() and "from studio" not in path.read_text(), path


# ---------------------------------------------------------------------------- PNG
def _decode_png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos = 8
    chunks: dict[bytes, bytes] = {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF
        chunks[tag] = chunks.get(tag, b"") + body
        pos += 12 + length
    w, h, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 2)
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(h, 1 + 3 * w)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(h, w, 3)


def test_png_holds_the_colour_mapped_matrix():
    m = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, np.nan]])
    pixels = _decode_png(png.matrix_png(m))
    assert pixels.shape == (2, 3, 3)
    np.testing.assert_array_equal(pixels[0, 0], [68, 1, 84])  # min -> first viridis colour
    np.testing.assert_array_equal(pixels[1, 1], [253, 231, 37])  # max -> last
    np.testing.assert_array_equal(pixels[1, 2], [0, 0, 0])  # NaN -> black
    np.testing.assert_array_equal(pixels[0, 2], png.VIRIDIS[int(0.5 * 255)])


# ---------------------------------------------------------------------------- uploads
@pytest.mark.parametrize(
    "name, expected",
    [
        ("../../etc/pa sswd.npz", "pa_sswd.npz"),
        ("..", "dataset"),
        ("ü.h5", "dataset.h5"),
        ("C:\\x\\d4rl run.hdf5", "d4rl_run.hdf5"),
    ],
)
def test_safe_names(name, expected):
    assert uploads.safe_name(name) == expected


def test_uploads_never_overwrite(tmp_path):
    (tmp_path / "a.npz").write_bytes(b"1")
    (tmp_path / "a-2.npz").write_bytes(b"2")
    assert uploads.unique_path(tmp_path, "a.npz").name == "a-3.npz"


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize(
    "members, message",
    [
        ({"../evil/metadata.json": b"{}"}, "parent or link paths"),
        ({"data/main_data.hdf5": b"x"}, "no metadata.json"),
    ],
)
def test_minari_zip_limits(tmp_path, members, message):
    archive = tmp_path / "up.zip"
    archive.write_bytes(_zip(members))
    with pytest.raises(uploads.UploadError, match=message):
        uploads.extract_minari_zip(archive, tmp_path / "out", 10**6)
    assert not (tmp_path / "evil").exists()


def test_minari_zip_round_trip_through_the_core(tmp_path, monkeypatch):
    """A Minari dataset written by the core, zipped, uploaded: unpacked, validated, summarised."""
    from merlion_core.data.dataset import from_arrays
    from merlion_core.data.io import save_dataset

    monkeypatch.setenv("MERLION_STUDIO_HOME", str(tmp_path))
    n = 12
    obs = np.stack([np.arange(n), np.zeros(n)], 1).astype(np.float32)
    ds = from_arrays(
        dict(
            observations=obs,
            actions=np.arange(n) % 7,
            rewards=np.ones(n, np.float32),
            next_observations=obs + np.array([1, 0], np.float32),
            terminals=np.arange(n) % 6 == 5,
            timeouts=np.zeros(n, bool),
        ),
        n_actions=7,
    )
    folder = save_dataset(ds, tmp_path / "src" / "maze-test-v0", format="minari")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in folder.rglob("*"):
            if f.is_file():
                zf.write(f, f.relative_to(folder.parent))
    saved = uploads.save_and_check("maze test.zip", buf.getvalue())
    assert saved.format == "minari" and saved.summary["n_transitions"] == n and saved.summary["n_episodes"] == 2
    assert saved.path.is_relative_to(tmp_path / "data" / "uploads")


# ---------------------------------------------------------------------------- chains and the demo
def test_demo_chain_submits_each_step_when_its_input_succeeded(tmp_path, monkeypatch):
    import merlion_core.jobs.backend as backend
    from studio import chains, jobs_client, settings

    monkeypatch.setenv("MERLION_STUDIO_HOME", str(tmp_path))
    monkeypatch.setattr(backend, "ensure_supervisor", lambda *a, **k: 0)
    chain = chains.ensure_demo()
    assert chains.status(chain) == "building"
    collect = jobs_client.jobs()[0]
    assert (collect.kind, collect.config["n"], collect.config["behaviour"], collect.sweep) == (
        "collect",
        settings.DEMO_TRANSITIONS,
        "medium",
        "studio:demo",
    )
    assert chains.load("demo").steps[1].job is None  # the encoder waits for the dataset
    assert chains.ensure_demo().steps[0].job == collect.id  # idempotent: no second collect job
    dataset = tmp_path / "ds"
    dataset.mkdir()
    with jobs_client.open_store() as store:  # what the worker would do
        store.claim(collect.id)
        store.finish(collect.id, "succeeded", None, {"dataset": str(dataset)})
    chain = chains.advance("demo")
    encoder = jobs_client.get(chain.steps[1].job)
    assert encoder.kind == "train-encoder" and encoder.config["dataset"] == str(dataset)
    assert encoder.config["options"] == {"steps": settings.DEMO_ENCODER_STEPS, "batch_size": settings.DEMO_BATCH}
    assert chain.steps[2].job is None  # the agent waits for the MERLION encoder
    baseline = jobs_client.get(chain.steps[3].job)  # the side-by-side encoder needs only the dataset
    assert baseline.kind == "train-encoder" and baseline.config["method"] == "transition"
    with jobs_client.open_store() as store:
        store.claim(encoder.id)
        store.finish(encoder.id, "failed", "boom")
    assert chains.status(chains.advance("demo")) == "failed"


def test_demo_is_not_started_when_switched_off(tmp_path, monkeypatch):
    from studio import chains, jobs_client

    monkeypatch.setenv("MERLION_STUDIO_HOME", str(tmp_path))
    monkeypatch.setenv("MERLION_STUDIO_DEMO", "0")
    assert chains.ensure_demo() is None and jobs_client.jobs() == []


# ---------------------------------------------------------------------------- curves
def test_mean_ci95_by_hand():
    from studio.curves import mean_ci95

    mean, low, high = mean_ci95(np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 10.0]]))
    half = 4.302652729911275 * 2.0 / np.sqrt(3)  # t_{0.975, 2} * sd / sqrt(n), sd of (1, 3, 5) = 2
    np.testing.assert_allclose(mean, [3.0, 10.0])
    np.testing.assert_allclose(high - mean, [half, 0.0])
    np.testing.assert_allclose(mean - low, [half, 0.0])


# ---------------------------------------------------------------------------- explorer numerics
def test_pca_projection_orders_axes_by_variance_and_keeps_2d():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(500, 3)).astype(np.float32) * np.array([5.0, 0.1, 1.0], np.float32)
    proj = explore.pca_projection(e)
    assert abs(proj.axes[0, 0]) > 0.99 and abs(proj.axes[2, 1]) > 0.99  # big axis first, then the middle one
    assert proj.explained[0] > 0.9 and proj(e).shape == (500, 2) and proj(e).dtype == np.float32
    flat = rng.normal(size=(10, 2)).astype(np.float32)
    np.testing.assert_array_equal(explore.pca_projection(flat)(flat), flat)


def test_ordered_actions_groups_classes():
    classes = np.array([2, 0, 1, 0, 2, 1])
    np.testing.assert_array_equal(explore.ordered_actions(6, classes, 10, np.random.default_rng(0)), [1, 3, 2, 5, 0, 4])
    subset = explore.ordered_actions(6, classes, 4, np.random.default_rng(0))
    assert len(set(subset)) == 4 and (np.diff(classes[subset]) >= 0).all()


def test_action_meanings_spell_actuators_and_plans():
    from merlion_core.envs import make_model

    maze = explore.action_info(make_model("maze", {"n_actuators": 4}))
    assert list(maze.customdata[5, :2]) == [5, "0101"]  # actions 5 = actuators 1 and 3 on
    plans = explore.action_info(make_model("multistep-maze", {"plan_length": 2, "max_time_steps": 60}))
    assert plans.customdata[1 * 4 + 3, 1] == "RL"  # plan 7 = right then left (net move 0)
    assert plans.customdata[7, 2] == 0 and plans.customdata[7, 3] == 0


def test_true_q_is_reward_plus_discounted_value():
    from merlion_core.envs import make_model

    model = make_model("maze", {"n_actuators": 4})
    table = explore.planner_table(model)
    state = np.array([0.26, 0.46, 0.0], np.float32)  # next to the goal square
    q = explore.true_q(model, table, state)
    step = model.true_step(np.repeat(state[None], 16, 0), np.arange(16))
    expected = step.rewards + 0.99 * (~step.terminated) * table.interpolate(step.next_states)
    np.testing.assert_allclose(q, expected, rtol=1e-6)
    assert step.terminated.any() and q[step.terminated].min() > q[~step.terminated].max()  # reaching the goal wins


def test_q_values_of_a_discrete_critic_are_its_q_head():
    import torch

    from merlion_core.algos.registry import make_algorithm

    agent = make_algorithm("dcql", 8, 3, None, "cpu")
    obs = np.array([0.1, 0.2, 0.0], np.float32)
    with torch.no_grad():
        expected = agent.q(torch.as_tensor(obs[None]))[0].numpy()
    np.testing.assert_array_equal(explore.q_values(agent, "dcql", obs, np.zeros((8, 2), np.float32)), expected)
    assert explore.q_values(make_algorithm("bc", 8, 3, None, "cpu"), "bc", obs, np.zeros((8, 2))) is None


def test_q_values_of_decqn_and_discrete_iql_are_their_flat_action_values():
    import torch

    from merlion_core.algos.registry import make_algorithm

    obs = np.array([0.1, 0.2, 0.0], np.float32)
    decqn = make_algorithm("decqn-cql", 8, 3, {"action_factors": (2, 4), "hidden": (8,)}, "cpu")
    with torch.no_grad():
        u = decqn.layout.split(decqn.u(torch.as_tensor(obs[None])))[0].numpy()  # [K=2, N=4], head 0 padded
    expected = [(u[0, a // 4] + u[1, a % 4]) / 2 for a in range(8)]  # big-endian: a = 4 a_0 + a_1
    np.testing.assert_allclose(explore.q_values(decqn, "decqn-cql", obs, np.zeros((8, 2))), expected, rtol=1e-6)
    iql = make_algorithm("diql", 8, 3, {"hidden": (8,)}, "cpu")
    with torch.no_grad():
        q1, q2 = iql.q.q1(torch.as_tensor(obs[None]))[0], iql.q.q2(torch.as_tensor(obs[None]))[0]
    np.testing.assert_allclose(explore.q_values(iql, "diql", obs, np.zeros((8, 2))), torch.minimum(q1, q2).numpy())


def test_q_values_of_a_latent_critic_see_the_agents_normalised_latents():
    import torch

    from merlion_core.algos.registry import make_algorithm
    from merlion_core.data.collect import collect
    from merlion_core.representation.random_embeddings import Rand1Config, fit_rand1

    data = collect("maze", "medium", 0.5, 300, seed=0, env_overrides={"n_actuators": 3})
    rep, _ = fit_rand1(data, Rand1Config(dim=2), device="cpu")
    agent = make_algorithm("cql", 8, data.obs_dim, {"hidden": (8,)}, "cpu", rep)
    e = rep.embed_all(torch.as_tensor(data.observations[:1]))[0]
    agent.fit_latent_bound(e * 3.0)  # a map that is not the identity: centre 0, half-width 3.3 max |e|
    with torch.no_grad():
        x = (e - agent.latent_center) / agent.latent_scale
        expected = agent.critic(torch.as_tensor(data.observations[:1]).expand(8, -1), x).min(0).values.numpy()
    np.testing.assert_allclose(explore.q_values(agent, "cql", data.observations[0], e.numpy()), expected, rtol=1e-6)


# ---------------------------------------------------------------------------- warm-start adapter
def test_warm_start_submission_supersedes_older_jobs(tmp_path, monkeypatch):
    from studio import jobs_client, warmstart

    monkeypatch.setenv("MERLION_STUDIO_HOME", str(tmp_path))
    monkeypatch.setattr(warmstart, "ensure_worker", lambda: 0)
    (tmp_path / "enc").mkdir()
    (tmp_path / "ds").mkdir()
    job = warmstart.WarmStartJob(
        encoder=str(tmp_path / "enc"), dataset=str(tmp_path / "ds"), p=0.1, state=(0.1, 0.2, 0.0)
    )
    first = warmstart.submit(job)
    second = warmstart.submit(job)
    assert jobs_client.get(first).status == "cancelled" and jobs_client.get(second).status == "queued"
    assert jobs_client.get(second).backend == "studio"
    with pytest.raises(ValueError, match="tau"):
        warmstart.submit(warmstart.WarmStartJob(encoder=job.encoder, dataset=job.dataset, tau=2.0))
    frames = warmstart.frames_dir(second)
    warmstart.write_frame(frames, 10, np.ones((4, 2)))
    warmstart.write_frame(frames, 20, np.full((4, 2), 2.0))
    step, frame = warmstart.latest_frame(second)
    assert step == 20 and frame.dtype == np.float32 and (frame == 2.0).all()


def test_a_session_supersedes_only_its_own_warm_starts(tmp_path, monkeypatch):
    from studio import jobs_client, warmstart, warmstart_worker

    monkeypatch.setenv("MERLION_STUDIO_HOME", str(tmp_path))
    monkeypatch.setattr(warmstart, "ensure_worker", lambda: 0)
    (tmp_path / "enc").mkdir()
    (tmp_path / "ds").mkdir()
    job = warmstart.WarmStartJob(encoder=str(tmp_path / "enc"), dataset=str(tmp_path / "ds"), p=0.1)
    a1 = warmstart.submit(job, session="a")
    b1 = warmstart.submit(job, session="b")
    a2 = warmstart.submit(job, session="a")
    assert [jobs_client.get(i).status for i in (a1, b1, a2)] == ["cancelled", "queued", "queued"]
    b2 = warmstart.submit(job, session="b")
    with jobs_client.open_store() as store:
        # the worker runs each session's newest, the longest-waiting session first
        assert warmstart_worker.newest_queued(store).id == a2
        assert [store.get(i).status for i in (b1, b2)] == ["cancelled", "queued"]


def test_follow_draws_the_last_frame_of_a_finished_job(tmp_path, monkeypatch):
    from studio import jobs_client, warmstart

    monkeypatch.setenv("MERLION_STUDIO_HOME", str(tmp_path))
    monkeypatch.setattr(warmstart, "ensure_worker", lambda: 0)
    (tmp_path / "enc").mkdir()
    (tmp_path / "ds").mkdir()
    job_id = warmstart.submit(
        warmstart.WarmStartJob(
            encoder=str(tmp_path / "enc"), dataset=str(tmp_path / "ds"), steps=20, state=(0.0, 0.0, 0.0)
        )
    )
    base = np.zeros((3, 2), np.float32)
    drawn, captions = [], []
    warmstart.follow(job_id, base, lambda e, text: drawn.append((e.copy(), text)), captions.append)
    assert drawn[0][1] == f"warm start job #{job_id}: queued" and (drawn[0][0] == base).all()  # nothing yet
    for step in (10, 20):
        warmstart.write_frame(warmstart.frames_dir(job_id), step, np.full((3, 2), step, np.float32))
    with jobs_client.open_store() as store:
        store.claim(job_id, backend="studio")
        store.finish(job_id, "succeeded", None, {})
    drawn.clear()
    warmstart.follow(job_id, base, lambda e, text: drawn.append((e.copy(), text)), captions.append)
    assert len(drawn) == 1 and (drawn[0][0] == 20).all() and "step 20/20, succeeded" in drawn[0][1]


def test_follow_draws_a_short_job_once_and_streams_a_long_one(tmp_path, monkeypatch):
    """A job that finishes within FIRST_DRAW_WAIT is drawn once, at its last frame (each redraw
    remounts the chart in the browser); a longer one shows its newest frame, then the last."""
    import threading

    from studio import jobs_client, warmstart

    monkeypatch.setenv("MERLION_STUDIO_HOME", str(tmp_path))
    monkeypatch.setattr(warmstart, "ensure_worker", lambda: 0)
    monkeypatch.setattr(warmstart, "worker_pid", lambda: 1)  # a worker serves the jobs (this test's thread)
    (tmp_path / "enc").mkdir()
    (tmp_path / "ds").mkdir()
    base = np.zeros((3, 2), np.float32)

    def run_job(steps: int, seconds_per_frame: float) -> tuple[list, list]:
        job_id = warmstart.submit(
            warmstart.WarmStartJob(
                encoder=str(tmp_path / "enc"), dataset=str(tmp_path / "ds"), steps=steps, state=(0.0, 0.0, 0.0)
            )
        )
        with jobs_client.open_store() as store:
            store.claim(job_id, backend="studio")

        def worker() -> None:
            for step in range(10, steps + 1, 10):
                time.sleep(seconds_per_frame)
                warmstart.write_frame(warmstart.frames_dir(job_id), step, np.full((3, 2), step, np.float32))
            with jobs_client.open_store() as store:
                store.finish(job_id, "succeeded", None, {})

        thread = threading.Thread(target=worker)
        thread.start()
        drawn: list[tuple[np.ndarray, str]] = []
        captions: list[str] = []
        warmstart.follow(job_id, base, lambda e, text: drawn.append((e.copy(), text)), captions.append)
        thread.join()
        return drawn, captions

    drawn, _ = run_job(20, 0.02)  # done in ~0.05 s < FIRST_DRAW_WAIT
    assert len(drawn) == 1 and (drawn[0][0] == 20).all() and "step 20/20, succeeded" in drawn[0][1]
    drawn, _ = run_job(60, 0.2)  # ~1.2 s: frames stream in
    assert len(drawn) >= 2 and (drawn[-1][0] == 60).all() and "step 60/60, succeeded" in drawn[-1][1]
    assert drawn[0][0][0, 0] < 60 and [e[0, 0] for e, _ in drawn] == sorted(e[0, 0] for e, _ in drawn)


def test_recommender_actions_are_videos_grouped_by_type():
    from merlion_core.envs import make_model

    model = make_model("recommender")
    info = explore.action_info(model)
    assert not explore.has_true_model(model) and explore.has_true_model(make_model("maze", {"n_actuators": 3}))
    np.testing.assert_array_equal(info.classes, model.catalogue.types)
    assert list(info.customdata[7, :2]) == [7, model.catalogue.types[7]] and "type" in info.hovertemplate
    order = explore.ordered_actions(model.n_actions, info.classes, 2000, np.random.default_rng(0))
    assert (np.diff(model.catalogue.types[order]) >= 0).all()


# ---------------------------------------------------------------------------- UMAP jobs
def test_umap_requests_are_cached_in_the_store_and_failed_ones_run_again(tmp_path, monkeypatch):
    import merlion_core.jobs.backend as backend
    from merlion_core.projection import save_projection
    from studio import jobs_client, projections

    monkeypatch.setenv("MERLION_STUDIO_HOME", str(tmp_path))
    monkeypatch.setattr(backend, "ensure_supervisor", lambda *a, **k: 0)
    (tmp_path / "enc").mkdir()
    (tmp_path / "ds").mkdir()
    request = projections.Request(str(tmp_path / "enc"), str(tmp_path / "ds"), row=4, n_neighbors=10)
    assert projections.latest(request) is None and not projections.running(request)
    first = projections.submit(request)
    assert projections.submit(request) == first and projections.running(request)  # queued: the same job
    other = projections.submit(
        projections.Request(request.encoder, request.dataset, row=4, n_neighbors=10, min_dist=0.5)
    )
    assert other != first and projections.latest(request).id == first  # other settings: another job
    with jobs_client.open_store() as store:
        store.claim(first)
        store.finish(first, "failed", "ValueError: boom")
    again = projections.submit(request)  # a failed job is not a cached result
    assert again not in (first, other) and projections.latest(request).id == again
    with pytest.raises(ValueError, match="n_neighbors: must be >= 2"):
        projections.submit(projections.Request(request.encoder, request.dataset, row=4, n_neighbors=1))
    path = save_projection(tmp_path / "p", np.ones((1, 5, 2), np.float32), np.array([4]), {})
    assert projections.coordinates(str(path), 5).shape == (5, 2)
    with pytest.raises(ValueError, match="holds 1 state\\(s\\) x 5 actions; expected 1 x 6"):
        projections.coordinates(str(path), 6)
    assert "UMAP of encoder #enc at rows [4]" in jobs_client.describe(jobs_client.get(again))


def test_a_live_fragment_slows_its_refresh_while_its_body_is_slow():
    from studio.page import next_interval

    assert next_interval(2.0, 0.5, 2.0) == 2.0  # under half the interval: unchanged
    assert next_interval(2.0, 1.5, 2.0) == 4.5  # over half: 3x the body's time
    assert next_interval(4.5, 1.5, 2.0) == 4.5  # settled: no back-and-forth
    assert next_interval(4.5, 0.5, 2.0) == 2.0  # fast again: back to the page's interval, not below
    assert next_interval(12.0, 1.0, 2.0) == 3.0
    assert next_interval(2.0, 40.0, 2.0) == 30.0  # capped
