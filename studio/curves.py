"""Learning curves of train-agent jobs grouped over seeds: mean and a 95% t interval per step."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

from merlion_core.jobs.store import JobRecord
from studio.charts import CurveGroup

SeriesFn = Callable[[int], tuple[np.ndarray, np.ndarray]]


def group_key(job: JobRecord) -> str:
    """Runs that differ only in their seed share a key (and a line)."""
    return json.dumps({"kind": job.kind, "config": job.config}, sort_keys=True)


def mean_ci95(values_RS: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high) over axis 0 (R runs): Student's t 95% interval; low = high = mean for R = 1."""
    v = np.asarray(values_RS, dtype=np.float64)
    mean = v.mean(0)
    if v.shape[0] < 2:
        return mean, mean.copy(), mean.copy()
    half = stats.t.ppf(0.975, v.shape[0] - 1) * v.std(0, ddof=1) / np.sqrt(v.shape[0])
    return mean, mean - half, mean + half


def group_curves(jobs: Sequence[JobRecord], series: SeriesFn, label: Callable[[JobRecord], str]) -> list[CurveGroup]:
    """One CurveGroup per group of jobs; steps logged by every run of the group (a run still
    going shortens the line to what all seeds have reached)."""
    groups: dict[str, list[JobRecord]] = defaultdict(list)
    for job in jobs:
        groups[group_key(job)].append(job)
    out = []
    for members in groups.values():
        data = [series(job.id) for job in members]
        data = [(s, v) for s, v in data if len(s)]
        if not data:
            continue
        common = data[0][0]
        for steps, _ in data[1:]:
            common = np.intersect1d(common, steps)
        if not len(common):
            continue
        values = np.stack(
            [v[np.searchsorted(s, common)] for s, v in ((s[np.argsort(s)], v[np.argsort(s)]) for s, v in data)]
        )
        mean, low, high = mean_ci95(values)
        seeds = sorted(job.seed for job in members)
        out.append(
            CurveGroup(f"{label(members[0]).split(' (seed')[0]} seeds {seeds}", common, mean, low, high, len(data))
        )
    return out
