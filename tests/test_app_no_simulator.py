"""A dataset that names no simulator, through the app (AppTest): the Data page says what that means
and offers only the registered environments of its shape (naming one persists in the dataset;
undo restores), the Train page offers no simulator evaluation, and the Pseudometric and Embeddings
pages say what needs a true model, raise nothing, and never pair encoders of other shapes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from no_simulator_fixture import build_no_sim_home, no_env_dataset
from streamlit.testing.v1 import AppTest

from merlion_core.data.io import load_dataset, save_dataset
from merlion_core.jobs.spec import TrainAgentJob
from studio.simulator import NO_SIMULATOR_NOTE

ROOT = Path(__file__).resolve().parents[1]
MAZES = ["merlion/Maze-v0", "merlion/MultiStepMaze-v0"]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return build_no_sim_home(tmp_path_factory.mktemp("no-sim-home"))


@pytest.fixture()
def app_env(home, monkeypatch):
    """The app on the no-simulator home; no demo, supervisor, warm-start worker or advancer thread."""
    from studio_fixture import quiet_app

    quiet_app(monkeypatch, home["home"])
    return home


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=120)


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


def infos(at: AppTest) -> str:
    return "\n".join(i.value for i in at.info)


def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def d4rl_bytes(tmp_path: Path, n_actions: int) -> bytes:
    path = save_dataset(no_env_dataset(n=200, n_actions=n_actions, seed=5), tmp_path / "upload.hdf5", format="d4rl")
    return path.read_bytes()


# ---------------------------------------------------------------------------- Data
def test_data_page_names_a_simulator_for_a_no_env_upload_and_undoes_it(app_env, tmp_path):
    """The user test's case: a D4RL upload with no env recorded."""
    at = page("data").run()
    at.get("file_uploader")[0].set_value(("logged.hdf5", d4rl_bytes(tmp_path, 4096), "application/octet-stream"))
    at.run()
    no_exception(at)
    saved = Path(app_env["home"]) / "data" / "uploads" / "logged.hdf5"
    assert "names no simulator" in at.success[0].value
    assert at.session_state["data.browse"] == str(saved)
    assert NO_SIMULATOR_NOTE in infos(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Behaviour score"] == "—"  # not a misleading "n/a": the note below says why
    choice = at.radio(key="data.simulator")
    assert [o.split(" (")[0] for o in choice.options] == ["none: keep it as it is", "maze", "multistep-maze"]
    assert choice.value == "none" and at.button(key="data.sim_go").disabled  # keeping none is the default

    choice.set_value(MAZES[1]).run()
    at.button(key="data.sim_go").click().run()
    no_exception(at)
    meta = load_dataset(saved).meta
    assert meta.env_id == MAZES[1] and meta.env_config == {} and meta.expert_return is not None
    assert any("recorded in the dataset" in s.value for s in at.success)
    assert NO_SIMULATOR_NOTE not in infos(at)
    assert {m.label: m.value for m in at.metric}["Behaviour score"] not in ("—", "n/a")

    at.button(key="data.sim_undo").click().run()
    no_exception(at)
    meta = load_dataset(saved).meta
    assert meta.env_id is None and meta.expert_return is None and meta.random_return is None
    assert NO_SIMULATOR_NOTE in infos(at) and at.radio(key="data.simulator").value == "none"
    saved.unlink()


def test_data_page_offers_no_env_of_another_shape(app_env, tmp_path):
    at = page("data").run()
    at.get("file_uploader")[0].set_value(("small.hdf5", d4rl_bytes(tmp_path, 64), "application/octet-stream"))
    at.run()
    no_exception(at)
    assert NO_SIMULATOR_NOTE in infos(at)
    assert "none can be named" in captions(at)
    assert not [r for r in at.radio if r.key == "data.simulator"]
    assert not [b for b in at.button if b.key == "data.sim_go"]
    (Path(app_env["home"]) / "data" / "uploads" / "small.hdf5").unlink()


# ---------------------------------------------------------------------------- Train
def test_train_page_offers_no_simulator_evaluation_without_a_simulator(app_env):
    from studio import jobs_client

    at = page("train").run()
    at.selectbox(key="train.dataset").set_value(app_env["nosim"]).run()
    no_exception(at)
    assert NO_SIMULATOR_NOTE in infos(at)
    keys = {w.key for w in at.number_input}
    assert "train.run.steps" in keys and "train.run.eval_episodes" not in keys  # no simulator episodes
    # where the agent pipeline evaluates by OPE (its job config has a holdout share), its cadence and the
    # holdout are offered, evaluating only at the end by default; elsewhere no evaluation setting at all
    ope = "holdout" in {f.name for f in dataclasses.fields(TrainAgentJob)}
    assert ("train.run.eval_every" in keys) == ope and ("train.run.holdout" in {w.key for w in at.text_input}) == ope
    if ope:
        assert at.number_input(key="train.run.eval_every").value == 0
    at.selectbox(key="train.algo").set_value("bc").run()
    at.button(key="train.agent_go").click().run()
    no_exception(at)
    job = [j for j in jobs_client.jobs("train-agent") if j.status == "queued"][-1]
    assert job.config["dataset"] == app_env["nosim"] and job.config["eval_every"] == 0
    assert job.config["eval_episodes"] == TrainAgentJob().eval_episodes  # not the form's: none was sent
    with jobs_client.open_store() as s:
        s.request_cancel(job.id)


# ---------------------------------------------------------------------------- Pseudometric
def test_pseudometric_says_what_needs_a_true_model_and_shows_the_rest(app_env):
    at = page("pseudometric").run()
    no_exception(at)
    assert at.selectbox(key="pm.encoder").value == app_env["merlion"]
    assert "names no simulator" in infos(at) and "true pseudometric" in infos(at)
    assert [m.label for m in at.metric] == ["OOD share"]  # no Spearman / class separation 'n/a'
    titles = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("learned L1" in t for t in titles) and not any("true d" in t for t in titles)
    assert not [e for e in at.expander if "Diagnostics" in e.label]
    at.selectbox(key="pm.encoder").set_value(app_env["rand1"]).run()
    no_exception(at)
    assert [m.label for m in at.metric] == [] and "no behaviour model" in captions(at)


# ---------------------------------------------------------------------------- Embeddings
def test_embeddings_says_what_needs_a_true_model_and_pairs_only_the_same_shape(app_env):
    at = page("embeddings").run()
    no_exception(at)
    assert at.selectbox(key="emb.left").value == app_env["merlion"]
    assert "names no simulator" in infos(at) and "true value" in infos(at)
    assert at.radio(key="emb.colour").options == ["Q from the trained critic", "none"]
    right = at.selectbox(key="emb.right")
    assert right.value == app_env["rand1"]  # the other method, same data: side by side
    labels = right.options
    assert len(labels) == 2 and not any("wide" in o for o in labels)  # nothing, rand1 on nosim
    assert "1 other encoder(s) not offered" in captions(at)
    at.selectbox(key="emb.left").set_value(app_env["wide"]).run()  # obs 5: no partner of its shape
    no_exception(at)
    assert at.selectbox(key="emb.right").options == ["nothing"]
    assert "2 other encoder(s) not offered" in captions(at)
    obs = next(m.value for m in at.markdown if m.value.startswith("Observation"))
    assert len(obs.split(",")) == 5


def test_embeddings_scatter_of_a_no_env_encoder_holds_every_action(app_env):
    at = page("embeddings").run()
    no_exception(at)
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    scatters = [s for s in specs if "d = " in json.dumps(s["layout"].get("title", ""))]
    assert len(scatters) == 2
    for spec in scatters:
        assert sum(len(np.atleast_1d(t["customdata"])) for t in spec["data"]) == 64
        assert spec["data"][0]["hovertemplate"].startswith("action %{customdata[0]}")
