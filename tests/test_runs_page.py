"""The Runs page tells the truth (issue 26, item 4) and the maze map names its dots (item 5): failed runs
and runs without evaluation points are listed with their reason, the status line counts finished, failed
and running runs, labels carry job ids, the legend is always shown, fewer than 3 seeds are drawn one by one
instead of a t band, and the maze map's legend names what it draws."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from streamlit.testing.v1 import AppTest

from merlion_core.envs.maze import MazeConfig
from merlion_core.jobs.store import JobRecord, JobStore
from studio import charts, curves

ROOT = Path(__file__).resolve().parents[1]
CONFIG: dict[str, Any] = {
    "dataset": "/d/maze.npz",
    "algo": "cql",
    "encoder": None,
    "steps": 20,
    "eval_every": 10,
    "options": {},
}


def job(job_id: int, seed: int = 0, status: str = "succeeded", config=None, **fields) -> JobRecord:
    blank = {f.name: None for f in dataclasses.fields(JobRecord)}
    values = {
        "id": job_id,
        "kind": "train-agent",
        "config": dict(config or CONFIG),
        "seed": seed,
        "status": status,
        "backend": "local",
        "created_at": 0.0,
        "attempts": 1,
        "resume": 0,
    }
    return JobRecord(**{**blank, **values, **fields})


def series_of(table: dict[int, tuple[list, list]]):
    def series(job_id: int) -> tuple[np.ndarray, np.ndarray]:
        steps, values = table.get(job_id, ([], []))
        return np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64)

    return series


def label(record: JobRecord) -> str:
    return f"cql 20 steps (seed {record.seed})"  # what jobs_client.describe says: no id, no dataset


# ---------------------------------------------------------------------------- unit: curves and charts
def test_labels_carry_job_ids_so_runs_with_the_same_description_read_apart():
    other = {**CONFIG, "dataset": "/d/other.npz"}  # same description, another group
    jobs = [job(4), job(9, config=other)]
    groups = curves.group_curves(jobs, series_of({4: ([10, 20], [1, 2]), 9: ([10, 20], [3, 4])}), label)
    assert len(groups) == 2 and groups[0].label != groups[1].label
    assert "#4" in groups[0].label and "#9" in groups[1].label
    names = [t.name for t in charts.learning_curves(groups).data]
    assert any("#4" in n for n in names) and any("#9" in n for n in names)


def test_a_one_line_figure_shows_its_legend():
    groups = curves.group_curves([job(1)], series_of({1: ([10, 20], [1.0, 2.0])}), label)
    figure = charts.learning_curves(groups)
    assert len(figure.data) == 1 and figure.layout.showlegend is True
    assert "#1" in figure.data[0].name


def test_two_seeds_are_drawn_one_by_one_and_three_get_a_t_band():
    table = {1: ([10, 20], [0.0, 10.0]), 2: ([10, 20], [4.0, 30.0]), 3: ([10, 20], [8.0, 20.0])}
    two = charts.learning_curves(curves.group_curves([job(1, 0), job(2, 1)], series_of(table), label))
    assert not [t for t in two.data if t.fill == "toself"]  # no band
    seeds = [t for t in two.data if t.showlegend is False]
    assert len(seeds) == 2 and {t.name for t in seeds} == {"job #1 (seed 0)", "job #2 (seed 1)"}
    np.testing.assert_allclose(np.asarray(seeds[0].y), [0.0, 10.0])
    np.testing.assert_allclose(np.asarray(seeds[1].y), [4.0, 30.0])
    assert len({t.line.color for t in two.data}) == 1  # seeds in the group's colour
    mean = two.data[-1]
    np.testing.assert_allclose(np.asarray(mean.y), [2.0, 20.0])
    assert "2 seeds" in mean.name and "#1" in mean.name and "#2" in mean.name

    three = charts.learning_curves(curves.group_curves([job(1, 0), job(2, 1), job(3, 2)], series_of(table), label))
    assert len(three.data) == 2  # the band and the mean, no seed lines
    band, mean = three.data
    assert band.fill == "toself" and "95% t interval" in band.name and "3 seeds" in mean.name
    values = np.array([table[i][1] for i in (1, 2, 3)])
    half = stats.t.ppf(0.975, 2) * values.std(0, ddof=1) / np.sqrt(3)
    np.testing.assert_allclose(np.asarray(band.y)[:2], values.mean(0) + half, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(mean.y), values.mean(0), rtol=1e-6)


def test_a_failed_seed_is_its_own_line_and_does_not_cut_its_siblings_short():
    failed = job(2, 1, "failed", exit_reason="RuntimeError: loss is nan")
    table = {1: ([10, 20, 30], [1.0, 2.0, 3.0]), 2: ([10], [5.0])}
    groups = curves.group_curves([job(1, 0), failed], series_of(table), label)
    assert len(groups) == 2
    ok, bad = groups
    np.testing.assert_array_equal(ok.steps, [10, 20, 30])
    np.testing.assert_array_equal(bad.steps, [10])
    assert ok.n_seeds == 1 and "failed" in bad.label and "#2" in bad.label


def test_failed_runs_and_runs_without_points_are_listed_with_their_reason():
    jobs = [
        job(1),
        job(2, 1, "failed", exit_reason="RuntimeError: CUDA out of memory"),
        job(3, config={**CONFIG, "eval_every": 500, "steps": 1000}, status="running", step=120, total=1000),
        job(4, config={**CONFIG, "eval_every": 0, "steps": 1000}, status="running", step=300, total=1000),
        job(5, config={**CONFIG, "dataset": "/d/no-simulator.npz"}),
    ]
    logged = {1: {"loss", "normalised_score"}, 3: {"loss"}, 4: {"loss"}, 5: {"loss", "ope_fqe"}}
    found = curves.left_out(
        jobs, series_of({1: ([10, 20], [1.0, 2.0])}), "normalised_score", lambda i: logged.get(i, set())
    )
    reasons = {item.job.id: item.reason for item in found}
    assert set(reasons) == {2, 3, 4, 5}  # job 1 is on the chart
    assert reasons[2].startswith("failed: RuntimeError: CUDA out of memory")
    assert "no evaluation points" in reasons[3] and "first evaluation at step 500" in reasons[3]
    assert "step 120" in reasons[3]
    assert "only at the end" in reasons[4] and "eval_every 0" in reasons[4]
    assert "no simulator" in reasons[5]
    line = curves.status_line(jobs)
    assert line == "5 runs: 2 finished, 1 failed, 2 running."
    assert "all finished" not in line.lower()


# ---------------------------------------------------------------------------- the page (AppTest)
def _home(tmp_path: Path) -> dict[str, int]:
    """A jobs store with two finished seeds, a failed seed without points and a run before its first evaluation."""
    store = JobStore(tmp_path / "runs")

    def start(config: dict, seed: int) -> int:
        job_id = store.submit("train-agent", config, seed, sweep="test")
        store.claim(job_id)
        store.mark_started(job_id, os.getpid(), None)  # a live pid: nothing takes it for a lost run
        return job_id

    ids = {}
    for seed in (0, 1):
        ids[f"seed{seed}"] = start(CONFIG, seed)
        for step in (10, 20):
            store.add_metrics(ids[f"seed{seed}"], step, {"normalised_score": step + 10.0 * seed, "loss": 1.0})
        store.beat(ids[f"seed{seed}"], 20, 20)
        store.finish(ids[f"seed{seed}"], "succeeded", None, {"agent": f"/a/{seed}"})
    ids["failed"] = start(CONFIG, 2)
    store.finish(ids["failed"], "failed", "RuntimeError: CUDA out of memory")
    ids["running"] = start({**CONFIG, "steps": 1000, "eval_every": 500}, 0)
    store.add_metrics(ids["running"], 100, {"loss": 0.5})
    store.beat(ids["running"], 120, 1000)
    store.close()
    return ids


def test_runs_page_lists_the_failed_run_and_counts_it(tmp_path, monkeypatch):
    from studio_fixture import quiet_app

    quiet_app(monkeypatch, tmp_path)
    ids = _home(tmp_path)
    at = AppTest.from_file(str(ROOT / "pages" / "runs.py"), default_timeout=60).run()
    assert not at.exception, [e.message for e in at.exception]
    captions = " ".join(c.value for c in at.caption)
    assert "all finished" not in captions.lower()
    assert "2 finished" in captions and "1 failed" in captions and "1 running" in captions
    text = " ".join(m.value for m in at.markdown)
    assert f"#{ids['failed']}" in text and "RuntimeError: CUDA out of memory" in text
    assert f"#{ids['running']}" in text and "first evaluation at step 500" in text
    spec = next(
        json.loads(c.proto.spec)
        for c in at.get("plotly_chart")
        if "gradient step" in json.dumps(json.loads(c.proto.spec))
    )
    assert spec["layout"]["showlegend"] is True
    names = [t.get("name", "") for t in spec["data"]]
    assert not [t for t in spec["data"] if t.get("fill") == "toself"]  # 2 seeds: no t band
    assert sum(n.startswith("job #") for n in names) == 2  # one thin line per seed
    assert any(f"#{ids['seed0']}" in n and f"#{ids['seed1']}" in n for n in names)


# ---------------------------------------------------------------------------- the maze map
def test_maze_map_names_its_dots_and_regions_in_a_shown_legend():
    config = MazeConfig()
    states = np.array([[0.1, 0.1, 0.0], [0.5, 0.5, 1.0], [0.9, 0.2, 0.0]], np.float32)
    figure = charts.maze_map(states, config, states[1])
    assert figure.layout.showlegend is True
    assert all(t.name for t in figure.data)
    clickable = figure.data[0]  # the page maps a click on trace 0 to a dataset row by its point index
    np.testing.assert_array_equal(np.asarray(clickable.customdata), [0, 1, 2])
    assert len(clickable.x) == 3
    shown = [t.name for t in figure.data if t.showlegend is not False]
    assert "chosen state" in shown
    assert any("bonus not yet taken" in n for n in shown) and any("bonus already taken" in n for n in shown)
    entries = [s.name for s in figure.layout.shapes if s.showlegend]
    assert len(entries) == 4 and entries[0] == "walls"
    assert any(n.startswith("goal") for n in entries)
    assert any(n.startswith("bonus") for n in entries) and any(n.startswith("penalty") for n in entries)
    assert all(s.name for s in figure.layout.shapes)  # every rectangle belongs to a named kind
    assert len(figure.layout.shapes) == len(config.walls) + 1 + len(config.bonus_regions) + len(config.penalty_regions)
