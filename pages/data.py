"""Data: generate a dataset from a built-in environment (a background job), upload one, and
summarise any dataset (counts, returns, action frequency, behaviour score, metadata)."""

import streamlit as st

from merlion_core.config import ConfigError
from merlion_core.data.dataset import DatasetError
from merlion_core.envs import ENV_SPECS
from merlion_core.jobs.spec import CollectJob
from studio import catalog, charts, jobs_client, loaders, settings, simulator, uploads
from studio.forms import config_form
from studio.page import any_active, live_fragment, progress_lines, setup

setup("Data")
st.title("Data")
generate, upload, browse = st.tabs(["Generate", "Upload", "Summary"])

with generate:
    st.caption(
        "Collect a logged dataset with one of the environment's behaviour policies (runs as a background "
        "job; expert and random normalisers are measured too)."
    )
    env_names = [spec.short_name for spec in ENV_SPECS.values()]
    env = st.selectbox(
        "Environment",
        env_names,
        key="data.env",
        format_func=lambda n: f"{n}: {next(s.description for s in ENV_SPECS.values() if s.short_name == n)}",
    )
    behaviour = st.selectbox("Behaviour", ["medium", "expert", "random"], key="data.behaviour")
    options = config_form(
        CollectJob, CollectJob(n=settings.DEMO_TRANSITIONS), "data.collect", skip=("env", "behaviour", "env_config")
    )
    seed = st.number_input("Seed", value=0, min_value=0, step=1, key="data.seed")
    if st.button("Generate", type="primary", key="data.generate"):
        config = {"env": env, "behaviour": behaviour, "n": settings.DEMO_TRANSITIONS, **options}
        try:
            job_id = jobs_client.submit("collect", config, int(seed), tag="studio:data")
            st.session_state["data.last_job"] = job_id
            st.success(f"Job #{job_id} queued: collecting {config['n']:,} transitions.")
        except (ValueError, ConfigError, FileNotFoundError) as exc:
            st.error(str(exc))

    live_fragment(lambda: progress_lines(jobs_client.jobs("collect")[-5:][::-1]), lambda: any_active(("collect",)))

with upload:
    st.caption(
        f"npz (D4RL keys), D4RL HDF5, d3rlpy HDF5 (.h5) or a Minari dataset folder as a .zip; at most "
        f"{settings.MAX_UPLOAD_MB} MB. Saved under `{settings.data_dir() / 'uploads'}` with a safe name."
    )
    file = st.file_uploader("Dataset file", type=["npz", "h5", "hdf5", "zip"], key="data.upload")
    if file is not None:
        token = (file.name, file.size, getattr(file, "file_id", ""))
        if st.session_state.get("data.upload_token") != token:  # validate and save each upload once
            st.session_state["data.upload_token"] = token
            try:
                saved = uploads.save_and_check(file.name, file.getvalue())
                st.session_state["data.upload_result"] = ("ok", str(saved.path), saved.format)
                st.session_state["data.browse"] = str(saved.path)  # the Summary tab opens on it
            except (uploads.UploadError, DatasetError) as exc:
                st.session_state["data.upload_result"] = ("error", str(exc), "")
        status, text, fmt = st.session_state["data.upload_result"]
        if status == "ok":
            st.success(
                f"{file.name}: valid {fmt} dataset, saved as `{text}`. Its summary is in the Summary tab"
                + ("." if loaders.dataset(text).meta.env_id else "; it names no simulator (see there).")
            )
        else:
            st.error(text)


def simulator_panel(path: str, summary: dict) -> None:
    """The dataset's simulator: for one that names none, say what that means and offer the
    registered environments of its shape (or keeping none); one named here can be taken back."""
    meta = loaders.dataset(path).meta
    notice = st.session_state.pop("data.sim_notice", None)
    if notice:
        getattr(st, notice[0])(notice[1])
    if meta.env_id and simulator.named_in_studio(meta):
        st.caption(f"Simulator `{meta.env_id}` was named here (the dataset's maker recorded none).")
        if st.button("Back to no simulator", key="data.sim_undo"):
            act(simulator.clear_env, path, "No simulator again: the metadata it replaced is back.")
    if meta.env_id:
        return
    st.info(simulator.NO_SIMULATOR_NOTE + ".")
    problem = simulator.editable_problem(path)
    choices = {s.env_id: s for s in simulator.matching_envs(summary["obs_dim"], summary["n_actions"])}
    if problem or not choices:
        st.caption(
            problem
            or simulator.no_match_text(
                summary["obs_dim"], summary["n_actions"], bool(meta.extra.get("n_actions_inferred"))
            )
        )
        return
    options = ["none", *choices]
    if st.session_state.get("data.simulator") not in options:
        st.session_state.pop("data.simulator", None)
    pick = st.radio(
        f"Simulator (registered environments with {summary['obs_dim']} observation values and "
        f"{summary['n_actions']:,} actions, as this dataset)",
        options,
        key="data.simulator",
        format_func=lambda i: "none: keep it as it is" if i == "none" else choices[i].label,
    )
    if st.button("Name this simulator", key="data.sim_go", disabled=pick == "none"):
        with st.spinner(f"Measuring {pick}'s expert and random returns (1000 episodes each) ..."):
            act(
                lambda p: simulator.name_env(p, pick),
                path,
                f"Simulator `{pick}` recorded in the dataset; jobs on it now evaluate agents in it.",
            )


def act(change, path: str, done: str) -> None:
    try:
        change(path)
        st.session_state["data.sim_notice"] = ("success", done)
    except simulator.SimulatorError as exc:
        st.session_state["data.sim_notice"] = ("error", str(exc))
    st.rerun()


with browse:
    entries = catalog.datasets()
    if not entries:
        st.info("No dataset yet: generate or upload one (the demo's dataset appears here when its job finishes).")
    else:
        paths = [e.path for e in entries]
        labels = {e.path: e.label for e in entries}
        if st.session_state.get("data.browse") not in paths:
            st.session_state["data.browse"] = paths[-1]
        path = st.selectbox("Dataset", paths, format_func=labels.__getitem__, key="data.browse")
        try:
            summary, returns, counts = loaders.summary(path)
        except DatasetError as exc:
            st.error(str(exc))
        else:
            cols = st.columns(5)
            cols[0].metric("Transitions", f"{summary['n_transitions']:,}")
            cols[1].metric("Episodes", f"{summary['n_episodes']:,}")
            cols[2].metric("Actions used", f"{summary['distinct_actions']:,} / {summary['n_actions']:,}")
            cols[3].metric("Mean return", f"{summary['mean_return']:.2f}")
            score = summary["behaviour_normalised_score"]
            cols[4].metric(
                "Behaviour score",
                f"{score:.1f}" if score is not None else "—" if summary["env_id"] is None else "n/a",
                help="100 (R - R_random) / (R_expert - R_random), R_expert and R_random measured in the "
                "dataset's simulator" + ("" if summary["env_id"] else ": it names none"),
            )
            simulator_panel(path, summary)
            left, right = st.columns(2)
            left.plotly_chart(charts.return_histogram(returns), key="data.returns")
            right.plotly_chart(charts.action_frequency(counts), key="data.actions")
            st.markdown("**What the dataset's metadata says**")
            st.json(summary, expanded=False)
