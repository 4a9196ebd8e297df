"""Embeddings (the paper's Fig. 4): every action's embedding at one state, coloured by Q from the
trained critic or by the true value, hover = the action's meaning, OOD actions marked, two
representations side by side; p and tau sliders start a warm-start job and the scatter re-forms.
Above studio.sampling.POINT_BUDGET actions: a seeded sample (the logged and the policy's action always
in it) over a density of all, and a region drawn at full resolution (the zoom)."""

import uuid

import numpy as np
import streamlit as st

from merlion_core.data.dataset import DatasetError
from studio import catalog, explore, jobs_client, loaders, projections, sampling, simulator, warmstart
from studio.charts import embedding_scatter, maze_map
from studio.page import live_fragment, setup

P_VALUES = (0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
TAU_VALUES = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
COLOURS = ("Q from the trained critic", "true value Q*(s, a)", "none")

setup("Embeddings")
st.title("Embeddings")
st.caption(
    "Every action's embedding phi(a; s) at one state (the paper's Fig. 4). Crosses: actions the "
    "behaviour model calls out of distribution (Eq. 7, G(a|s) / max G <= tau). Arrows: the dataset's logged "
    f"action at this row and the policy's action. Above {sampling.POINT_BUDGET:,} actions a seeded sample "
    "is drawn over a density of all of them; the zoom draws every action in a region."
)

encoders = catalog.encoders()
if not encoders:
    st.info("No trained encoder yet: train one on the Train page, or wait for the demo (Home).")
    st.stop()
by_path = {e.path: e for e in encoders}
left_default = catalog.preferred_encoder(encoders)
top = st.columns(2)
left_path = top[0].selectbox(
    "Representation",
    list(by_path),
    index=list(by_path).index(left_default),
    format_func=lambda p: by_path[p].label,
    key="emb.left",
)
# side by side only with encoders of the same observation size and action count (the right one is
# shown at the left one's state), and not of another recorded simulator
pairable, hidden = simulator.pairable(left_path, [p for p in by_path if p != left_path])
right_choices = ["none"] + pairable
others = [p for p in pairable if by_path[p].method != by_path[left_path].method]
if st.session_state.get("emb.right") not in right_choices:
    st.session_state.pop("emb.right", None)
right_path = top[1].selectbox(
    "Side by side with",
    right_choices,
    index=right_choices.index(others[-1]) if others else 0,
    format_func=lambda p: "nothing" if p == "none" else by_path[p].label,
    key="emb.right",
)
if hidden:
    top[1].caption(
        f"{len(hidden)} other encoder(s) not offered: trained on data with another observation size, "
        "action count or simulator, so they cannot be shown at this encoder's state."
    )
dataset_path = by_path[left_path].dataset or ""  # none recorded: the load below fails with a message
try:
    ds = loaders.dataset(dataset_path)
except DatasetError as exc:
    st.error(f"The dataset this encoder was trained on does not load: {exc}")
    st.stop()
model = loaders.model_for(ds)
if not ds.meta.env_id:
    st.info(
        simulator.needs_true_model_text(
            "the true value Q*(s, a) to colour by, the maze map to pick a state on and what each action means (the "
            "hover shows its id). Shown: every action's embedding at a dataset row, Q from a critic trained on this "
            "encoder and, for a MERLION encoder, the OOD marks and the p / tau sliders"
        )
    )
env_key = loaders.env_key(ds) if model is not None else None
observations = np.asarray(ds.observations)


# ---------------------------------------------------------------- the state
def on_map_select() -> None:
    points = [p for p in st.session_state["emb.map"].selection.points if p.get("curve_number", 0) == 0]
    if points:
        rows = st.session_state["emb.map_rows"]
        st.session_state["emb.row"] = int(rows[int(points[0]["point_index"])])


st.subheader("State")
if "emb.row" not in st.session_state:
    st.session_state["emb.row"] = 0
row = int(st.session_state["emb.row"])
if model is not None and hasattr(model.config, "walls"):
    rows, states = loaders.map_states(dataset_path)
    st.session_state["emb.map_rows"] = rows
    map_col, info_col = st.columns([3, 2])
    with map_col:
        st.plotly_chart(
            maze_map(states, model.config, observations[row]),
            on_select=on_map_select,
            selection_mode="points",
            key="emb.map",
        )
        st.caption("Click a point on the map to pick that dataset state.")
else:
    info_col = st.container()
with info_col:
    st.number_input("Dataset row", 0, len(observations) - 1, step=1, key="emb.row")
    obs = observations[int(st.session_state["emb.row"])].astype(np.float32)
    st.markdown("Observation: `" + ", ".join(f"{v:.3f}" for v in obs) + "`")
    colour_mode = st.radio(
        "Colour by", COLOURS if explore.has_true_model(model) else (COLOURS[0], COLOURS[2]), key="emb.colour"
    )
state_key = tuple(float(v) for v in obs)


# ---------------------------------------------------------------- one column
def pick_critic(entry: catalog.Entry, side: str) -> str | None:
    """The agent whose critic colours the scatter (and whose own action is always drawn), or None."""
    if colour_mode != COLOURS[0]:
        return None
    agents = [a for a in catalog.agents() if a.encoder == entry.path]
    if not agents:
        st.caption("No agent trained on this encoder yet: no critic to colour by.")
        return None
    return st.selectbox(
        "Critic",
        [a.path for a in agents],
        index=len(agents) - 1,
        key=f"emb.agent.{side}",
        format_func=lambda p: next(a.label for a in agents if a.path == p),
    )


def colour_values(actions: np.ndarray, e_drawn: np.ndarray, critic: str | None) -> tuple[np.ndarray | None, str]:
    """The colour of the drawn ``actions`` only (Q of 10^6 actions is never computed)."""
    if colour_mode == COLOURS[1] and explore.has_true_model(model):
        assert env_key is not None  # a true model is a model: env_key was set beside it
        table = loaders.planner_table(*env_key)
        return (None, "") if table is None else (explore.true_q(model, table, obs, actions=actions), "Q*(s, a)")
    if critic is not None:
        loaded = loaders.agent(critic)
        return explore.q_values(loaded.agent, loaded.algo, obs, e_drawn, actions=actions), f"Q ({loaded.algo})"
    return None, ""


@st.cache_data(max_entries=64, show_spinner=False)
def policy_action(agent_path: str, mtime: float, state: tuple[float, ...]) -> int:
    """The agent's own action at this state (``act``: a latent agent's lookup over every action)."""
    return int(loaders.agent(agent_path).agent.act(np.asarray(state, np.float32)[None])[0])


def always_drawn(critic: str | None) -> list[tuple[int, str]]:
    """(action, label) of the actions drawn whatever the sample: the dataset's logged action at the
    chosen row and, with an agent picked, the policy's action at this state."""
    logged = int(np.asarray(ds.actions)[int(st.session_state["emb.row"])])
    if critic is None:
        return [(logged, f"logged action {logged}")]
    try:
        chosen = policy_action(critic, catalog.stamp(critic), state_key)
    except ValueError as exc:  # an agent that cannot act here: its Q still colours the points
        st.caption(f"The policy's action is not drawn: {exc}")
        return [(logged, f"logged action {logged}")]
    if chosen == logged:
        return [(logged, f"logged = policy's action {logged}")]
    return [(logged, f"logged action {logged}"), (chosen, f"policy's action {chosen}")]


def region_filter(side: str, full: sampling.Region) -> sampling.Region | None:
    """The zoom: a rectangle of the view whose every action is drawn (up to the budget). Its bounds
    start at the whole view and follow the state until the filter is switched on."""
    keys = [f"emb.region.{k}.{side}" for k in ("x0", "x1", "y0", "y1")]
    with st.expander("Zoom: every action in a region (full resolution)"):
        on = st.checkbox("Draw only the actions in this region", key=f"emb.region.on.{side}")
        if not on and st.session_state.get(f"emb.region.for.{side}") != (state_key, full):
            outward = (np.floor, np.ceil, np.floor, np.ceil)  # 4 decimals, rounded out: every action stays inside
            for key, value, rounding in zip(keys, (full.x0, full.x1, full.y0, full.y1), outward, strict=True):
                st.session_state[key] = float(rounding(value * 1e4) / 1e4)
            st.session_state[f"emb.region.for.{side}"] = (state_key, full)
        cols = st.columns(4)
        bounds = [
            float(col.number_input(label, key=key, step=0.01, format="%.4f"))
            for col, label, key in zip(cols, ("x from", "x to", "y from", "y to"), keys, strict=True)
        ]
    if not on:
        return None
    try:
        return sampling.Region(*bounds)
    except ValueError as exc:
        st.error(str(exc))
        return None


def start_warm_start(side: str, entry_path: str) -> None:
    job = warmstart.slider_job(
        entry_path,
        by_path[entry_path].dataset,
        p=float(st.session_state[f"emb.p.{side}"]),
        tau=float(st.session_state[f"emb.tau.{side}"]),
        steps=int(st.session_state.get(f"emb.steps.{side}", 60)),
        state=state_key,
    )
    try:
        st.session_state[f"emb.warm.{side}"] = (warmstart.submit(job, session=browser_session()), state_key)
    except ValueError as exc:
        st.session_state[f"emb.warm_error.{side}"] = str(exc)


def browser_session() -> str:
    """This browser session's id (a slider move supersedes only this session's warm starts): kept in
    the session state, so a rerun, or AppTest without a runtime, gets the same one."""
    if "emb.session" not in st.session_state:
        st.session_state["emb.session"] = uuid.uuid4().hex[:12]
    return str(st.session_state["emb.session"])


def panel(side: str, path: str) -> None:
    entry = by_path[path]
    loaded = loaders.representation(path)
    rep = loaded.representation
    e = loaders.embeddings(path, catalog.stamp(path), state_key)
    projection = explore.pca_projection(e)
    critic = pick_critic(entry, side)
    marked = always_drawn(critic)
    # above the point budget: a seeded sample of the actions, the ones that matter always in it
    base = sampling.select_points(rep.n_actions, sampling.POINT_BUDGET, [a for a, _ in marked])
    colour, colour_label = colour_values(base.actions, e[base.actions], critic)
    info = loaders.action_info(*env_key) if env_key else explore.action_info(rep)
    shares = projection.explained  # d > 2: the two principal components' shares of the variance
    axis = ("e1", "e2") if rep.dim <= 2 else (f"PC1 ({shares[0]:.0%})", f"PC2 ({shares[1]:.0%})")
    title = f"{loaded.method}, d = {rep.dim}" + (" (PCA of the embeddings)" if rep.dim > 2 else "")
    warm_startable = hasattr(rep, "behaviour_model")
    if warm_startable:
        warmstart.ensure_worker()  # torch and the encoder load while the user looks

    def body() -> None:
        """The sliders, the zoom and the scatter: a fragment, so a slider move or a new region reruns
        only this, and the warm start's frames stream into the same chart while its job runs."""
        tau = float(getattr(loaded.config, "tau", 0.3))
        if warm_startable:
            p0 = float(getattr(loaded.config, "p", 0.01))
            cols = st.columns(3)
            cols[0].select_slider(
                "p (OOD penalty)",
                sorted(set(P_VALUES) | {p0}),
                value=p0,
                key=f"emb.p.{side}",
                on_change=start_warm_start,
                args=(side, path),
            )
            cols[1].select_slider(
                "tau (OOD threshold)",
                sorted(set(TAU_VALUES) | {tau}),
                value=tau,
                key=f"emb.tau.{side}",
                on_change=start_warm_start,
                args=(side, path),
            )
            cols[2].selectbox("Warm-start steps", (60, 150, 300), key=f"emb.steps.{side}")
            if st.session_state.get(f"emb.warm_error.{side}"):
                st.error(st.session_state.pop(f"emb.warm_error.{side}"))
        warm = st.session_state.get(f"emb.warm.{side}")
        if warm is not None and warm[1] != state_key:  # a warm start of another state: not shown here
            warm = None
        if warm is not None:
            tau = float(st.session_state[f"emb.tau.{side}"])
        ood_all = explore.ood_mask(rep, obs, tau)
        xy_all = projection(e) if rep.n_actions > sampling.POINT_BUDGET else None
        selection, colour_now, density = base, colour, None
        if xy_all is not None:
            full = sampling.extent(xy_all)
            region = region_filter(side, full)
            if region is not None:
                candidates = region.inside(xy_all)
                selection = sampling.select_points(
                    rep.n_actions, sampling.POINT_BUDGET, [a for a, _ in marked], candidates, region=region
                )
                colour_now, _ = colour_values(selection.actions, e[selection.actions], critic)
            if selection.sampled:
                density = sampling.density_grid(xy_all, region or full)
        drawn = selection.actions
        rows = info.rows(drawn)
        ood = None if ood_all is None else ood_all[drawn]
        marks = [(int(np.searchsorted(drawn, a)), label) for a, label in marked if a in selection.kept]
        chart_slot, caption_slot = st.empty(), st.empty()
        draws = [0]  # each redraw in this run gets its own key: two equal charts never share an id

        def draw(shown: np.ndarray, caption: str) -> None:
            draws[0] += 1
            chart_slot.plotly_chart(
                embedding_scatter(
                    projection(shown[drawn]),
                    colour_now,
                    colour_label,
                    rows,
                    info.hovertemplate,
                    ood,
                    title,
                    axis,
                    density=density,
                    marks=marks,
                    view=selection.region,
                ),
                key=f"emb.chart.{side}.{draws[0]}",
            )
            caption_slot.caption(caption)

        if warm is None:
            draw(e, selection.caption() + ("; the grey shading counts every action" if density else ""))
        else:  # the job's frames stream into the chart while it runs
            warmstart.follow(warm[0], e, draw, caption_slot.caption)
            if selection.sampled or selection.region is not None:
                st.caption(selection.caption())
        if ood_all is not None:
            st.caption(
                f"Out of distribution at this state: {int(ood_all.sum()):,} of {len(ood_all):,} actions "
                f"(G(a|s) / max G <= tau = {tau})."
            )

    st.fragment(body)()
    if rep.dim > 2:
        umap_view(side, path, loaded, base, colour, colour_label, info)


def umap_view(
    side: str,
    path: str,
    loaded,
    selection: sampling.PointSelection,
    colour: np.ndarray | None,
    colour_label: str,
    info: explore.ActionInfo,
) -> None:
    """d > 2: UMAP of the same embeddings, computed by a job of the runner's umap kind (the store
    caches it per encoder, state and settings); polled every 2 s while the job runs. The same actions
    as the PCA view's (``selection``: all, or the sample) with the density of all under a sample."""
    cols = st.columns([1, 1, 1])
    n_neighbors = cols[0].number_input("UMAP n_neighbors", 2, 200, 15, key=f"emb.umap.k.{side}")
    min_dist = cols[1].number_input("UMAP min_dist", 0.0, 1.0, 0.1, step=0.05, key=f"emb.umap.md.{side}")
    request = projections.Request(
        path, dataset_path, int(st.session_state["emb.row"]), int(n_neighbors), float(min_dist)
    )
    if cols[2].button("Compute UMAP", key=f"emb.umap.go.{side}"):
        try:
            projections.submit(request)
        except ValueError as exc:
            st.error(str(exc))
    rep = loaded.representation
    ood = explore.ood_mask(rep, obs, float(getattr(loaded.config, "tau", 0.3)))

    def show() -> None:
        job = projections.latest(request)
        if job is None:
            st.caption(
                "UMAP for this state and these settings: not computed yet (a background job, seconds to a minute)."
            )
            return
        archive = projections.archive(job)
        if archive is None:
            if jobs_client.is_active(job):
                st.progress(jobs_client.progress_fraction(job), text=projections.status_text(job))
            else:
                st.error(projections.status_text(job))
            return
        xy = loaders.projection(archive, rep.n_actions)
        drawn = selection.actions
        st.plotly_chart(
            embedding_scatter(
                xy[drawn],
                colour,
                colour_label,
                info.rows(drawn),
                info.hovertemplate,
                None if ood is None else ood[drawn],
                f"{loaded.method}, d = {rep.dim}: UMAP (n_neighbors {request.n_neighbors}, "
                f"min_dist {request.min_dist})",
                ("UMAP 1", "UMAP 2"),
                density=sampling.density_grid(xy, sampling.extent(xy)) if selection.sampled else None,
            ),
            key=f"emb.umap.chart.{side}",
        )
        st.caption(projections.status_text(job) + (f"; {selection.caption()}" if selection.sampled else ""))

    live_fragment(show, lambda: projections.running(request))


# one column (no right encoder): the left panel only
columns = st.columns(2) if right_path != "none" else [st.container()]
for side, path, column in zip(("left", "right"), (left_path, right_path), columns, strict=False):
    with column:
        panel(side, path)
