"""Runs: live return curves of running and finished jobs, offline (train-agent) and online (train-online)
ones (mean over seeds, with a 95% t band from 3 seeds on and each seed's own line below that), the runs left
off the chart and why, the job table with cancel / resume, and the benchmark tables from results/."""

import json
import re
from collections.abc import Sequence

import streamlit as st

from merlion_core.benchmark.report import markdown_table
from studio import charts, curves, jobs_client, ope_view, settings
from studio.page import any_active, job_table, live_fragment, setup

setup("Runs")
st.title("Runs")

METRICS = {
    "normalised_score": "normalised score",
    "mean_return": "mean return",
    "success_rate": "success rate",
    "diag_q_data": "Q(s, e_data)",
    "diag_mc_return": "dataset MC return",
    "diag_lookup_gap": "lookup gap",
    "diag_taken_ood_share": "taken actions OOD (G)",
    "diag_entropy_alpha": "temperature",
    "diag_critic_argmax_score": "critic argmax score (last)",
}


CURVE_KINDS = ("train-agent", "train-online")
"""Jobs with learning curves: offline agents (x: gradient steps) and online ones (x: env steps)."""


def curve_panel() -> None:
    records = sorted((job for kind in CURVE_KINDS for job in jobs_client.jobs(kind)), key=lambda job: job.id)
    with_curves = [job for job in records if job.status != "queued"]
    if not with_curves:
        st.info("No training run yet: start one on the Train page (or wait for the demo).")
        return
    ids = [job.id for job in with_curves]
    picked = st.multiselect(
        "Runs to compare",
        ids,
        default=ids[-8:],
        key="runs.pick",
        format_func=lambda i: f"#{i} {jobs_client.describe(next(j for j in with_curves if j.id == i))}",
    )
    metric = st.radio(
        "Metric",
        list(METRICS),
        horizontal=True,
        key="runs.metric",
        format_func=METRICS.get,
        help="Latent agents (MERLION-CQL / BCQ) also log their critic and lookup diagnostics "
        "at every evaluation: docs/results.md explains each. Online runs (labelled online) count "
        "env steps on the x axis, offline runs gradient steps.",
    )
    chosen = [job for job in with_curves if job.id in picked]
    data = {job.id: jobs_client.metric_series(job.id, metric) for job in chosen}
    groups = curves.group_curves(chosen, data.__getitem__, jobs_client.describe)
    missing = curves.left_out(chosen, data.__getitem__, metric, _logged)
    live = any(job.status in jobs_client.ACTIVE for job in chosen)
    queued = sum(job.status == "queued" for job in records)
    st.caption(
        curves.status_line(chosen)
        + (" Live (polled every 2 s)." if live else "")
        + (f" {queued} more queued (not started, not listed)." if queued else "")
    )
    if groups:
        figure = charts.learning_curves(groups, METRICS[metric])
        figure.update_layout(xaxis_title=curves.x_axis_title(chosen))
        st.plotly_chart(figure, key="runs.curves")
    elif chosen:
        st.caption("Nothing to draw: no picked run has an evaluation point of this metric (why: below).")
    if missing:
        left_out_list(missing, "Not on the chart, or drawn apart")


def _logged(job_id: int) -> set[str]:
    return set(jobs_client.latest_metrics(job_id))


def _plain(text: str) -> str:
    """Text shown as it is in markdown (an error message may hold *, _, `, $, ...)."""
    return re.sub(r"([\\`*_{}\[\]<>#|~$])", r"\\\1", text)


def left_out_list(items: Sequence[curves.LeftOut], title: str) -> None:
    lines = [f"- **#{i.job.id}** {_plain(jobs_client.describe(i.job))}: {_plain(i.reason)}" for i in items]
    st.markdown(f"**{title}**\n" + "\n".join(lines))


st.subheader("Returns")
live_fragment(curve_panel, lambda: any_active(CURVE_KINDS))  # live while a run goes on, quiet otherwise


def ope_panel() -> None:
    agents = [job for job in jobs_client.jobs("train-agent") if job.status != "queued"]
    datasets = sorted({d for d in map(ope_view.dataset_of, agents) if d})
    if not datasets:
        st.caption("No agent yet.")
        return
    dataset = st.selectbox(
        "Agents trained on", datasets, key="runs.ope.dataset", format_func=lambda p: p.split("/")[-1]
    )
    on = [job for job in agents if ope_view.dataset_of(job) == dataset]
    estimator = st.radio(
        "Estimator",
        list(ope_view.OPE_ESTIMATORS),
        horizontal=True,
        key="runs.ope.estimator",
        format_func=ope_view.OPE_ESTIMATORS.get,
    )
    st.caption(
        "Estimates on held-out episodes the agent never trained on, each with its own 95% bootstrap "
        "interval (one line per run). Runs on data without a simulator log them at every evaluation; "
        "`merlion ope` or an ope job scores any saved agent. docs/ope.md: when each estimator can be trusted."
    )
    name = f"ope_{estimator}"
    data = {job.id: jobs_client.metric_series(job.id, name) for job in on}
    groups = ope_view.ope_curves(on, estimator, jobs_client.metric_series, jobs_client.describe)
    if groups:
        st.plotly_chart(
            charts.learning_curves(groups, f"{ope_view.OPE_ESTIMATORS[estimator]} estimate"), key="runs.ope.curves"
        )
    missing = curves.left_out(on, data.__getitem__, name, _logged)
    failed = [i for i in missing if i.job.status in curves.ENDED]
    if failed:
        left_out_list(failed, "Failed or cancelled")
    if len(missing) > len(failed):
        with st.expander(f"{len(missing) - len(failed)} run(s) on this dataset without {name} points (why)"):
            left_out_list([i for i in missing if i.job.status not in curves.ENDED], "Not on the chart")
    rows = ope_view.ranking_rows(on, jobs_client.jobs("ope"), jobs_client.latest_metrics, jobs_client.describe)
    if rows:
        st.markdown("**Ranking** (best FQE estimate first; the simulator's score beside it where there is one)")
        st.dataframe(rows, hide_index=True, key="runs.ope.ranking")


st.subheader("Off-policy estimates")
live_fragment(ope_panel, lambda: any_active(("train-agent", "ope")))

st.subheader("Jobs")
show_all = st.checkbox("Show warm-start jobs too", key="runs.show_warm")
records = [job for job in jobs_client.jobs() if show_all or job.kind != "warm-start"]
job_table(records, "runs.jobs")

st.subheader("Benchmark tables")
summaries = sorted(settings.RESULTS.glob("*/summary.json")) if settings.RESULTS.is_dir() else []
if not summaries:
    st.caption("No benchmark results in results/ yet (`merlion bench ... --out results/ENV`).")
for path in summaries:
    with st.expander(f"{path.parent.name}", expanded=len(summaries) == 1):
        st.markdown(markdown_table(json.loads(path.read_text())))
