"""Learning curves of train-agent and train-online jobs grouped over seeds (mean, and a 95% t interval from 3 seeds on,
each seed's own line below that), what is left off the chart and why, and the runs' status line.
Pure functions of job records and metric series; no streamlit."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from merlion_core.jobs.store import JobRecord
from studio.charts import MIN_BAND_SEEDS, CurveGroup, SeedLine

SeriesFn = Callable[[int], tuple[np.ndarray, np.ndarray]]
LoggedFn = Callable[[int], Collection[str]]
ENDED = ("failed", "cancelled")
"""Final statuses of a run that did not finish: drawn apart (never pooled with finished seeds) and listed."""
FAILURES = {
    "error": "the job raised an error",
    "killed": "its process was killed or vanished",
    "interrupted": "stopped from outside",
}
"""What a failed job's ``failure`` kind (where the store records one) means."""
SIMULATOR_METRICS = ("normalised_score", "mean_return", "success_rate")
LATENT_ALGOS = ("cql", "bcq")
ONLINE_KIND = "train-online"
"""Online runs (merlion_core.pipelines.online): their curves' steps count env steps, not gradient steps."""


def run_length(job: JobRecord) -> tuple[int, object]:
    """(eval_every, length) of a training run: gradient steps of a train-agent job, env steps of an
    online one (its options, else OnlineConfig's defaults)."""
    if job.kind != ONLINE_KIND:
        return int(job.config.get("eval_every") or 0), job.config.get("steps")
    options = job.config.get("options") or {}
    if "eval_every" in options and "env_steps" in options:
        return int(options["eval_every"] or 0), options["env_steps"]
    from merlion_core.algos.online import OnlineConfig  # the defaults (imports torch: only when needed)

    return int(options.get("eval_every", OnlineConfig.eval_every) or 0), options.get(
        "env_steps", OnlineConfig.env_steps
    )


def x_axis_title(jobs: Sequence[JobRecord]) -> str:
    """The curves' x axis: gradient steps (offline runs), env steps (online runs), or both when mixed."""
    kinds = {job.kind == ONLINE_KIND for job in jobs}
    if kinds == {True}:
        return "env step (online)"
    return "gradient step (offline) / env step (online)" if kinds == {True, False} else "gradient step"


def group_key(job: JobRecord) -> str:
    """Runs that differ only in their seed share a key (and a line); a failed or cancelled run is a line of its own."""
    if job.status in ENDED:
        return f"{job.status} #{job.id}"
    return json.dumps({"kind": job.kind, "config": job.config}, sort_keys=True)


def mean_ci95(values_RS: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high) over axis 0 (R runs): Student's t 95% interval; low = high = mean for R = 1."""
    v = np.asarray(values_RS, dtype=np.float64)
    mean = v.mean(0)
    if v.shape[0] < 2:
        return mean, mean.copy(), mean.copy()
    half = stats.t.ppf(0.975, v.shape[0] - 1) * v.std(0, ddof=1) / np.sqrt(v.shape[0])
    return mean, mean - half, mean + half


def _base(text: str) -> str:
    """A job's description without its seed (the label names seeds itself)."""
    return re.sub(r" \(seed -?\d+\)$", "", text)


def group_label(members: Sequence[JobRecord], label: Callable[[JobRecord], str]) -> str:
    """What the runs train, then their job ids and seeds: two runs with the same settings read apart."""
    base = _base(label(members[0]))
    if len(members) == 1:
        job = members[0]
        ended = f", {job.status}" if job.status in ENDED else ""
        return f"{base} · job #{job.id} (seed {job.seed}{ended})"
    ids = ", ".join(f"#{job.id}" for job in members)
    seeds = ", ".join(str(job.seed) for job in members)
    return f"{base} · jobs {ids} (seeds {seeds})"


def group_curves(jobs: Sequence[JobRecord], series: SeriesFn, label: Callable[[JobRecord], str]) -> list[CurveGroup]:
    """One CurveGroup per group of jobs with evaluation points (runs without any are left_out's). The mean
    and band are over the steps every run of the group logged (a run still going shortens the mean to what
    all seeds have reached); each run's whole curve is kept as a SeedLine. A failed or cancelled run is a
    line of its own, so it never cuts its finished siblings' line short."""
    groups: dict[str, list[tuple[JobRecord, np.ndarray, np.ndarray]]] = defaultdict(list)
    for job in jobs:
        steps, values = series(job.id)
        if not len(steps):
            continue
        order = np.argsort(steps, kind="stable")
        groups[group_key(job)].append((job, np.asarray(steps)[order], np.asarray(values, dtype=np.float64)[order]))
    out: list[CurveGroup] = []
    for members in groups.values():
        members.sort(key=lambda m: (m[0].seed, m[0].id))
        common = members[0][1]
        for _, steps, _ in members[1:]:
            common = np.intersect1d(common, steps)
        if not len(common):  # no step every run reached (a resumed run logging elsewhere): each run alone
            out.extend(_group([m], label) for m in members)
            continue
        out.append(_group(members, label, common))
    return out


def _group(
    members: Sequence[tuple[JobRecord, np.ndarray, np.ndarray]],
    label: Callable[[JobRecord], str],
    common: np.ndarray | None = None,
) -> CurveGroup:
    steps = members[0][1] if common is None else common
    values = np.stack([v[np.searchsorted(s, steps)] for _, s, v in members])
    mean, low, high = mean_ci95(values)
    seeds = tuple(SeedLine(f"job #{job.id} (seed {job.seed})", s, v) for job, s, v in members)
    n = len(members)
    if n < MIN_BAND_SEEDS:  # no t band below MIN_BAND_SEEDS (the chart draws the seeds): no interval carried
        low, high = mean.copy(), mean.copy()
    return CurveGroup(group_label([m[0] for m in members], label), steps, mean, low, high, n, seeds=seeds)


@dataclass(frozen=True)
class LeftOut:
    """A run the chart does not show (or shows apart), and why."""

    job: JobRecord
    reason: str


def no_points_reason(job: JobRecord, metric: str, logged: Collection[str]) -> str:
    """Why a run has no point of ``metric``, from its status, eval_every, step and the metric names it logged."""
    names = set(logged)
    sim = any(name in names for name in SIMULATOR_METRICS)
    ope = any(name.startswith("ope_") for name in names)
    if not (sim or ope):  # not evaluated yet (training losses may be logged already)
        eval_every, steps = run_length(job)
        unit = "env step" if job.kind == ONLINE_KIND else "step"
        now = f"now at {unit} {job.step or 0}" + (f" of {job.total or steps}" if job.total or steps else "")
        if job.status == "queued":
            return "queued, not started yet"
        if job.status == "running":
            if not eval_every:
                return f"evaluation only at the end (eval_every 0); {now}"
            return f"still before the first evaluation at {unit} {eval_every} ({now})"
        if job.status in ENDED:
            return f"it ended before its first evaluation (eval_every {eval_every or '0: only at the end'})"
        return "no evaluation was logged"
    if metric in SIMULATOR_METRICS and not sim:
        return "its dataset names no simulator: it is scored by off-policy estimates (see Off-policy estimates)"
    if metric.startswith("ope_") and not ope:
        return "evaluated in its simulator, so it logs no off-policy estimates (an ope job scores a saved agent)"
    if metric.startswith("diag_"):
        if job.kind == ONLINE_KIND:
            return "online runs log no critic and lookup diagnostics (offline latent agents do)"
        if job.config.get("algo") not in LATENT_ALGOS:
            return f"diagnostics are logged by latent agents ({', '.join(LATENT_ALGOS)}) only"
        if not sim:
            return "diagnostics are logged at simulator evaluations only"
        if metric == "diag_critic_argmax_score":
            return "logged at the last step only" + (" (still running)" if job.status == "running" else "")
    return f"this run logged no {metric}"


def left_out(jobs: Sequence[JobRecord], series: SeriesFn, metric: str, logged: LoggedFn | None = None) -> list[LeftOut]:
    """Every failed or cancelled run (its error message; its points, if any, are a line of their own) and
    every run without a point of ``metric`` ("no evaluation points" and why). ``logged(job_id)``: the metric
    names a run logged (to tell "not evaluated yet" from "never logs this metric")."""
    out = []
    for job in jobs:
        steps, _ = series(job.id)
        if job.status in ENDED:
            why = job.exit_reason or "no reason recorded"
            kind = FAILURES.get(str(getattr(job, "failure", None) or ""))
            status = f"{job.status} ({kind})" if kind and job.status == "failed" else job.status
            if len(steps):
                last = int(np.max(steps))
                drawn = f"its {len(steps)} evaluation point(s) up to step {last} are drawn as a line of its own"
            else:
                drawn = "no evaluation points: " + no_points_reason(job, metric, logged(job.id) if logged else ())
            out.append(LeftOut(job, f"{status}: {why}; {drawn}"))
        elif not len(steps):
            out.append(
                LeftOut(job, "no evaluation points: " + no_points_reason(job, metric, logged(job.id) if logged else ()))
            )
    return out


def status_line(jobs: Sequence[JobRecord]) -> str:
    """How many of the runs finished, failed and are running (cancelled and queued when there are any)."""
    if not jobs:
        return "No run picked."
    counts = Counter(job.status for job in jobs)
    parts = [f"{counts['succeeded']} finished", f"{counts['failed']} failed"]
    parts += [f"{counts['cancelled']} cancelled"] if counts["cancelled"] else []
    parts += [f"{counts['running']} running"]
    parts += [f"{counts['queued']} queued"] if counts["queued"] else []
    return f"{len(jobs)} run{'s' * (len(jobs) != 1)}: " + ", ".join(parts) + "."
