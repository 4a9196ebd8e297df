"""Train: an action representation (MERLION or a baseline) and an offline RL agent, as background
jobs; forms generated from the config dataclasses; launch, cancel, resume; progress."""

import time
from typing import TypedDict

import streamlit as st

from merlion_core.algos.registry import ALGORITHMS, FACTORISED_ALGORITHMS, LATENT_ALGORITHMS
from merlion_core.config import ConfigError
from merlion_core.data.dataset import DatasetError
from merlion_core.envs.factors import env_action_factors
from merlion_core.jobs.spec import TrainAgentJob
from merlion_core.pipelines.encoder import representation_config
from merlion_core.pipelines.ope import OPEConfig
from merlion_core.representation.registry import METHODS
from studio import catalog, chains, jobs_client, loaders, settings, simulator
from studio.forms import config_form
from studio.page import any_active, job_table, live_fragment, progress_lines, setup


class Evaluation(TypedDict, total=False):
    """The evaluation fields of TrainAgentJob that this page sets."""

    eval_every: int
    eval_episodes: int


setup("Train")
st.title("Train")
st.caption("Everything here runs as background jobs (see Runs); this page only submits them.")

datasets = catalog.datasets()
if not datasets:
    st.info("No dataset yet: generate or upload one on the Data page, or wait for the demo's.")
    st.stop()
labels = {e.path: e.label for e in datasets}
dataset_path = st.selectbox(
    "Dataset", list(labels), index=len(labels) - 1, format_func=labels.__getitem__, key="train.dataset"
)
try:
    env_id = loaders.dataset(dataset_path).meta.env_id
except DatasetError as exc:
    st.error(str(exc))
    st.stop()
if not env_id:
    st.info(
        simulator.NO_SIMULATOR_NOTE
        + ". The agent form has no simulator episodes to set: `holdout` is the share of episodes kept out for "
        "that evaluation (null: 0.2), and each evaluation point (`eval_every`; 0: only at the end) fits its "
        "own estimators (a minute or two each on a CPU)."
        + " Name the simulator on the Data page if the data came from a registered environment."
    )
seeds = int(st.number_input("Seeds (one job each; curves show mean and 95% CI)", 1, 10, 1, key="train.seeds"))


def submit_all(kind: str, config: dict, what: str) -> None:
    try:
        ids = [jobs_client.submit(kind, config, seed, tag="studio:train") for seed in range(seeds)]
        st.success(f"Queued {what}: job(s) {', '.join(f'#{i}' for i in ids)}")
    except (ValueError, ConfigError, FileNotFoundError) as exc:
        st.error(str(exc))


rep_tab, agent_tab, ope_tab = st.tabs(["Representation", "Agent", "Off-policy evaluation"])
with rep_tab:
    method = st.selectbox(
        "Method", list(METHODS), key="train.method", format_func=lambda m: f"{m}: {METHODS[m].description}"
    )
    rep_defaults = representation_config(method, env_id, {})
    st.caption(f"Defaults: the paper's settings for {env_id or 'this dataset'}.")
    rep_options = config_form(METHODS[method].config_cls, rep_defaults, f"train.rep.{method}")
    if st.button("Train encoder", type="primary", key="train.encoder_go"):
        submit_all(
            "train-encoder",
            {"dataset": dataset_path, "method": method, "options": rep_options},
            f"{method} encoder x {seeds}",
        )

with agent_tab:
    # DecQN needs sub-actions: offered only where the dataset's env declares them (the mazes)
    factorised = env_id is not None and env_action_factors(env_id) is not None
    algos = [a for a in ALGORITHMS if factorised or a not in FACTORISED_ALGORITHMS]
    algo = st.selectbox(
        "Algorithm",
        algos,
        index=algos.index("cql"),
        key="train.algo",
        format_func=lambda a: f"{a}{' (latent: needs an encoder)' if a in LATENT_ALGORITHMS else ''}",
    )
    encoder = None
    new_encoder = False
    if algo in LATENT_ALGORITHMS:
        encoders = [e for e in catalog.encoders() if e.dataset == dataset_path]
        choices = ["new"] + [e.path for e in encoders]
        enc_labels = {
            "new": f"train a new {method} encoder first (the Representation tab's settings)",
            **{e.path: e.label for e in encoders},
        }
        encoder = st.selectbox(
            "Encoder", choices, index=len(choices) - 1, format_func=enc_labels.__getitem__, key="train.encoder"
        )
        new_encoder = encoder == "new"
    # without a simulator there are no episodes to roll out, and evaluation points (OPE) only where supported
    evaluation: Evaluation = (
        {"eval_every": settings.DEMO_EVAL_EVERY, "eval_episodes": settings.DEMO_EVAL_EPISODES}
        if env_id
        else {"eval_every": 0}
    )
    no_sim = () if env_id else ("eval_episodes",)
    skip = ("dataset", "algo", "encoder", "options", *no_sim)
    run = config_form(
        TrainAgentJob, TrainAgentJob(steps=settings.DEMO_AGENT_STEPS, **evaluation), "train.run", skip=skip
    )
    config_cls = ALGORITHMS[algo][0]
    with st.expander(f"{algo} settings ({config_cls.__name__})"):
        algo_options = config_form(config_cls, config_cls(), f"train.algo.{algo}")
    if st.button("Train agent", type="primary", key="train.agent_go"):
        agent_config = {
            "dataset": dataset_path,
            "algo": algo,
            "options": algo_options,
            "steps": settings.DEMO_AGENT_STEPS,
            **evaluation,
            **run,
        }
        if new_encoder:
            steps = [chains.Step("train-encoder", {"dataset": dataset_path, "method": method, "options": rep_options})]
            steps += [
                chains.Step("train-agent", agent_config, seed, inputs={"encoder": (0, "encoder")})
                for seed in range(seeds)
            ]
            chains.create(f"train-{int(time.time() * 1000)}", steps)
            chains.start_advancer()
            st.success(f"Queued a {method} encoder; {seeds} {algo} run(s) start when it is trained.")
        else:
            submit_all(
                "train-agent", {**agent_config, **({"encoder": encoder} if encoder else {})}, f"{algo} x {seeds}"
            )


with ope_tab:
    st.caption(
        "Estimate a saved agent's return from logged episodes it never trained on: this dataset's "
        "held-out episodes when the agent trained on it with a holdout, or every episode of other data. "
        "Results: the Runs page's off-policy section."
    )
    saved = catalog.agents()
    if not saved:
        st.caption("No finished agent yet.")
    else:
        agent_labels = {e.path: e.label for e in saved}
        agent_path = st.selectbox(
            "Agent",
            list(agent_labels),
            index=len(agent_labels) - 1,
            format_func=agent_labels.__getitem__,
            key="train.ope.agent",
        )
        ope_options = config_form(OPEConfig, OPEConfig(), "train.ope.options")
        if st.button("Estimate", type="primary", key="train.ope_go"):
            submit_all(
                "ope", {"agent": agent_path, "dataset": dataset_path, "options": ope_options}, "off-policy evaluation"
            )


def training_jobs() -> None:
    records = [job for job in jobs_client.jobs() if job.kind in ("train-encoder", "train-agent", "ope")]
    progress_lines([job for job in records if job.status in jobs_client.ACTIVE][::-1])
    job_table(records[-20:], "train.jobs")


st.subheader("Training jobs")
live_fragment(training_jobs, lambda: any_active(("train-encoder", "train-agent", "ope")))
