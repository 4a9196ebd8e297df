"""Off-policy estimates on the Runs page: per-run curves with each estimator's own 95% interval over
training checkpoints, and a ranking of every agent trained on one dataset (OPE beside the simulator's
score where there is one). Pure functions of job records and metric series; no streamlit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from merlion_core.jobs.store import JobRecord
from studio.charts import CurveGroup

OPE_ESTIMATORS = {"fqe": "FQE", "wis": "weighted IS", "dr": "doubly robust", "pdis": "per-decision IS"}
SeriesFn = Callable[[int, str], tuple[np.ndarray, np.ndarray]]


def ope_curves(
    jobs: Sequence[JobRecord], estimator: str, series: SeriesFn, label: Callable[[JobRecord], str]
) -> list[CurveGroup]:
    """One line per run (no pooling over seeds): the estimate at each checkpoint and its own 95% interval
    (ope_NAME, ope_NAME_lo, ope_NAME_hi); runs without OPE points are left out."""
    out = []
    for job in jobs:
        steps, value = series(job.id, f"ope_{estimator}")
        if not len(steps):
            continue
        lo_steps, lo = series(job.id, f"ope_{estimator}_lo")
        hi_steps, hi = series(job.id, f"ope_{estimator}_hi")
        if not (np.array_equal(lo_steps, steps) and np.array_equal(hi_steps, steps)):
            lo, hi = value, value  # an interval logged for other steps is not this curve's
        out.append(CurveGroup(f"#{job.id} {label(job)}", steps, value, lo, hi, 1, band="estimator's 95% interval"))
    return out


def dataset_of(job: JobRecord) -> str | None:
    """The dataset a train-agent job trained on, or an ope job read."""
    return job.config.get("dataset")


def ranking_rows(
    agent_jobs: Sequence[JobRecord],
    ope_jobs: Sequence[JobRecord],
    latest: Callable[[int], dict[str, float]],
    label: Callable[[JobRecord], str],
) -> list[dict[str, Any]]:
    """One row per finished agent: its last checkpoint's off-policy estimates (from training, on its held-out
    episodes) or, where an ope job evaluated the agent, that job's estimates; the simulator's normalised score
    beside them where the run had one. Sorted by the FQE estimate, best first (rows without one last)."""
    by_agent: dict[str, JobRecord] = {}
    for job in ope_jobs:  # the latest succeeded ope job of each agent folder
        if job.status == "succeeded" and job.result and job.config.get("agent"):
            by_agent[str(job.config["agent"])] = job
    rows = []
    for job in agent_jobs:
        if job.status != "succeeded":
            continue
        metrics = latest(job.id)
        row: dict[str, Any] = {
            "job": job.id,
            "agent": label(job),
            "source": "-",
            "simulator score": metrics.get("normalised_score"),
        }
        ope_job = by_agent.get(str((job.result or {}).get("agent")))
        if ope_job is not None:
            row["source"] = f"ope job #{ope_job.id}"
            assert ope_job.result is not None  # by_agent holds only jobs with a result
            for name, e in ope_job.result.get("estimators", {}).items():
                row[name] = e["normalised_score"] if e.get("normalised_score") is not None else e["value"]
                ci = e.get("normalised_ci95") or e.get("ci95")
                row[f"{name} 95% CI"] = f"[{ci[0]:.1f}, {ci[1]:.1f}]"
        elif any(key.startswith("ope_") for key in metrics):
            row["source"] = "held-out episodes, last checkpoint"
            for name in OPE_ESTIMATORS:
                if f"ope_{name}" in metrics:
                    row[name] = metrics[f"ope_{name}"]
                    row[f"{name} 95% CI"] = f"[{metrics[f'ope_{name}_lo']:.1f}, {metrics[f'ope_{name}_hi']:.1f}]"
        rows.append(row)
    return sorted(rows, key=lambda r: (r.get("fqe") is None, -(r.get("fqe") or 0.0)))
