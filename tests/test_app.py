"""The Streamlit app driven headless with AppTest: every page alone and through the navigation,
uploads, forms, buttons, sliders and the data inside the chart specs.

The app points at a real fixture home (tests/studio_fixture.py: a 64-action maze dataset, a
MERLION and a Rand-1 encoder, a latent CQL agent, succeeded jobs). No supervisor or warm-start
worker process is started (studio_env); warm-start frames are produced by calling the worker's
``run`` in this process.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest
from studio_fixture import ENV_OVERRIDES

from merlion_core import diagnostics
from merlion_core.algos.artifacts import load_agent
from merlion_core.envs import make_model
from merlion_core.representation.artifacts import load_representation

ROOT = Path(__file__).resolve().parents[1]
PAGES = {
    "home": "MERLION Studio",
    "data": "Data",
    "train": "Train",
    "embeddings": "Embeddings",
    "pseudometric": "Pseudometric",
    "runs": "Runs",
}


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=120)


def array(value) -> np.ndarray:
    """A plotly data array from a chart spec (typed arrays are base64 with a dtype)."""
    if isinstance(value, dict) and "bdata" in value:
        out = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = value.get("shape")
        return out.reshape([int(v) for v in str(shape).split(",")]) if shape else out
    return np.asarray(value)


def chart(at: AppTest, title_part: str) -> dict:
    found = [
        json.loads(c.proto.spec)
        for c in at.get("plotly_chart")
        if title_part in json.dumps(json.loads(c.proto.spec)["layout"].get("title", ""))
    ]
    assert found, f"no chart titled {title_part!r}"
    return found[0]


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


def store():
    from studio import jobs_client

    return jobs_client.open_store()


# ---------------------------------------------------------------------------- every page
@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_runs_alone(studio_env, name):
    """A page opened by its direct URL runs without app.py (shared setup lives in studio.page)."""
    at = page(name).run()
    no_exception(at)
    assert at.title[0].value == PAGES[name]


def test_navigation_reaches_every_page(studio_env):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    no_exception(at)
    assert at.title[0].value == "MERLION Studio"
    for name, title in PAGES.items():
        at.switch_page(f"pages/{name}.py").run()
        no_exception(at)
        assert at.title[0].value == title


# ---------------------------------------------------------------------------- Data
def _npz(n: int = 8, nan: bool = False, pad: int = 0) -> bytes:
    rewards = np.arange(n, dtype=np.float32)
    if nan:
        rewards[2] = np.nan
    fields = dict(
        observations=np.zeros((n, 3), np.float32),
        actions=np.arange(n, dtype=np.int64) % 5,
        rewards=rewards,
        next_observations=np.zeros((n, 3), np.float32),
        terminals=(np.arange(n) % 4 == 3),
        timeouts=np.zeros(n, bool),
        n_actions=np.array(16),
    )
    if pad:
        fields["padding"] = np.zeros(pad, np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **fields)
    return buf.getvalue()


def test_upload_valid_dataset_is_saved_and_summarised(studio_env):
    at = page("data").run()
    at.get("file_uploader")[0].set_value(("my logged data!.npz", _npz(), "application/octet-stream"))
    at.run()
    no_exception(at)
    assert "valid npz dataset" in at.success[0].value
    saved = Path(studio_env["home"]) / "data" / "uploads" / "my_logged_data_.npz"
    assert saved.is_file()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Transitions"] == "8" and metrics["Episodes"] == "2"
    assert metrics["Actions used"] == "5 / 16"
    returns = array(chart(at, "Episode returns")["data"][0]["x"])
    np.testing.assert_allclose(np.sort(returns), [0 + 1 + 2 + 3, 4 + 5 + 6 + 7])
    freq = chart(at, "Action frequency")["data"][0]
    np.testing.assert_array_equal(array(freq["y"]), [2, 2, 2, 1, 1])  # ids 0,1,2 twice, 3,4 once
    saved.unlink()


def test_upload_invalid_dataset_shows_the_core_error_and_keeps_nothing(studio_env):
    at = page("data").run()
    at.get("file_uploader")[0].set_value(("bad.npz", _npz(nan=True), "application/octet-stream"))
    at.run()
    no_exception(at)
    message = at.error[0].value
    assert message.startswith("bad.npz") and "rewards" in message and "nan" in message.lower()
    assert str(studio_env["home"]) not in message  # the user's name, not our path
    assert not list((Path(studio_env["home"]) / "data" / "uploads").glob("bad*"))


def test_upload_over_the_size_cap_is_refused(studio_env, monkeypatch):
    from studio import settings

    monkeypatch.setattr(settings, "MAX_UPLOAD_MB", 1)
    at = page("data").run()
    at.get("file_uploader")[0].set_value(("big.npz", _npz(pad=1_200_000), "application/octet-stream"))
    at.run()
    assert "larger than the 1 MB cap" in at.error[0].value


def test_generate_queues_a_collect_job_from_the_form(studio_env):
    at = page("data").run()
    at.selectbox(key="data.env").set_value("multistep-maze")
    at.number_input(key="data.collect.n").set_value(5000)
    at.number_input(key="data.collect.noise").set_value(0.25)
    at.button(key="data.generate").click().run()
    no_exception(at)
    job_id = at.session_state["data.last_job"]
    with store() as s:
        job = s.get(job_id)
    assert job.kind == "collect" and job.status == "queued"
    assert job.config["env"] == "multistep-maze" and job.config["n"] == 5000 and job.config["noise"] == 0.25
    _cancel(job_id)


def _cancel(job_id: int) -> None:
    with store() as s:
        s.request_cancel(job_id)


# ---------------------------------------------------------------------------- Train
def test_train_forms_queue_encoder_and_agent_jobs(studio_env):
    at = page("train").run()
    no_exception(at)
    at.selectbox(key="train.dataset").set_value(studio_env["dataset"]).run()
    at.number_input(key="train.rep.merlion.steps").set_value(123)
    at.number_input(key="train.rep.merlion.p").set_value(0.2)
    at.button(key="train.encoder_go").click().run()
    no_exception(at)
    at.selectbox(key="train.encoder").set_value(studio_env["encoder"])
    at.number_input(key="train.run.steps").set_value(77)
    at.number_input(key="train.algo.cql.alpha").set_value(0.9)
    at.button(key="train.agent_go").click().run()
    no_exception(at)
    with store() as s:
        new = s.list("queued")[-2:]
    encoder_job, agent_job = new
    assert encoder_job.kind == "train-encoder" and encoder_job.config["options"] == {"steps": 123, "p": 0.2}
    assert agent_job.kind == "train-agent" and agent_job.config["steps"] == 77
    assert agent_job.config["options"] == {"alpha": 0.9} and agent_job.config["encoder"] == studio_env["encoder"]
    for job in new:
        _cancel(job.id)


def test_train_page_queues_an_off_policy_evaluation(studio_env):
    at = page("train").run()
    at.selectbox(key="train.dataset").set_value(studio_env["dataset"]).run()
    at.selectbox(key="train.ope.agent").set_value(studio_env["agent"]).run()
    at.number_input(key="train.ope.options.fqe_steps").set_value(321)
    at.button(key="train.ope_go").click().run()
    no_exception(at)
    with store() as s:
        job = s.list("queued")[-1]
    assert job.kind == "ope" and job.config["agent"] == studio_env["agent"]
    assert job.config["dataset"] == studio_env["dataset"] and job.config["options"] == {"fqe_steps": 321}
    _cancel(job.id)


def test_train_agent_with_a_new_encoder_builds_a_chain(studio_env):
    from studio import chains

    at = page("train").run()
    at.selectbox(key="train.dataset").set_value(studio_env["dataset"]).run()
    at.selectbox(key="train.encoder").set_value("new").run()
    at.number_input(key="train.seeds").set_value(2).run()
    at.button(key="train.agent_go").click().run()
    no_exception(at)
    name = [n for n in chains.names() if n.startswith("train-")][-1]
    chain = chains.load(name)
    assert [s.kind for s in chain.steps] == ["train-encoder", "train-agent", "train-agent"]
    assert [s.seed for s in chain.steps[1:]] == [0, 1] and chain.steps[1].inputs == {"encoder": (0, "encoder")}
    assert chain.steps[0].job is not None and chain.steps[1].job is None  # the agents wait for the encoder
    _cancel(chain.steps[0].job)
    (chains.chains_dir() / f"{name}.json").unlink()


# ---------------------------------------------------------------------------- Embeddings
def _in_distribution_points(spec: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs, ys, colours = [], [], []
    for trace in spec["data"]:
        xs.append(array(trace["x"]))
        ys.append(array(trace["y"]))
        colours.append(
            array(trace["marker"]["color"])
            if "color" in trace["marker"] and not isinstance(trace["marker"]["color"], str)
            else np.full(len(xs[-1]), np.nan)
        )
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(colours)


def test_embeddings_scatter_shows_every_action_coloured_by_the_critic(studio_env):
    at = page("embeddings").run()
    no_exception(at)
    obs = studio_env["obs"][0]
    rep = load_representation(studio_env["encoder"]).representation
    with torch.no_grad():
        e = rep.embed_all(torch.as_tensor(obs[None]))[0].numpy()
        ood = rep.relative_behaviour_probs(torch.as_tensor(obs[None]))[0].numpy() <= rep.config.tau
    agent = load_agent(studio_env["agent"]).agent
    with torch.no_grad():  # the critic sees the agent's normalised latents x = (e - c) / h
        x_AD = (torch.as_tensor(e) - agent.latent_center) / agent.latent_scale
        q = agent.critic(torch.as_tensor(obs[None]).expand(len(e), -1), x_AD).min(0).values.numpy()
    spec = chart(at, "merlion, d = 2")
    assert all(t["type"] == "scattergl" for t in spec["data"])
    assert array(spec["data"][0]["x"]).dtype == np.float32
    order = np.concatenate([np.flatnonzero(~ood), np.flatnonzero(ood)])  # in-distribution trace first, then OOD
    x, y, colour = _in_distribution_points(spec)
    np.testing.assert_allclose(x, e[order, 0], rtol=1e-6)
    np.testing.assert_allclose(y, e[order, 1], rtol=1e-6)
    np.testing.assert_allclose(colour, q[order], rtol=1e-5)
    assert [t["marker"]["symbol"] for t in spec["data"]] == ["circle", "x"][: len(spec["data"])]
    hover = spec["data"][0]
    assert "actuators" in hover["hovertemplate"] and len(hover["customdata"][0][1]) == ENV_OVERRIDES["n_actuators"]
    assert chart(at, "rand1, d = 2")  # the second representation, side by side


def test_embeddings_true_value_colour_matches_the_model(studio_env):
    from studio import explore

    at = page("embeddings").run()
    at.radio(key="emb.colour").set_value("true value Q*(s, a)").run()
    no_exception(at)
    model = make_model("maze", ENV_OVERRIDES)
    obs = studio_env["obs"][0]
    expected = explore.true_q(model, explore.planner_table(model), obs)
    x, _, colour = _in_distribution_points(chart(at, "merlion, d = 2"))
    assert np.allclose(np.sort(colour), np.sort(expected), rtol=1e-5)
    assert colour.max() - colour.min() > 1.0  # actions differ in value at the start state


def test_picking_another_state_changes_the_scatter(studio_env):
    at = page("embeddings").run()
    before = _in_distribution_points(chart(at, "merlion, d = 2"))[0]
    row = int(np.flatnonzero(np.abs(studio_env["obs"][:, :2] - studio_env["obs"][0, :2]).sum(1) > 0.3)[0])
    at.number_input(key="emb.row").set_value(row).run()
    no_exception(at)
    obs_text = next(m.value for m in at.markdown if m.value.startswith("Observation"))
    assert f"{studio_env['obs'][row][0]:.3f}" in obs_text
    after = _in_distribution_points(chart(at, "merlion, d = 2"))[0]
    assert not np.allclose(np.sort(before), np.sort(after))


def test_p_slider_starts_a_warm_start_and_the_scatter_reforms(studio_env):
    from studio import warmstart, warmstart_worker

    at = page("embeddings").run()
    before = _in_distribution_points(chart(at, "merlion, d = 2"))[0]
    at.select_slider(key="emb.p.left").set_value(1.0).run()
    no_exception(at)
    job_id, state = at.session_state["emb.warm.left"]
    with store() as s:
        job = s.get(job_id)
        assert job.kind == "warm-start" and job.backend == "studio" and job.status == "queued"
        assert job.config["p"] == 1.0 and job.config["tau"] == 0.3 and tuple(job.config["state"]) == state
        assert s.claim(job_id, backend="studio")
        warmstart_worker.run(s, s.get(job_id), warmstart_worker.Models())  # what the resident worker does
        assert s.get(job_id).status == "succeeded"
    step, frame = warmstart.latest_frame(job_id)
    assert step == job.config["steps"]
    at.run()
    no_exception(at)
    x, y, _ = _in_distribution_points(chart(at, "merlion, d = 2"))
    assert np.allclose(np.sort(x), np.sort(frame[:, 0]), rtol=1e-6)  # the last frame is shown
    assert not np.allclose(np.sort(x), np.sort(before))  # and it moved
    assert any(f"step {step}/{step}, succeeded" in c.value for c in at.caption)


def test_d_above_2_offers_umap_and_shows_a_finished_projection(studio_env):
    """d > 2: PCA is the live view; "Compute UMAP" queues a umap job for the chosen state (once:
    the store is the cache), and the job's coordinates (written here, not computed) are drawn with
    the PCA view's hover."""
    from merlion_core.projection import save_projection

    at = page("embeddings").run()
    at.selectbox(key="emb.right").set_value(studio_env["rand3"]).run()
    no_exception(at)
    assert not [b for b in at.button if b.key == "emb.umap.go.left"]  # d = 2 on the left: no UMAP
    pca = chart(at, "rand1, d = 3 (PCA")
    assert not [c for c in at.get("plotly_chart") if "UMAP (" in c.proto.spec]
    row = 7
    at.number_input(key="emb.row").set_value(row).run()
    at.button(key="emb.umap.go.right").click().run()
    no_exception(at)
    with store() as s:
        jobs = [j for j in s.list() if j.kind == "umap"]
    assert len(jobs) == 1 and jobs[0].status == "queued" and jobs[0].seed == 0
    job = jobs[0]
    assert job.config["encoder"] == studio_env["rand3"] and job.config["rows"] == [row]
    assert (job.config["n_neighbors"], job.config["min_dist"]) == (15, 0.1)
    at.button(key="emb.umap.go.right").click().run()  # the same request again: the same job
    with store() as s:
        assert [j.id for j in s.list() if j.kind == "umap"] == [job.id]
        xy = np.stack([np.arange(64), np.arange(64) ** 2 / 64], 1).astype(np.float32)  # known coordinates
        path = save_projection(s.artifacts_dir(job.id) / "projection", xy[None], np.array([row]), job.config)
        assert s.claim(job.id)
        s.mark_started(job.id, 1, None)
        s.finish(job.id, "succeeded", None, {"projection": str(path)})
    at.run()
    no_exception(at)
    umap = chart(at, "rand1, d = 3: UMAP (n_neighbors 15, min_dist 0.1)")
    x, y, _ = _in_distribution_points(umap)  # Rand-1 has no behaviour model: one trace, every action in order
    np.testing.assert_array_equal(x, xy[:, 0])
    np.testing.assert_array_equal(y, xy[:, 1])
    assert umap["data"][0]["hovertemplate"] == chart(at, "rand1, d = 3 (PCA")["data"][0]["hovertemplate"]
    assert umap["data"][0]["customdata"] == pca["data"][0]["customdata"]
    assert umap["layout"]["xaxis"]["title"]["text"] == "UMAP 1"


# ---------------------------------------------------------------------------- Pseudometric
def test_pseudometric_heatmaps_match_the_core(studio_env):
    at = page("pseudometric").run()
    no_exception(at)
    model = make_model("maze", ENV_OVERRIDES)
    obs = studio_env["obs"][0]
    rep = load_representation(studio_env["encoder"]).representation
    with torch.no_grad():
        e = rep.embed_all(torch.as_tensor(obs[None]))[0].numpy()
    order = np.lexsort((np.arange(64), model.action_classes))  # class order, as the page promises
    learned = chart(at, "learned L1")
    true = chart(at, "true d")
    assert [str(a) for a in order] == learned["data"][0]["x"]
    expected_learned = np.abs(e[order][:, None, :] - e[order][None, :, :]).sum(-1)
    np.testing.assert_allclose(array(learned["data"][0]["z"]), expected_learned, rtol=1e-5, atol=1e-6)
    expected_true = diagnostics.true_pseudometric(model, obs[None], order)[0]
    np.testing.assert_allclose(array(true["data"][0]["z"]), expected_true, rtol=1e-5)
    rho = diagnostics.spearman_per_state(expected_learned[None], expected_true[None])[0]
    metric = next(m for m in at.metric if m.label == "Spearman (this state)")
    assert metric.value == f"{rho:.3f}"


def test_pseudometric_png_overview_beyond_the_heatmap_limit(studio_env, monkeypatch):
    from studio import charts

    monkeypatch.setattr(charts, "HEATMAP_MAX", 16)
    at = page("pseudometric").run()
    no_exception(at)
    images = at.get("image")  # learned and true overviews as PNGs
    assert [im.proto.imgs[0].caption for im in images] == ["learned L1, 64 x 64", "true d, 64 x 64"]
    zoom = chart(at, "learned L1: block 0..15")
    assert array(zoom["data"][0]["z"]).shape == (16, 16)
    at.slider(key="pm.block").set_value(8).run()
    assert chart(at, "learned L1: block 8..23")


# ---------------------------------------------------------------------------- Runs
def test_runs_curves_average_the_seeds_and_draw_each_of_two_seeds(studio_env):
    at = page("runs").run()
    no_exception(at)
    spec = next(
        json.loads(c.proto.spec)
        for c in at.get("plotly_chart")
        if "gradient step" in json.dumps(json.loads(c.proto.spec)["layout"])
    )
    seed0, seed1, line = spec["data"]  # 2 seeds: each seed's own thin line, no t band (t_{0.975, 1} = 12.7)
    curve = json.loads((Path(studio_env["agent"]) / "metrics.json").read_text())["curve"]
    base = np.array([p["normalised_score"] for p in curve])
    np.testing.assert_allclose(array(seed0["y"]), base, rtol=1e-5)  # seeds 0 and 1 score base and base + 10
    np.testing.assert_allclose(array(seed1["y"]), base + 10, rtol=1e-5)
    np.testing.assert_allclose(array(line["y"]), base + 5, rtol=1e-5)
    assert not [t for t in spec["data"] if t.get("fill") == "toself"]
    assert "2 seeds" in line["name"]
    assert all(f"#{i}" in line["name"] for i in studio_env["jobs"]["agents"])
    assert spec["layout"]["showlegend"] is True


def test_runs_job_table_cancels_and_resumes(studio_env):
    from studio import jobs_client

    job_id = jobs_client.submit("collect", {"env": "maze", "n": 1000}, 3, tag="test")
    at = page("runs").run()
    at.selectbox(key="runs.jobs.pick").set_value(job_id).run()
    at.button(key="runs.jobs.cancel").click().run()
    no_exception(at)
    assert jobs_client.get(job_id).status == "cancelled"
    at.button(key="runs.jobs.resume").click().run()
    no_exception(at)
    assert jobs_client.get(job_id).status == "queued"  # requeued (no supervisor runs in these tests)
