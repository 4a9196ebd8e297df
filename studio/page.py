"""What every page does first, and the widgets several pages share.

A page opened by its direct URL (or run alone by AppTest) calls ``setup`` itself, so nothing
depends on app.py having run: page config, the demo chain and its background advancer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pandas as pd
import streamlit as st

from merlion_core.jobs.store import JobStateError
from studio import chains, jobs_client, settings
from studio.navigation import rerun_app_unless_leaving

PAGES = (
    ("pages/home.py", "Home", ":material/home:"),
    ("pages/data.py", "Data", ":material/dataset:"),
    ("pages/train.py", "Train", ":material/model_training:"),
    ("pages/embeddings.py", "Embeddings", ":material/scatter_plot:"),
    ("pages/pseudometric.py", "Pseudometric", ":material/grid_on:"),
    ("pages/runs.py", "Runs", ":material/monitoring:"),
)


PRELOAD_DELAY = 3.0
"""Seconds after the server's first page before torch and the model code are imported in the
background (so that the first visit to Embeddings or Train does not pay for it, and Home is not
slowed down by it)."""


def _preload() -> None:
    time.sleep(PRELOAD_DELAY)
    import merlion_core.algos.artifacts  # noqa: F401  (torch and every algorithm)
    import merlion_core.pipelines.encoder  # noqa: F401  (every representation method)


@st.cache_resource
def _background() -> bool:
    """Once per server process: start the demo if it was never built, the chain advancer, and
    the preloading of the model code (imports only: nothing trains here)."""
    threading.Thread(target=_preload, name="studio-preload", daemon=True).start()
    try:
        chains.ensure_demo()
    finally:
        chains.start_advancer()
    return True


def setup(title: str) -> None:
    st.set_page_config(page_title=f"{title} · MERLION Studio", page_icon=":material/scatter_plot:", layout="wide")
    _background()
    chains.start_advancer()  # restarts the thread when a page added a chain
    with st.sidebar:
        for path, label, icon in PAGES:
            page_link(st, path, label, icon)
        st.divider()
        demo = chains.load(chains.DEMO)
        state = chains.status(demo)
        st.caption(f"Demo: **{state}** · runs in `{settings.runs_dir()}`")


LIVE_MAX_EVERY = 30.0
"""Longest refresh interval of a live fragment (seconds), however slow its body gets."""


def next_interval(interval: float, took: float, every: float, most: float = LIVE_MAX_EVERY) -> float:
    """A live fragment's next refresh interval: its body must take under half of it, or the next
    refresh queues before the last one is drawn and the page never settles (a busy CPU). Grows to
    3x the body's time when it took over half the interval, shrinks back towards ``every`` when it
    took under a sixth; otherwise unchanged (no back-and-forth)."""
    if 2 * took > interval:
        return min(most, max(every, 3 * took))
    if 6 * took < interval and interval > every:
        return max(every, 3 * took)
    return interval


def live_fragment(body: Callable[[], None], active: Callable[[], bool], every: float = 2.0) -> None:
    """Run ``body`` as a fragment that reruns every ``every`` seconds (longer while the body is slow:
    :func:`next_interval`) while ``active()`` holds and stays quiet otherwise; a change of ``active()``
    or of the interval reruns the page."""
    live = active()
    key = f"live.every.{body.__module__}.{body.__qualname__}"
    interval = float(st.session_state.get(key, every))

    def wrapped() -> None:
        started = time.perf_counter()
        body()
        wanted = next_interval(interval, time.perf_counter() - started, every)
        if active() != live:
            rerun_app_unless_leaving()
        elif live and wanted != interval:
            st.session_state[key] = wanted
            rerun_app_unless_leaving()

    st.fragment(run_every=interval if live else None)(wrapped)()


def any_active(kinds: tuple[str, ...] | None = None) -> bool:
    """Whether a job (of these kinds) is queued or running."""
    return any(job.kind in (kinds or (job.kind,)) for job in jobs_client.jobs(status=jobs_client.ACTIVE))


def page_link(column: object, path: str, label: str, icon: str) -> None:
    """st.page_link under st.navigation; a plain link to the page's URL when the page runs alone."""
    from streamlit.errors import StreamlitPageNotFoundError

    try:
        column.page_link(path, label=label, icon=icon)  # type: ignore[attr-defined]
    except StreamlitPageNotFoundError:
        column.markdown(f"[{label}](/{path.removeprefix('pages/').removesuffix('.py')})")  # type: ignore[attr-defined]


def job_table(records: list, key: str, actions: bool = True) -> None:
    """A table of jobs, and cancel / resume (interrupted, killed or cancelled jobs only) for the one picked."""
    if not records:
        st.info("No jobs yet.")
        return
    table = pd.DataFrame([row.__dict__ for row in jobs_client.rows(records)]).set_index("id")
    st.dataframe(table, width="stretch", key=f"{key}.table")
    if not actions:
        return
    ids = [job.id for job in records]
    cols = st.columns([2, 1, 1, 3])
    picked = cols[0].selectbox("Job", ids[::-1], key=f"{key}.pick", format_func=lambda i: f"#{i}")
    job = next(j for j in records if j.id == picked)
    notice = st.session_state.pop(f"{key}.notice", None)
    if notice:
        cols[3].caption(notice)
    if cols[1].button("Cancel", key=f"{key}.cancel", disabled=job.status not in jobs_client.ACTIVE):
        outcome = jobs_client.cancel(picked)
        st.session_state[f"{key}.notice"] = f"job #{picked}: cancel {outcome}"
        st.rerun()
    # resume only an interrupted, killed or cancelled job: one that failed with its own error would fail again
    why_not = jobs_client.why_not_resumable(job) if job.status == "failed" else None
    if cols[2].button("Resume", key=f"{key}.resume", disabled=not jobs_client.can_resume(job), help=why_not):
        try:
            jobs_client.resume(picked)
            st.session_state[f"{key}.notice"] = f"job #{picked}: queued again from its latest checkpoint"
        except JobStateError as exc:
            st.session_state[f"{key}.notice"] = str(exc)
        st.rerun()
    with st.expander(f"Log of job #{picked}"):
        st.code(jobs_client.log_tail(picked)[-5000:] or "(no output yet)")


def progress_lines(records: list) -> None:
    """A progress bar per active job (and the last finished ones)."""
    for job in records:
        text = f"#{job.id} {job.kind}: {jobs_client.describe(job)}: **{job.status}**"
        if job.exit_reason:
            text += f" ({job.exit_reason})"
        st.progress(jobs_client.progress_fraction(job), text=text)
