"""The app at catalogue scale (issue 24, item 4): the Embeddings page's point budget (a seeded sample
with the actions that matter always drawn), its region filter (full resolution on zoom), the hover
rows built only for the drawn points, and the Pseudometric page's sampled heatmaps; an AppTest run
on an untrained 50,000-action MERLION encoder over a synthetic recommender dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

SCALE_ENV = "merlion/Recommender-v0"
OBS_DIM = 100
"""The recommender's observation size (the synthetic dataset's, so the env's model is used)."""


def build_scale_home(
    home: Path, n_actions: int, dataset_path: str | None = None, hidden: int = 16, agent: bool = True
) -> dict:
    """A studio home whose one encoder is an untrained MERLION encoder over ``n_actions`` actions (and,
    with ``agent``, an untrained latent CQL agent on it), recorded as succeeded jobs. ``dataset_path``:
    an existing recommender dataset of that many videos; None: a synthetic one of 256 transitions."""
    from studio_fixture import record

    from merlion_core.algos.artifacts import save_agent
    from merlion_core.algos.registry import make_algorithm
    from merlion_core.data.dataset import DatasetMeta, TransitionDataset
    from merlion_core.data.io import load_dataset, save_dataset
    from merlion_core.jobs.store import JobStore
    from merlion_core.representation.artifacts import save_representation
    from merlion_core.representation.merlion import build, config_for_env

    torch.set_num_threads(1)
    runs = home / "runs"
    store = JobStore(runs)
    if dataset_path is None:
        rng = np.random.default_rng(0)
        n = 256
        obs = rng.random((n, OBS_DIM), dtype=np.float32)
        dataset = TransitionDataset(
            observations=obs,
            actions=rng.integers(0, n_actions, n),
            rewards=np.zeros(n, np.float32),
            next_observations=np.roll(obs, -1, axis=0),
            terminals=np.zeros(n, bool),
            timeouts=np.arange(n) % 64 == 63,
            n_actions=n_actions,
            meta=DatasetMeta(env_id=SCALE_ENV, env_config={"n_videos": n_actions}, behaviour="random", seed=0),
        )
        dataset_path = str(save_dataset(dataset, home / "data" / f"synthetic-{n_actions}"))
    obs_dim = int(load_dataset(dataset_path).obs_dim)
    config = config_for_env(SCALE_ENV, hidden=hidden, behaviour_loss="sampled")
    rep = build(config, n_actions, obs_dim)
    encoder = save_representation(
        rep,
        "merlion",
        config,
        runs / "scale" / "encoder",
        info={"env_id": SCALE_ENV, "dataset": {"path": dataset_path}},
    )
    record(
        store, "train-encoder", {"dataset": dataset_path, "method": "merlion", "options": {}}, {"encoder": str(encoder)}
    )
    out = {"home": home, "dataset": dataset_path, "encoder": str(encoder), "agent": None}
    if agent:
        algo: Any = make_algorithm("cql", n_actions, obs_dim, {"hidden": [hidden, hidden]}, "cpu", representation=rep)
        logged = load_dataset(dataset_path)
        with torch.no_grad():  # the latent box of the logged actions, as training would have set it
            algo.fit_latent_bound(
                rep.embed(torch.tensor(logged.observations[:256]), torch.tensor(logged.actions[:256]))
            )
        path = save_agent(algo, "cql", runs / "scale" / "agent", info={"encoder": str(encoder)})
        record(
            store,
            "train-agent",
            {"dataset": dataset_path, "algo": "cql", "encoder": str(encoder), "steps": 0, "options": {}},
            {"agent": str(path)},
        )
        out["agent"] = str(path)
    store.close()
    return out


# ---------------------------------------------------------------------------- sampling (no streamlit)
def test_sample_keeps_the_always_drawn_actions_and_is_seeded():
    from studio.sampling import select_points

    first = select_points(100_000, 1000, always=[3, 99_999])
    again = select_points(100_000, 1000, always=[99_999, 3])
    np.testing.assert_array_equal(first.actions, again.actions)  # same state, same sample
    assert len(first.actions) <= 1000 and first.sampled and first.n_candidates == 100_000
    assert {3, 99_999} <= set(first.actions.tolist()) and first.kept.tolist() == [3, 99_999]
    assert (np.diff(first.actions) > 0).all()  # ascending, no duplicates
    other_state = select_points(100_000, 1000, always=[42])  # another logged action: the rest is kept
    assert len(set(first.actions.tolist()) & set(other_state.actions.tolist())) >= 1000 - 3
    assert 42 in other_state.actions
    assert not np.array_equal(select_points(100_000, 1000, seed=1).actions, select_points(100_000, 1000).actions)
    assert abs(first.actions.mean() - 50_000) < 5_000  # uniform over the ids (the mean's sd is about 900)


def test_below_the_budget_every_action_is_drawn():
    from studio.sampling import select_points

    small = select_points(64, 20_000, always=[5])
    np.testing.assert_array_equal(small.actions, np.arange(64))
    assert not small.sampled and small.caption() == "64 actions"


def test_region_returns_exactly_the_actions_inside():
    from studio.sampling import Region, select_points

    rng = np.random.default_rng(0)
    xy = rng.normal(size=(5000, 2)).astype(np.float32)
    xy[7] = (0.5, -0.25)  # on the region's corner: bounds are included
    region = Region(-0.25, 0.5, -0.25, 1.0)
    inside = region.inside(xy)
    expected = [i for i, (x, y) in enumerate(xy.tolist()) if -0.25 <= x <= 0.5 and -0.25 <= y <= 1.0]
    assert inside.tolist() == expected and 7 in expected
    whole = select_points(5000, 2000, always=[int(inside[0]), 4999], candidates=inside, region=region)
    assert len(inside) <= 2000 and whole.actions.tolist() == expected  # fits: every action inside, full resolution
    assert whole.kept.tolist() == [int(inside[0])] and not whole.sampled  # 4999 lies outside: not drawn
    assert (
        whole.caption()
        == f"{len(inside):,} of 5,000 actions inside the region: showing all {len(inside):,} (full resolution)"
    )
    part = select_points(5000, 100, always=[int(inside[3])], candidates=inside, region=region)
    assert part.sampled and len(part.actions) == 100 and set(part.actions.tolist()) <= set(expected)
    assert int(inside[3]) in part.actions
    assert part.caption().startswith(f"{len(inside):,} of 5,000 actions inside the region, more than the budget of 100")


def test_bad_regions_and_budgets_raise_one_line_errors():
    from studio.sampling import Region, select_points

    with pytest.raises(ValueError, match="the x range must be finite with low <= high"):
        Region(1.0, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="always-drawn actions must be in"):
        select_points(10, 5, always=[10])
    with pytest.raises(ValueError, match="do not fit the budget"):
        select_points(100, 2, always=[1, 2, 3])


def test_caption_states_the_counts():
    from studio.sampling import select_points

    text = select_points(1_000_000, 20_000, always=[0, 1]).caption()
    assert text.startswith("showing 20,000 of 1,000,000 actions (sampled)")
    assert "2 of them always drawn" in text and "budget of 20,000 points" in text


def test_density_grid_counts_each_point_in_its_cell():
    from studio.sampling import Region, density_grid, extent

    xy = np.array([[0.1, 0.1], [0.9, 0.9], [0.95, 0.8], [0.2, 0.7], [3.0, 0.5]], np.float32)  # the last one outside
    grid = density_grid(xy, Region(0.0, 1.0, 0.0, 1.0), bins=2)
    np.testing.assert_array_equal(grid.counts, [[1, 0], [1, 2]])  # counts[y cell, x cell]
    np.testing.assert_allclose(grid.x, [0.25, 0.75])
    np.testing.assert_allclose(grid.y, [0.25, 0.75])
    assert density_grid(xy, extent(xy), bins=7).counts.sum() == 5  # the extent holds every point


# ---------------------------------------------------------------------------- per-action numerics on the drawn points
def test_hover_rows_are_built_for_the_drawn_actions_only():
    from merlion_core.envs import make_model
    from studio import explore

    model = make_model("recommender", {"n_videos": 200_000})
    info = explore.action_info(model)
    rows = info.rows(np.array([7, 199_999]))
    assert "customdata" not in info.__dict__  # no hover row of the other 199,998 videos was built
    assert rows.shape == (2, 4) and list(rows[1, :2]) == [199_999, model.catalogue.types[199_999]]
    assert rows[0, 2] == round(float(model.catalogue.qualities[7]), 3)
    np.testing.assert_array_equal(info.customdata[[7, 199_999]], rows)


def test_q_true_q_and_embeddings_of_a_subset_equal_the_full_ones(monkeypatch):
    from merlion_core.algos.registry import make_algorithm
    from merlion_core.envs import make_model
    from merlion_core.representation.merlion import MerlionConfig, build
    from studio import explore

    rep = build(MerlionConfig(hidden=8, action_embed_dim=4), 300, 3).eval()
    obs = np.array([0.2, 0.4, 0.0], np.float32)
    picked = np.array([0, 17, 299, 150])
    e = explore.action_embeddings(rep, obs)
    np.testing.assert_allclose(explore.action_embeddings(rep, obs, picked), e[picked], rtol=1e-5, atol=1e-6)
    agent = make_algorithm("cql", 300, 3, {"hidden": (8,)}, "cpu", rep)
    agent.fit_latent_bound(torch.as_tensor(e) * 2.0)
    full = explore.q_values(agent, "cql", obs, e)
    monkeypatch.setattr(explore, "CRITIC_CHUNK", 3)  # several critic passes
    np.testing.assert_allclose(explore.q_values(agent, "cql", obs, e[picked], actions=picked), full[picked], rtol=1e-5)
    dcql = make_algorithm("dcql", 300, 3, {"hidden": (8,)}, "cpu")
    np.testing.assert_array_equal(
        explore.q_values(dcql, "dcql", obs, e[picked], actions=picked), explore.q_values(dcql, "dcql", obs, e)[picked]
    )
    decqn = make_algorithm("decqn-cql", 300, 3, {"action_factors": (3, 100), "hidden": (8,)}, "cpu")
    np.testing.assert_allclose(
        explore.q_values(decqn, "decqn-cql", obs, e[picked], actions=picked),
        explore.q_values(decqn, "decqn-cql", obs, e)[picked],
        rtol=1e-6,
    )
    maze = make_model("maze", {"n_actuators": 4})
    table = explore.planner_table(maze)
    state = np.array([0.26, 0.46, 0.0], np.float32)
    np.testing.assert_allclose(
        explore.true_q(maze, table, state, actions=np.array([3, 9])), explore.true_q(maze, table, state)[[3, 9]]
    )


def test_pca_by_the_scatter_matrix_equals_the_svd():
    from studio import explore

    rng = np.random.default_rng(1)
    e = (rng.normal(size=(2000, 5)) @ rng.normal(size=(5, 5))).astype(np.float32)
    proj = explore.pca_projection(e)
    _, s, vt = np.linalg.svd(e - e.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.abs(proj.axes), np.abs(vt[:2].T), atol=1e-4)
    np.testing.assert_allclose(proj.explained, (s[:2] ** 2) / (s**2).sum(), rtol=1e-4)


# ---------------------------------------------------------------------------- the pages on 50,000 actions
N_LARGE = 50_000


@pytest.fixture(scope="module")
def scale_home(tmp_path_factory):
    return build_scale_home(tmp_path_factory.mktemp("scale-home"), N_LARGE)


@pytest.fixture()
def scale_env(scale_home, monkeypatch):
    from studio_fixture import quiet_app

    quiet_app(monkeypatch, scale_home["home"])
    return scale_home


def _scatter(at) -> tuple[dict, np.ndarray, np.ndarray, list]:
    """The left Embeddings chart: its spec, the drawn action ids and [N, 2] points (scattergl traces)."""
    import json

    from test_app import array

    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    points = [t for t in spec["data"] if t["type"] == "scattergl"]
    ids = np.concatenate([np.asarray([row[0] for row in t["customdata"]], np.int64) for t in points])
    xy = np.concatenate([np.stack([array(t["x"]), array(t["y"])], 1) for t in points])
    return spec, ids, xy, [t for t in spec["data"] if t["type"] == "heatmap"]


def _reference(scale_env, row: int) -> tuple[np.ndarray, int, int]:
    """(every action's PCA point [A, 2] at the row's state, the logged action, the policy's action)."""
    from merlion_core.algos.artifacts import load_agent
    from merlion_core.data.io import load_dataset
    from merlion_core.representation.artifacts import load_representation
    from studio import explore

    ds = load_dataset(scale_env["dataset"])
    obs = np.array(ds.observations[row], np.float32)
    e = explore.action_embeddings(load_representation(scale_env["encoder"]).representation, obs)
    chosen = int(load_agent(scale_env["agent"]).agent.act(obs[None])[0])
    return explore.pca_projection(e)(e), int(ds.actions[row]), chosen


def test_embeddings_page_draws_a_seeded_sample_within_the_budget(scale_env):
    from streamlit.testing.v1 import AppTest
    from test_app import ROOT, array, no_exception

    from studio.sampling import POINT_BUDGET

    at = AppTest.from_file(str(ROOT / "pages" / "embeddings.py"), default_timeout=120).run()
    no_exception(at)
    spec, ids, xy, density = _scatter(at)
    xy_all, logged, chosen = _reference(scale_env, 0)
    assert len(ids) <= POINT_BUDGET and len(set(ids.tolist())) == len(ids)
    assert {logged, chosen} <= set(ids.tolist())  # the actions that matter are always drawn
    np.testing.assert_allclose(xy, xy_all[ids], rtol=1e-4, atol=1e-5)  # each point is its action's embedding
    assert len(density) == 1 and int(array(density[0]["text"]).sum()) == N_LARGE  # the shading counts every action
    labels = [a["text"] for a in spec["layout"]["annotations"]]
    assert f"logged action {logged}" in labels or f"logged = policy's action {logged}" in labels
    caption = f"showing {len(ids):,} of {N_LARGE:,} actions (sampled)"
    assert any(c.value.startswith(caption) for c in at.caption)
    at.run()  # the same state again: the same sample
    np.testing.assert_array_equal(np.sort(_scatter(at)[1]), np.sort(ids))


def test_a_small_budget_still_draws_the_logged_and_the_policys_action(scale_env, monkeypatch):
    from streamlit.testing.v1 import AppTest
    from test_app import ROOT, no_exception

    from studio import sampling

    monkeypatch.setattr(sampling, "POINT_BUDGET", 500)  # 1% of the actions: neither is drawn by chance
    row = 5
    at = AppTest.from_file(str(ROOT / "pages" / "embeddings.py"), default_timeout=120).run()
    at.number_input(key="emb.row").set_value(row).run()
    no_exception(at)
    spec, ids, _, _ = _scatter(at)
    _, logged, chosen = _reference(scale_env, row)
    assert len(ids) <= 500 and {logged, chosen} <= set(ids.tolist())
    labels = {a["text"] for a in spec["layout"]["annotations"]}
    expected = (
        {f"logged = policy's action {logged}"}
        if logged == chosen
        else {f"logged action {logged}", f"policy's action {chosen}"}
    )
    assert expected <= labels


def test_embeddings_region_draws_every_action_inside(scale_env):
    from streamlit.testing.v1 import AppTest
    from test_app import ROOT, no_exception

    from studio.sampling import Region

    at = AppTest.from_file(str(ROOT / "pages" / "embeddings.py"), default_timeout=120).run()
    at.checkbox(key="emb.region.on.left").check().run()  # the bounds start at the whole view, rounded outwards
    assert any(
        c.value.startswith(f"{N_LARGE:,} of {N_LARGE:,} actions inside the region, more than") for c in at.caption
    )
    xy_all, _, _ = _reference(scale_env, 0)
    low, high = np.quantile(xy_all, [0.4, 0.6], axis=0)  # about 4% of the actions: below the budget
    bounds = dict(x0=low[0], x1=high[0], y0=low[1], y1=high[1])
    for name, value in bounds.items():
        at.number_input(key=f"emb.region.{name}.left").set_value(round(float(value), 4))
    at.run()
    no_exception(at)
    region = Region(*(round(float(v), 4) for v in bounds.values()))
    inside = region.inside(xy_all)
    spec, ids, _, density = _scatter(at)
    assert 0 < len(inside) < 20_000 and np.sort(ids).tolist() == inside.tolist() and not density
    assert spec["layout"]["xaxis"]["range"] == [region.x0, region.x1]
    assert any(c.value.endswith(f"showing all {len(inside):,} (full resolution)") for c in at.caption)


def test_umap_view_draws_the_same_sample_over_a_density(scale_env):
    import json

    from streamlit.testing.v1 import AppTest
    from test_app import ROOT, array, no_exception, store

    from merlion_core.projection import save_projection

    at = AppTest.from_file(str(ROOT / "pages" / "embeddings.py"), default_timeout=120).run()
    at.button(key="emb.umap.go.left").click().run()
    pca_ids = np.sort(_scatter(at)[1])
    xy = np.stack([np.arange(N_LARGE), np.arange(N_LARGE) % 97], 1).astype(np.float32)  # known coordinates
    with store() as s:
        job = next(j for j in s.list() if j.kind == "umap" and j.config["encoder"] == scale_env["encoder"])
        path = save_projection(s.artifacts_dir(job.id) / "projection", xy[None], np.array([0]), job.config)
        assert s.claim(job.id)
        s.mark_started(job.id, 1, None)
        s.finish(job.id, "succeeded", None, {"projection": str(path)})
    at.run()
    no_exception(at)
    umap = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if "UMAP (n_neighbors" in c.proto.spec)
    points = [t for t in umap["data"] if t["type"] == "scattergl"]
    ids = np.concatenate([np.asarray([row[0] for row in t["customdata"]], np.int64) for t in points])
    x = np.concatenate([array(t["x"]) for t in points])
    np.testing.assert_array_equal(np.sort(ids), pca_ids)  # the PCA view's actions
    np.testing.assert_array_equal(x, xy[ids, 0])  # each at its own UMAP point
    density = [t for t in umap["data"] if t["type"] == "heatmap"]
    assert len(density) == 1 and int(array(density[0]["text"]).sum()) == N_LARGE


def test_pseudometric_page_samples_its_heatmaps(scale_env):
    import json

    from streamlit.testing.v1 import AppTest
    from test_app import ROOT, array, no_exception

    from merlion_core.data.io import load_dataset
    from merlion_core.representation.artifacts import load_representation
    from studio import explore

    at = AppTest.from_file(str(ROOT / "pages" / "pseudometric.py"), default_timeout=120).run()
    no_exception(at)
    assert any(
        c.value.startswith(f"The heatmaps show a seeded random sample of 256 of {N_LARGE:,} actions")
        for c in at.caption
    )
    spec = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if "learned L1" in c.proto.spec)
    actions = np.asarray([int(a) for a in spec["data"][0]["x"]])
    assert len(set(actions.tolist())) == 256
    obs = np.array(load_dataset(scale_env["dataset"]).observations[0], np.float32)
    e = explore.action_embeddings(load_representation(scale_env["encoder"]).representation, obs)[actions]
    expected = np.abs(e[:, None, :] - e[None, :, :]).sum(-1)
    np.testing.assert_allclose(array(spec["data"][0]["z"]), expected, rtol=1e-4, atol=1e-5)
    assert list(at.select_slider(key="pm.size").options) == ["64", "128", "256", "512", "1024"]  # never all 50,000
