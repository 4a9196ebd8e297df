"""Pseudometric: at one state, the learned L1 distances between actions next to the true
pseudometric (Eq. 3), ordered by equivalence class; a hover heatmap up to 256 x 256, a PNG
overview with a zoomable block beyond; the diagnostics (Spearman, class separation, OOD share).
Above studio.sampling.PSEUDOMETRIC_BUDGET actions the heatmaps cover a seeded sample (said in a
caption), whose embeddings alone are computed."""

import time

import numpy as np
import streamlit as st

from merlion_core.data.dataset import DatasetError
from merlion_core.pipelines.encoder import diagnose_encoder
from studio import catalog, explore, loaders, sampling, simulator
from studio.charts import HEATMAP_MAX, distance_heatmap
from studio.page import setup
from studio.png import matrix_png

SIZES = (64, 128, 256, 512, 1024)


def work_message(what: str) -> str:
    """A spinner's text: what is computed (the spinner shows the time elapsed; results are cached)."""
    return f"{what} (cached for this state after the first time) ..."


setup("Pseudometric")
st.title("Pseudometric")
st.caption(
    "Learned ||phi(a_i; s) - phi(a_j; s)||_1 against the true d(a_i, a_j | s) = |R_i - R_j| + gamma W2(P_i, P_j) "
    "(Eq. 3, from the env's true model, action noise included), actions ordered by equivalence class "
    "(the mazes) or video type (the recommender)."
)

encoders = catalog.encoders()
if not encoders:
    st.info("No trained encoder yet: train one on the Train page, or wait for the demo (Home).")
    st.stop()
by_path = {e.path: e for e in encoders}
path = st.selectbox(
    "Representation",
    list(by_path),
    index=list(by_path).index(catalog.preferred_encoder(encoders)),
    format_func=lambda p: by_path[p].label,
    key="pm.encoder",
)
try:
    ds = loaders.dataset(by_path[path].dataset or "")
except DatasetError as exc:
    st.error(f"The dataset this encoder was trained on does not load: {exc}")
    st.stop()
model = loaders.model_for(ds)
env = loaders.env_key(ds) if model is not None else None
if not ds.meta.env_id:
    st.info(
        simulator.needs_true_model_text(
            "the true pseudometric d(a_i, a_j | s) beside the learned distances, their Spearman correlation, the "
            "class separation (the equivalence classes are the simulator's) and the diagnostics over many states. "
            "Shown: the learned distances and, for a MERLION encoder, the OOD share (its own behaviour model)"
        )
    )
observations = np.asarray(ds.observations)
cols = st.columns(3)
row = int(cols[0].number_input("Dataset row (the state)", 0, len(observations) - 1, 0, step=1, key="pm.row"))
n_actions = int(loaders.representation(path).representation.n_actions)
limit = min(n_actions, sampling.PSEUDOMETRIC_BUDGET)  # a K x K matrix: never every action of a large set
sizes = [k for k in SIZES if k < limit] + [limit]
if len(sizes) > 1:
    size = cols[1].select_slider("Actions shown", sizes, value=256 if 256 in sizes else sizes[-1], key="pm.size")
else:
    size = n_actions
    cols[1].markdown(f"All **{n_actions}** actions shown")
seed = int(cols[2].number_input("Action sample seed", 0, 10_000, 0, key="pm.seed"))
obs = observations[row].astype(np.float32)
st.markdown("State: `" + ", ".join(f"{v:.3f}" for v in obs) + "`")
if size < n_actions:
    st.caption(
        f"The heatmaps show a seeded random sample of {size:,} of {n_actions:,} actions (sample seed {seed}; "
        f"at most {sampling.PSEUDOMETRIC_BUDGET:,}), in class order; the OOD share counts every action."
    )


@st.cache_data(max_entries=16, show_spinner=False)  # the page's own spinner says what is computed
def matrices(
    path: str, mtime: float, state: tuple, k: int, seed: int, env: tuple | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, float | None]]:
    """(actions int[K] in class order, learned f32[K, K], true f32[K, K] or None, this state's
    Spearman and class separation); ``env`` (the dataset's env key) is in the cache key: a
    simulator named later brings the true matrix."""
    rep = loaders.representation(path).representation
    classes = loaders.action_info(*env).classes if env is not None else None
    actions = explore.ordered_actions(rep.n_actions, classes, k, np.random.default_rng(seed))
    if k < rep.n_actions:  # a sample: its K embeddings only, not embed_all over every action
        e_K = explore.action_embeddings(rep, np.asarray(state, np.float32), actions)
    else:
        e_K = loaders.embeddings(path, mtime, state)[actions]
    learned = explore.learned_distances(e_K)
    true = (
        explore.true_distances(model, np.asarray(state, np.float32), actions) if explore.has_true_model(model) else None
    )
    stats = explore.state_diagnostics(learned, true, None if classes is None else np.asarray(classes)[actions])
    return actions, learned, true, stats


@st.cache_data(max_entries=4, show_spinner=False)
def overviews(path: str, mtime: float, state: tuple, k: int, seed: int, env: tuple | None) -> list[bytes]:
    """The PNG overviews (learned, then true where there is one) of ``matrices``' result."""
    _, learned, true, _ = matrices(path, mtime, state, k, seed, env)
    return [matrix_png(m) for m in (learned, true) if m is not None]


state_key = (path, catalog.stamp(path), tuple(float(v) for v in obs), int(size), seed, env)
what = "the learned L1 distances" + (" and the true pseudometric (Eq. 3)" if explore.has_true_model(model) else "")
with st.spinner(
    work_message(f"Computing {what} of {size} x {size} action pairs at this state"),
    show_time=True,
):
    actions, learned, true, stats = matrices(*state_key)
all_classes = loaders.action_info(*env).classes if env is not None else None
classes = None if all_classes is None else np.asarray(all_classes)[actions]
rep = loaders.representation(path).representation
ood = explore.ood_mask(rep, obs, float(getattr(loaders.representation(path).config, "tau", 0.3)))
metrics = [
    (
        "Spearman (this state)",
        stats["spearman"],
        "{:.3f}",
        true is not None,
        "rank correlation of learned and true distances over the action pairs shown",
    ),
    (
        "Class separation",
        stats["class_separation"],
        "{:.3f}",
        classes is not None,
        "mean distance within an equivalence class / between classes (0 is ideal)",
    ),
    (
        "OOD share",
        None if ood is None else float(ood.mean()),
        "{:.1%}",
        ood is not None,
        "actions with G(a|s) / max G <= tau",
    ),
]
metrics = [m for m in metrics if m[3]]  # only what this encoder and its dataset allow
for column, (label, value, fmt, _, help_text) in zip(st.columns(len(metrics)) if metrics else [], metrics, strict=True):
    column.metric(label, "n/a" if value is None else fmt.format(value), help=help_text)
if ood is None:
    st.caption(f"No OOD share: a {loaders.representation(path).method} encoder has no behaviour model.")
if model is not None and true is None:
    st.caption(f"No true pseudometric: {ds.meta.env_id} has no deterministic true model (the mazes have one).")

panels = [("learned", learned, "learned L1")] + ([("true", true, "true d")] if true is not None else [])
if len(actions) <= HEATMAP_MAX:
    hover = None
    if classes is not None:
        text = np.char.add("class ", classes.astype(str))
        hover = np.char.add(np.char.add(text[:, None], " / "), text[None, :])
    for column, (name, matrix, label) in zip(st.columns(len(panels)), panels, strict=True):
        column.plotly_chart(
            distance_heatmap(matrix, actions, f"{label} ({len(actions)} actions)", label, hover), key=f"pm.heat.{name}"
        )
else:
    st.caption(f"{len(actions)} actions: PNG overviews (no hover); pick a block below to zoom in with hover.")
    with st.spinner(
        work_message(f"Drawing the {len(actions)} x {len(actions)} overviews as PNG images"),
        show_time=True,
    ):
        images = overviews(*state_key)
    for column, (_name, _matrix, label), image in zip(st.columns(len(panels)), panels, images, strict=True):
        column.image(
            image,
            caption=f"{label}, {len(actions)} x {len(actions)}",
            width="stretch",
            output_format="PNG",
        )
    block = st.slider(
        "Zoom block (first action index, in class order)",
        0,
        len(actions) - HEATMAP_MAX,
        0,
        step=HEATMAP_MAX // 2,
        key="pm.block",
    )
    sl = slice(block, block + HEATMAP_MAX)
    for column, (name, matrix, label) in zip(st.columns(len(panels)), panels, strict=True):
        column.plotly_chart(
            distance_heatmap(matrix[sl, sl], actions[sl], f"{label}: block {block}..{block + HEATMAP_MAX - 1}", label),
            key=f"pm.zoom.{name}",
        )

if not ds.meta.env_id:
    st.stop()  # the diagnostics compare with the true pseudometric: said up front


def diagnostics_panel() -> None:
    """A fragment: the button reruns only this panel (the page above stays as it is, not greyed
    out) and a status box says what runs and for how long while it does."""
    with st.expander("Diagnostics over many states (pipelines.diagnose_encoder: 64 states, 512 actions)"):
        if not explore.has_true_model(model):
            st.caption("Needs an environment with a deterministic true model (the mazes).")
        elif st.button("Run diagnostics", key="pm.diagnose"):
            started = time.perf_counter()
            with st.status(
                "Running the diagnostics: the true pseudometric at 64 dataset states x 512 actions against the "
                "learned distances (Spearman, class separation, OOD share): seconds on 2 CPU cores ...",
                expanded=True,
            ) as status:
                st.caption(f"pipelines.diagnose_encoder on {path}")
                result = diagnose_encoder(path, dataset_path=by_path[path].dataset)
                status.update(
                    label=f"Diagnostics done in {time.perf_counter() - started:.1f} s", state="complete", expanded=False
                )
            st.session_state["pm.diagnostics"] = (
                path,
                {k: v for k, v in result.items() if k != "spearman_per_state"},
            )
        saved = st.session_state.get("pm.diagnostics")
        if saved and saved[0] == path:
            st.json(saved[1])


st.fragment(diagnostics_panel)()
