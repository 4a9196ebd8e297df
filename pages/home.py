"""Home: what MERLION does, one picture, and the demo (built in the background on first start)."""

import streamlit as st

from studio import chains, jobs_client, settings
from studio.page import live_fragment, page_link, progress_lines, setup

setup("Home")
st.title("MERLION Studio")
st.markdown(
    "Offline reinforcement learning for problems with **thousands of discrete actions** "
    "(*Learning Pseudometric-based Action Representations for Offline RL*, ICML 2022). "
    "MERLION learns a state-conditional action encoder phi(a; s) whose L1 distances follow a "
    "behavioural pseudometric (reward difference + W2 distance of next states, with a penalty p "
    "for actions the data never shows), runs a continuous offline RL algorithm (CQL) in that "
    "latent space, and maps its output back to a real action by L1 nearest neighbour."
)
st.image(str(settings.ASSETS / "merlion_overview.svg"), width="stretch")

st.subheader("Start with the demo")
st.caption(
    f"The demo: a maze dataset of {settings.DEMO_TRANSITIONS:,} transitions (medium behaviour, 50% noise), "
    f"a MERLION encoder ({settings.DEMO_ENCODER_STEPS:,} steps, batch {settings.DEMO_BATCH}), a Transition "
    "encoder to compare it with, and a short "
    f"MERLION-CQL run ({settings.DEMO_AGENT_STEPS:,} steps, batch {settings.DEMO_BATCH}): small enough to "
    "build in a few minutes on 2 CPU cores, as background jobs. The paper's runs are 10x longer."
)


def demo_status() -> None:
    chain = chains.load(chains.DEMO)
    state = chains.status(chain)
    if chain is None:
        st.info("The demo is not built (it is switched off here). Build it now:")
    else:
        st.markdown(f"Demo: **{state}**")
        progress_lines([job for _, job in chains.step_jobs(chain) if job is not None])
        waiting = [step.kind for step, job in chains.step_jobs(chain) if job is None]
        if waiting:
            st.caption("Waiting for its inputs: " + ", ".join(waiting))
    if state in ("missing", "failed") and st.button("Build the demo", key="home.build_demo"):
        chains.rebuild_demo()
        chains.start_advancer()
        st.rerun()


live_fragment(demo_status, lambda: chains.status(chains.load(chains.DEMO)) == "building")
QUICK_LINKS = (
    ("pages/data.py", "Data: generate or upload", ":material/dataset:"),
    ("pages/train.py", "Train encoders and agents", ":material/model_training:"),
    ("pages/embeddings.py", "Embeddings (Fig. 4)", ":material/scatter_plot:"),
    ("pages/pseudometric.py", "Pseudometric", ":material/grid_on:"),
    ("pages/runs.py", "Runs and returns", ":material/monitoring:"),
)
# One row that wraps: each link is as wide as its label and goes to the next line when the row
# is full (five equal columns cut the longer labels off at 1400 px with the sidebar open).
links = st.container(horizontal=True, wrap=True, gap="medium", key="home.links")
for target, label, icon in QUICK_LINKS:
    page_link(links, target, label, icon)
active = [job for job in jobs_client.jobs() if job.status in jobs_client.ACTIVE]
st.caption(f"{len(active)} job(s) queued or running.")
