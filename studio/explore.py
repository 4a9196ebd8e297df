"""The explorer's numerics (no streamlit): every action's embedding at a state, its Q value from a
trained critic, the true value from the env's model, what each action means, OOD marks, a PCA
projection, and the learned / true distance matrices of the Pseudometric page.

Shapes: A actions, D embedding dims, S observation dims. Nothing loops over actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch

from merlion_core import diagnostics
from merlion_core.envs.behaviours import class_members
from merlion_core.envs.maze import MazeModel
from merlion_core.envs.multistep_maze import BASE_MOVE_NAMES, MultiStepMazeModel
from merlion_core.envs.planning import ValueTable, value_iteration

TRUE_VALUE_GRID = 51
"""Lattice of the planner's value table behind the 'true value' colouring (51 x 51 per bonus flag)."""
CRITIC_CHUNK = 16_384
"""Actions per latent critic pass of ``q_values`` (bounds its [chunk, hidden] activations at any |A|)."""


def action_embeddings(rep: Any, obs_S: np.ndarray, actions: np.ndarray | None = None) -> np.ndarray:
    """f32[A, D]: phi(a; s) of every action at one state; with ``actions`` (int64[N]) only those, f32[N, D]."""
    with torch.no_grad():
        obs = torch.as_tensor(np.asarray(obs_S, dtype=np.float32)[None])
        if actions is None:
            return rep.embed_all(obs)[0].float().cpu().numpy()
        return rep.embed_chunk(obs, torch.as_tensor(np.asarray(actions, dtype=np.int64)))[0].float().cpu().numpy()


def q_values(
    agent: Any, algo: str, obs_S: np.ndarray, embeddings_AD: np.ndarray, actions: np.ndarray | None = None
) -> np.ndarray | None:
    """f32[A]: the trained critic's Q(s, a) for every action, or None when the algorithm has none;
    with ``actions`` (int64[N]) only for those, f32[N] (``embeddings_AD`` then holds their N rows).

    Latent algorithms (cql, bcq, iql): min of the twin critics at each action's embedding phi(a; s),
    mapped into the agent's actor space (its latent normalisation), CRITIC_CHUNK actions a pass.
    Discrete CQL / BCQ: their Q head; discrete IQL: the min of its twin Q heads; DecQN: the mean of
    the sub-actions' utilities. BC and PLAS have no per-action Q to show."""
    from merlion_core.algos.registry import LATENT_ALGORITHMS

    obs = torch.as_tensor(np.asarray(obs_S, dtype=np.float32)[None])
    picked = None if actions is None else torch.as_tensor(np.asarray(actions, dtype=np.int64))
    with torch.no_grad():
        if algo in LATENT_ALGORITHMS:
            from merlion_core.algos.latent import to_actor_space

            x = to_actor_space(agent, torch.as_tensor(embeddings_AD, dtype=torch.float32))
            parts = [agent.critic(obs.expand(len(c), -1), c).min(0).values for c in x.split(CRITIC_CHUNK) if len(c)]
            return torch.cat(parts).cpu().numpy() if parts else np.zeros(0, np.float32)
        q_A: torch.Tensor | None = None
        if algo == "dcql":
            q_A = agent.q(obs)[0]
        elif algo == "dbcq":
            q_A = agent.net(obs)[0][0]
        elif algo == "diql":
            q_A = agent.q(obs).min(0).values[0]
        elif algo in ("decqn-cql", "decqn-bcq"):
            from merlion_core.algos.decqn import decoupled_q

            u_1KN = agent.utilities(obs) if algo == "decqn-cql" else agent.heads(obs)[0]
            sub_AK = agent.layout.decode(torch.arange(agent.n_actions) if picked is None else picked)
            return decoupled_q(u_1KN.expand(len(sub_AK), -1, -1), sub_AK).cpu().numpy()
        if q_A is not None:
            return (q_A if picked is None else q_A[picked]).cpu().numpy()
    return None


def has_true_model(model: Any) -> bool:
    """Whether the env has a deterministic true model (true_step) for true values and the true
    pseudometric: the mazes. The recommender's user is stochastic; the dialogue's simulator too."""
    return isinstance(model, (MazeModel, MultiStepMazeModel))


def planner_table(model: Any) -> ValueTable | None:
    """V* on a lattice by value iteration over the true model (maze: one action per equivalence
    class, with the env's action noise; multi-step maze: over base moves). None for other envs."""
    if isinstance(model, MazeModel):
        members, sizes = class_members(model.action_classes)
        return value_iteration(
            model.true_step,
            members[:, 0],
            grid=TRUE_VALUE_GRID,
            gamma=0.99,
            noise=model.config.action_noise,
            noise_weights=sizes.astype(np.float64),
        )
    if isinstance(model, MultiStepMazeModel):
        return value_iteration(model.move_step, np.arange(4), grid=TRUE_VALUE_GRID, gamma=0.99)
    return None


def true_q(
    model: Any, table: ValueTable, obs_S: np.ndarray, gamma: float = 0.99, actions: np.ndarray | None = None
) -> np.ndarray:
    """f32[A]: Q*(s, a) = r(s, a) + gamma (1 - done) V*(s') from the true model, noise-free,
    with V* interpolated from the planner's table (multi-step maze: gamma per plan); with
    ``actions`` (int64[N]) only for those, f32[N]."""
    actions = np.arange(model.n_actions) if actions is None else np.asarray(actions, dtype=np.int64)
    states = np.repeat(np.asarray(obs_S, dtype=np.float32)[None], len(actions), axis=0)
    step = model.true_step(states, actions)
    value = table.interpolate(step.next_states)
    return (step.rewards + gamma * (~step.terminated) * value).astype(np.float32)


@dataclass(frozen=True)
class ActionInfo:
    """Per-action hover data, kept as C typed columns of A values each: ``rows(actions)`` builds the
    plotly ``customdata`` [N, C] of the drawn actions only, read by ``hovertemplate``."""

    columns: tuple[np.ndarray, ...]
    hovertemplate: str
    classes: np.ndarray | None  # int64[A] equivalence class, when the env defines one

    def rows(self, actions: np.ndarray) -> np.ndarray:
        """object[N, C]: the hover rows of ``actions`` (int64[N])."""
        idx = np.asarray(actions, dtype=np.int64)
        data = np.empty((len(idx), len(self.columns)), dtype=object)
        for c, column in enumerate(self.columns):
            data[:, c] = column[idx]
        return data

    @cached_property
    def customdata(self) -> np.ndarray:
        """object[A, C]: every action's hover row."""
        return self.rows(np.arange(len(self.columns[0])))


def _digits_as_text(digits_AK: np.ndarray, alphabet: bytes) -> np.ndarray:
    """str[A]: each row of small ints spelled with ``alphabet`` (vectorised: one bytes view)."""
    codes = np.frombuffer(alphabet, dtype=np.uint8)[digits_AK].astype(np.uint8)
    return np.ascontiguousarray(codes).view(f"S{digits_AK.shape[1]}").ravel().astype(str)


def action_info(model: Any) -> ActionInfo:
    """What each action means: maze = actuators switched on and the move; multi-step maze = the plan;
    recommender = the video's type, quality and length; dialogue = the composite act. Typed columns
    (no per-action Python objects: cheap at 10^6 actions); the hover rows are built per drawn point."""
    ids = np.arange(model.n_actions)
    columns: tuple[np.ndarray, ...]
    if isinstance(model, MazeModel):
        n = model.config.n_actuators
        bits = (ids[:, None] >> (n - 1 - np.arange(n))[None, :]) & 1
        columns = (
            ids,
            _digits_as_text(bits, b"01"),
            model.displacements[:, 0].round(3),
            model.displacements[:, 1].round(3),
            np.asarray(model.action_classes),
        )
        template = (
            "action %{customdata[0]}<br>actuators %{customdata[1]}<br>move (%{customdata[2]}, "
            "%{customdata[3]})<br>class %{customdata[4]}"
        )
        return ActionInfo(columns, template, np.asarray(model.action_classes))
    if isinstance(model, MultiStepMazeModel):
        columns = (
            ids,
            _digits_as_text(model.moves, "".join(m[0].upper() for m in BASE_MOVE_NAMES).encode()),
            model.displacements[:, 0],
            model.displacements[:, 1],
            np.asarray(model.action_classes),
        )
        template = (
            "plan %{customdata[0]}: %{customdata[1]}<br>net move (%{customdata[2]}, %{customdata[3]})"
            "<br>class %{customdata[4]}"
        )
        return ActionInfo(columns, template, np.asarray(model.action_classes))
    catalogue = getattr(model, "catalogue", None)
    if catalogue is not None:  # the recommender: a video of a type, with a quality and a length
        columns = (
            ids,
            np.asarray(catalogue.types),
            np.round(catalogue.qualities, 3),
            np.round(catalogue.lengths, 2),
        )
        template = (
            "video %{customdata[0]}<br>type %{customdata[1]}<br>quality %{customdata[2]}<br>length %{customdata[3]}"
        )
        return ActionInfo(columns, template, np.asarray(catalogue.types, dtype=np.int64))
    table = getattr(model, "actions", None)
    if table is not None and hasattr(table, "composites"):  # the dialogue: a composite system act
        columns = (ids, np.asarray(table.composites, dtype=object), np.asarray(table.counts))
        return ActionInfo(columns, "act %{customdata[0]}: %{customdata[1]}<br>%{customdata[2]} times in MultiWOZ", None)
    return ActionInfo((ids,), "action %{customdata[0]}", None)


def ood_mask(rep: Any, obs_S: np.ndarray, tau: float) -> np.ndarray | None:
    """bool[A]: Eq. 7's I_hat(a|s) = G(a|s) / max G <= tau from a MERLION representation's
    behaviour model; None for representations without one."""
    if not hasattr(rep, "relative_behaviour_probs"):
        return None
    with torch.no_grad():
        rel = rep.relative_behaviour_probs(torch.as_tensor(np.asarray(obs_S, dtype=np.float32)[None]))
    return diagnostics.ood_indicator(rel[0].cpu().numpy(), tau)


@dataclass(frozen=True)
class Projection:
    """A fixed 2-D linear view of D-dim embeddings (PCA of a reference set): frames of a warm
    start are projected on the same axes, so the motion is real and not a change of basis."""

    mean: np.ndarray  # f32[D]
    axes: np.ndarray  # f32[D, 2]
    explained: np.ndarray  # f32[2]: share of variance on each axis

    def __call__(self, e_AD: np.ndarray) -> np.ndarray:
        return ((np.asarray(e_AD, dtype=np.float32) - self.mean) @ self.axes).astype(np.float32)


def pca_projection(e_AD: np.ndarray) -> Projection:
    """PCA by the eigenvectors of the D x D scatter matrix (numpy; one pass over the actions, so
    10^6 actions take milliseconds); D <= 2 keeps the coordinates as they are. Signs fixed (largest
    loading positive) so that the view does not flip between nearby embeddings."""
    e = np.asarray(e_AD, dtype=np.float32)
    d = e.shape[1]
    if d <= 2:
        axes = np.eye(d, 2, dtype=np.float32)
        return Projection(
            np.zeros(d, np.float32), axes, np.ones(2, np.float32) if d == 2 else np.array([1, 0], np.float32)
        )
    mean = e.mean(0, dtype=np.float64)
    centred = (e - mean.astype(np.float32)).astype(np.float64)
    var, vecs = np.linalg.eigh(centred.T @ centred)  # the [D, D] scatter matrix: one pass over A
    var, vecs = np.clip(var[::-1], 0.0, None), vecs[:, ::-1]  # descending
    axes = vecs[:, :2].copy()
    signs = np.sign(axes[np.abs(axes).argmax(0), np.arange(2)])
    axes *= np.where(signs == 0, 1, signs)
    total = var.sum() if var.sum() > 0 else 1.0
    return Projection(mean.astype(np.float32), axes.astype(np.float32), (var[:2] / total).astype(np.float32))


# ---------------------------------------------------------------------------- the Pseudometric page
def ordered_actions(n_actions: int, classes: np.ndarray | None, limit: int, rng: np.random.Generator) -> np.ndarray:
    """int64[K]: at most ``limit`` actions (a random subset when there are more), ordered by
    equivalence class then id, so that each class is one block of the heatmaps."""
    actions = np.arange(n_actions) if n_actions <= limit else np.sort(rng.choice(n_actions, limit, replace=False))
    if classes is None:
        return actions
    return actions[np.lexsort((actions, np.asarray(classes)[actions]))]


def learned_distances(e_KD: np.ndarray) -> np.ndarray:
    """f32[K, K]: ||e_i - e_j||_1."""
    return diagnostics.pairwise_l1(np.asarray(e_KD, dtype=np.float32)[None])[0]


def true_distances(model: Any, obs_S: np.ndarray, actions: np.ndarray, gamma: float = 0.99) -> np.ndarray:
    """f32[K, K]: the true pseudometric (Eq. 3, noise included) at one state."""
    return diagnostics.true_pseudometric(model, np.asarray(obs_S, dtype=np.float32)[None], actions, gamma)[0]


def state_diagnostics(
    learned: np.ndarray, true: np.ndarray | None, classes: np.ndarray | None
) -> dict[str, float | None]:
    """Spearman of learned vs true distances at this state, and the class separation (same-class
    mean distance / different-class mean distance)."""
    out: dict[str, float | None] = {"spearman": None, "class_separation": None}
    if true is not None:
        out["spearman"] = float(diagnostics.spearman_per_state(learned[None], true[None])[0])
    if classes is not None and len(np.unique(classes)) > 1:
        out["class_separation"] = float(diagnostics.class_separation(learned[None], classes))
    return out


def map_states(observations: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(indices int64[n], f32[n, S]): distinct dataset states to draw on the map and pick from."""
    rng = np.random.default_rng(seed)
    obs = np.asarray(observations)
    order = rng.permutation(len(obs))
    _, first = np.unique(obs[order], axis=0, return_index=True)
    pick = order[np.sort(first)][:n]
    return pick, obs[pick].astype(np.float32)
