"""Runs: live return curves of running and finished jobs (mean and 95% CI over seeds), the job
table with cancel / resume, and the benchmark tables from results/."""

import json

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


def curve_panel() -> None:
    records = jobs_client.jobs("train-agent")
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
        "at every evaluation: docs/results.md explains each.",
    )
    chosen = [job for job in with_curves if job.id in picked]
    groups = curves.group_curves(chosen, lambda job_id: jobs_client.metric_series(job_id, metric), jobs_client.describe)
    running = [job for job in chosen if job.status in jobs_client.ACTIVE]
    st.caption(f"{len(running)} running; live (polled every 2 s)" if running else "All finished.")
    if groups:
        st.plotly_chart(charts.learning_curves(groups, METRICS[metric]), key="runs.curves")
    else:
        st.caption("No evaluation logged yet (the first comes after eval_every steps).")


st.subheader("Returns")
live_fragment(curve_panel, lambda: any_active(("train-agent",)))  # live while a run goes on, quiet otherwise


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
    groups = ope_view.ope_curves(on, estimator, jobs_client.metric_series, jobs_client.describe)
    if groups:
        st.plotly_chart(
            charts.learning_curves(groups, f"{ope_view.OPE_ESTIMATORS[estimator]} estimate"), key="runs.ope.curves"
        )
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
