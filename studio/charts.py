"""Plotly figures of the app (pure functions: arrays in, go.Figure out; tested on their data).

Large point sets use go.Scattergl with float32 arrays; heatmaps with hover stay at most
HEATMAP_MAX per side (larger matrices become a PNG overview, see studio.png).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go

from studio.sampling import Density, Region

HEATMAP_MAX = 256
"""Largest side of a go.Heatmap with per-cell hover."""
SCORE_COLOURS = "Viridis"
OOD_COLOUR = "rgba(214,39,40,0.9)"
DENSITY_COLOURS = [[0.0, "rgba(255,255,255,0)"], [1.0, "rgba(90,90,90,0.55)"]]
"""The density layer under a sampled scatter: empty cells transparent, the fullest mid grey."""
_LAYOUT = dict(margin=dict(l=40, r=10, t=40, b=40), template="plotly_white")


def embedding_scatter(
    xy_A2: np.ndarray,
    colour_A: np.ndarray | None,
    colour_label: str,
    customdata: np.ndarray,
    hovertemplate: str,
    ood_A: np.ndarray | None = None,
    title: str = "",
    axis_titles: tuple[str, str] = ("e1", "e2"),
    colour_range: tuple[float, float] | None = None,
    density: Density | None = None,
    marks: Sequence[tuple[int, str]] = (),
    view: Region | None = None,
) -> go.Figure:
    """The drawn actions' embeddings at one state (the paper's Fig. 4): WebGL points coloured by
    ``colour_A`` (Q or true value), hover = the action's meaning, OOD actions drawn as crosses.
    ``density``: every action's count grid, drawn as grey shading under the points (a sample is
    drawn); ``marks``: (row of ``xy_A2``, label) of the actions named by an arrow (the logged action,
    the policy's action); ``view``: the axis ranges (a zoomed region)."""
    xy = np.asarray(xy_A2, dtype=np.float32)
    ood = np.zeros(len(xy), bool) if ood_A is None else np.asarray(ood_A, bool)
    fig = go.Figure()
    if density is not None:
        counts = np.asarray(density.counts)
        fig.add_trace(
            go.Heatmap(
                x=density.x,
                y=density.y,
                z=np.log10(1.0 + counts).astype(np.float32),
                text=counts,
                colorscale=DENSITY_COLOURS,
                showscale=False,
                name="every action (density)",
                hovertemplate="%{text} actions in this cell<extra>density</extra>",
            )
        )
    for mask, name, symbol in ((~ood, "in distribution", "circle"), (ood, "out of distribution (I_hat = 1)", "x")):
        if not mask.any():
            continue
        marker: dict[str, Any] = dict(size=6 if symbol == "circle" else 7, symbol=symbol, opacity=0.85)
        if colour_A is not None:
            marker.update(
                color=np.asarray(colour_A, dtype=np.float32)[mask],
                colorscale=SCORE_COLOURS,
                showscale=name == "in distribution" or not (~ood).any(),
                colorbar=dict(title=colour_label),
            )
            if colour_range is not None:
                marker.update(cmin=colour_range[0], cmax=colour_range[1])
        elif symbol == "x":
            marker.update(color=OOD_COLOUR)
        fig.add_trace(
            go.Scattergl(
                x=xy[mask, 0],
                y=xy[mask, 1],
                mode="markers",
                name=name,
                marker=marker,
                customdata=customdata[mask],
                hovertemplate=hovertemplate + "<extra></extra>",
            )
        )
    for row, label in marks:
        fig.add_annotation(
            x=float(xy[row, 0]), y=float(xy[row, 1]), text=label, showarrow=True, arrowhead=2, ax=30, ay=-30
        )
    fig.update_layout(
        title=title,
        xaxis_title=axis_titles[0],
        yaxis_title=axis_titles[1],
        height=460,
        legend=dict(orientation="h", y=-0.15),
        **_LAYOUT,
    )
    if view is not None:
        fig.update_xaxes(range=[view.x0, view.x1])
        fig.update_yaxes(range=[view.y0, view.y1])
    return fig


def _rect_shapes(rects: Sequence[Sequence[float]], fill: str) -> list[dict[str, Any]]:
    return [
        dict(type="rect", x0=r[0], y0=r[1], x1=r[2], y1=r[3], fillcolor=fill, line=dict(width=0), layer="below")
        for r in rects
    ]


STATE_COLOURS = ("#7f7f7f", "#1f77b4")
"""Dataset states on the maze map: the bonus not yet taken (flag 0), taken (flag 1)."""
MAZE_REGIONS = (
    ("walls", "walls", "rgba(60,60,60,0.85)"),
    ("goal", "goal (+ goal reward, ends the episode)", "rgba(44,160,44,0.6)"),
    ("bonus_regions", "bonus region (+ bonus once an episode)", "rgba(31,119,180,0.25)"),
    ("penalty_regions", "penalty region (penalty each step inside)", "rgba(214,39,40,0.25)"),
)
"""(MazeConfig field, legend name, fill) of the rectangles drawn on the maze map."""


def maze_map(states_N3: np.ndarray, config: Any, selected: np.ndarray | None = None) -> go.Figure:
    """The maze with dataset states as clickable points (trace 0, one point per state: the page maps a
    click's point index to its dataset row) and a legend naming everything drawn: the states by their
    bonus flag (grey: not yet taken, blue: taken), the chosen state, and the walls, goal, bonus and
    penalty regions (shapes with their own legend entries; a click on one hides that kind)."""
    s = np.asarray(states_N3, dtype=np.float32)
    flag = s[:, 2] if s.shape[1] > 2 else np.zeros(len(s), np.float32)
    fig = go.Figure(
        go.Scattergl(
            x=s[:, 0],
            y=s[:, 1],
            mode="markers",
            name="dataset states",
            legendgroup="states",
            showlegend=False,  # its colour depends on the point: the two entries below name both colours
            marker=dict(
                size=5,
                color=flag,
                colorscale=[[0, STATE_COLOURS[0]], [1, STATE_COLOURS[1]]],
                cmin=0,
                cmax=1,
                opacity=0.6,
            ),
            customdata=np.arange(len(s)),
            hovertemplate="(%{x:.3f}, %{y:.3f})<extra>click to pick</extra>",
        )
    )
    for present, colour, name in (
        ((flag < 0.5).any(), STATE_COLOURS[0], "dataset state, bonus not yet taken"),
        ((flag >= 0.5).any(), STATE_COLOURS[1], "dataset state, bonus already taken"),
    ):
        if present:  # a legend entry only (no points): clicking it hides or shows every dataset state
            fig.add_trace(
                go.Scatter(
                    x=[None],
                    y=[None],
                    mode="markers",
                    name=name,
                    legendgroup="states",
                    marker=dict(size=8, color=colour, opacity=0.8),
                    hoverinfo="skip",
                )
            )
    if selected is not None:
        fig.add_trace(
            go.Scatter(
                x=[float(selected[0])],
                y=[float(selected[1])],
                mode="markers",
                name="chosen state",
                marker=dict(size=16, color="rgba(0,0,0,0)", line=dict(color="black", width=3)),
            )
        )
    shapes: list[dict[str, Any]] = []
    for field, name, fill in MAZE_REGIONS:
        drawn = getattr(config, field, None)
        rects = ([drawn] if field == "goal" else list(drawn)) if drawn else []
        for i, rect in enumerate(_rect_shapes(rects, fill)):
            shapes.append({**rect, "name": name, "legendgroup": field, "showlegend": i == 0})
    fig.update_layout(
        shapes=shapes,
        height=460,
        xaxis=dict(range=[0, 1], constrain="domain"),
        yaxis=dict(range=[0, 1], scaleanchor="x"),
        showlegend=True,
        legend=dict(orientation="h", y=-0.12),
        clickmode="event+select",
        **_LAYOUT,
    )
    return fig


def return_histogram(returns: np.ndarray) -> go.Figure:
    fig = go.Figure(go.Histogram(x=np.asarray(returns, dtype=np.float32), nbinsx=40, marker_color="#1f77b4"))
    fig.update_layout(title="Episode returns", xaxis_title="return", yaxis_title="episodes", height=320, **_LAYOUT)
    return fig


def action_frequency(counts_A: np.ndarray) -> go.Figure:
    """Actions ranked by how often they were logged (log y: the long tail)."""
    counts = np.sort(np.asarray(counts_A))[::-1]
    used = counts[counts > 0]
    fig = go.Figure(
        go.Scattergl(
            x=np.arange(1, len(used) + 1, dtype=np.float32),
            y=used.astype(np.float32),
            mode="lines",
            line=dict(color="#d62728"),
            hovertemplate="rank %{x}: %{y} times<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Action frequency ({len(used)} of {len(counts)} actions logged)",
        xaxis_title="action rank",
        yaxis_title="count",
        yaxis_type="log",
        height=320,
        **_LAYOUT,
    )
    return fig


def distance_heatmap(
    matrix_KK: np.ndarray, labels: np.ndarray, title: str, colour_label: str, hover_text: np.ndarray | None = None
) -> go.Figure:
    """A K x K heatmap with per-cell hover (K <= HEATMAP_MAX); ``labels`` name the rows/columns."""
    m = np.asarray(matrix_KK, dtype=np.float32)
    if m.shape[0] > HEATMAP_MAX or m.shape[1] > HEATMAP_MAX:
        raise ValueError(f"heatmap: {m.shape} is larger than {HEATMAP_MAX} per side; use the PNG overview")
    axis = [str(v) for v in labels]
    fig = go.Figure(
        go.Heatmap(
            z=m,
            x=axis,
            y=axis,
            colorscale=SCORE_COLOURS,
            colorbar=dict(title=colour_label),
            text=hover_text,
            hovertemplate="a_i %{y}<br>a_j %{x}<br>d = %{z:.4f}"
            + ("<br>%{text}" if hover_text is not None else "")
            + "<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        height=520,
        xaxis=dict(type="category", showticklabels=False, title="a_j"),
        yaxis=dict(type="category", showticklabels=False, autorange="reversed", title="a_i"),
        **_LAYOUT,
    )
    return fig


MIN_BAND_SEEDS = 3
"""Fewest seeds for a t interval band: with 2 seeds t_{0.975, 1} = 12.7 makes the band so wide that every
curve looks flat, so fewer seeds are drawn one by one (thin lines) instead."""


@dataclass(frozen=True)
class SeedLine:
    """One run of a group, drawn thin beside the group's mean when the group has too few seeds for a band."""

    label: str
    steps: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class CurveGroup:
    """One line of the returns plot: the mean over seeds, and the 95% t band (MIN_BAND_SEEDS seeds or more)
    or each seed's own line (``seeds``, fewer than MIN_BAND_SEEDS)."""

    label: str
    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n_seeds: int
    band: str = ""
    """What low/high are when they are not a t interval over seeds (drawn for one run too), e.g. an estimator's CI."""
    seeds: tuple[SeedLine, ...] = ()
    """Each run's own curve (drawn when 1 < n_seeds < MIN_BAND_SEEDS)."""


def curve_name(g: CurveGroup) -> str:
    """The legend entry of a group's main line: what it is and what surrounds it."""
    if g.band:
        return f"{g.label} ({g.band})"
    if g.n_seeds >= MIN_BAND_SEEDS:
        return f"{g.label} (mean of {g.n_seeds} seeds, 95% t interval band)"
    if g.n_seeds > 1:
        return f"{g.label} (mean of {g.n_seeds} seeds; each seed drawn thin)"
    return g.label


def learning_curves(groups: Sequence[CurveGroup], y_title: str = "normalised score") -> go.Figure:
    """One colour per group: its mean line, with a band (an estimator's interval, or a t interval over
    MIN_BAND_SEEDS or more seeds) or, for 2 seeds, each seed's own thin line. The legend is always shown
    (plotly hides it for a single trace otherwise); a group's legend entry toggles its band or seed lines too."""
    fig = go.Figure()
    palette = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
    for i, g in enumerate(groups):
        colour = palette[i % len(palette)]
        group = f"group {i}"
        steps = np.asarray(g.steps, dtype=np.float32)
        if g.band or g.n_seeds >= MIN_BAND_SEEDS:
            fig.add_trace(
                go.Scatter(
                    x=np.concatenate([steps, steps[::-1]]),
                    y=np.concatenate([g.high, g.low[::-1]]).astype(np.float32),
                    mode="lines",
                    fill="toself",
                    fillcolor=colour,
                    opacity=0.2,
                    line=dict(width=0),
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=group,
                    name=f"{g.label} {g.band or '95% t interval'}",
                )
            )
        elif g.n_seeds > 1:
            for seed in g.seeds:
                fig.add_trace(
                    go.Scatter(
                        x=np.asarray(seed.steps, dtype=np.float32),
                        y=np.asarray(seed.values, dtype=np.float32),
                        mode="lines",
                        line=dict(color=colour, width=1),
                        opacity=0.55,
                        showlegend=False,
                        legendgroup=group,
                        name=seed.label,
                        hovertemplate=f"{seed.label}<br>step %{{x}}: %{{y:.3g}}<extra></extra>",
                    )
                )
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=np.asarray(g.mean, dtype=np.float32),
                mode="lines+markers",
                line=dict(color=colour, width=2.5),
                legendgroup=group,
                name=curve_name(g),
            )
        )
    fig.update_layout(
        xaxis_title="gradient step",
        yaxis_title=y_title,
        height=420,
        showlegend=True,
        legend=dict(orientation="h", y=-0.2),
        **_LAYOUT,
    )
    return fig
