"""The Runs page's off-policy view: per-run curves with the estimator's own interval, and the ranking."""

import dataclasses

import numpy as np

from merlion_core.jobs.store import JobRecord
from studio import charts, ope_view


def record(job_id: int, kind: str, status: str = "succeeded", config=None, result=None) -> JobRecord:
    fields = {f.name: None for f in dataclasses.fields(JobRecord)}
    return JobRecord(
        **{
            **fields,
            "id": job_id,
            "kind": kind,
            "config": config or {},
            "seed": 0,
            "status": status,
            "backend": "local",
            "created_at": 0.0,
            "attempts": 0,
            "resume": 0,
            "result": result,
        }
    )


SERIES = {  # job 1 logged OPE at two checkpoints; job 2 (a simulator run) none
    (1, "ope_fqe"): ([10, 20], [5.0, 7.0]),
    (1, "ope_fqe_lo"): ([10, 20], [1.0, 2.0]),
    (1, "ope_fqe_hi"): ([10, 20], [9.0, 12.0]),
}


def series(job_id, name):
    steps, values = SERIES.get((job_id, name), ([], []))
    return np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64)


def test_curves_carry_each_runs_own_interval_and_skip_runs_without_ope():
    jobs = [record(1, "train-agent"), record(2, "train-agent")]
    groups = ope_view.ope_curves(jobs, "fqe", series, lambda job: f"bc seed {job.seed}")
    assert len(groups) == 1 and groups[0].label.startswith("#1 ")
    np.testing.assert_array_equal(groups[0].low, [1.0, 2.0])
    np.testing.assert_array_equal(groups[0].high, [9.0, 12.0])
    figure = charts.learning_curves(groups, "FQE estimate")
    assert len(figure.data) == 2  # the band is drawn for a single run, and the line
    assert "interval" in figure.data[1].name


def test_ranking_prefers_an_ope_job_puts_the_simulator_beside_and_sorts_by_fqe():
    agents = [
        record(1, "train-agent", result={"agent": "/a/1"}),
        record(2, "train-agent", result={"agent": "/a/2"}),
        record(3, "train-agent", status="failed", result=None),
    ]
    ope_job = record(
        9,
        "ope",
        config={"agent": "/a/2"},
        result={
            "estimators": {
                "fqe": {"value": 80.0, "normalised_score": 60.0, "ci95": [70, 90], "normalised_ci95": [50.0, 70.0]}
            }
        },
    )
    latest = {
        1: {"ope_fqe": 5.0, "ope_fqe_lo": 1.0, "ope_fqe_hi": 9.0},
        2: {"normalised_score": 55.0, "ope_fqe": -3.0, "ope_fqe_lo": -4.0, "ope_fqe_hi": -2.0},
    }
    rows = ope_view.ranking_rows(agents, [ope_job], lambda i: latest.get(i, {}), lambda job: "bc")
    assert [r["job"] for r in rows] == [2, 1]  # the failed run is not ranked; 60 (ope job) before 5
    assert rows[0]["fqe"] == 60.0 and rows[0]["fqe 95% CI"] == "[50.0, 70.0]" and rows[0]["source"] == "ope job #9"
    assert rows[0]["simulator score"] == 55.0
    assert rows[1]["fqe"] == 5.0 and rows[1]["source"].startswith("held-out") and rows[1]["simulator score"] is None
