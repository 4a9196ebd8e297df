"""The recommender's behaviour policies, vectorised over users (they read the hidden state).

- expert: greedy on the true click model and the user's interests: it recommends the video with
  the highest expected watch time per unit of expected budget spent (:func:`watch_rate`). The
  return is the total watch time and the episode lasts until the budget is spent, so this rate
  is what a recommendation contributes; the expert sees the budget and the previous type.
- medium: a two-stage recommender: retrieval proposes ``MEDIUM_CANDIDATES`` videos drawn
  uniformly from the catalogue (with replacement), the expert's ranking picks the best of them.
  Sub-optimal for a known reason (its candidates are usually not the best videos for this
  user); docs/datasets.md has its normalised score.
- random (generic, envs/behaviours.py): uniform over the catalogue.

Both give the probability of any action (``Behaviour.probability``): the expert is deterministic;
for the medium, a video of rate r is picked when the best of the C candidates has rate r, and
it is then one of the g videos of that rate, each as likely:
P(a) = (((k_< + g) / N)^C - (k_< / N)^C) / g, with k_< the videos of lower rate (g = 1 without ties).
"""

from __future__ import annotations

import numpy as np

from merlion_core.envs.model import Behaviour
from merlion_core.envs.recommender.twin import (
    BUDGET,
    BUDGET_QUALITY_RATE,
    LAST_TYPE,
    N_TYPES,
    RecommenderModel,
    click_probability,
)

MEDIUM_CANDIDATES = 15
"""Videos the medium's retrieval stage proposes per recommendation."""


def watch_rate(model: RecommenderModel, states: np.ndarray, candidates: np.ndarray | None = None) -> np.ndarray:
    """[B, K]: expected watch time / expected budget spent for each candidate video (int[B, K];
    None = the whole catalogue, K = A), from the true click model and the user's hidden state.

    With P = P(click) and w = min(budget, L): watch = P w; budget spent = P w (1 - 0.9/3.4 q)
    + (1 - P) no_click_penalty + same_type_penalty [type == previous type] > 0 (P <= 1/2)."""
    cfg, cat = model.config, model.catalogue
    states = np.asarray(states)
    type_click = click_probability(states[:, :N_TYPES])  # [B, 20]
    if candidates is None:
        videos, p_click = np.arange(model.n_actions)[None, :], type_click[:, cat.types]
    else:
        videos = np.asarray(candidates)
        p_click = np.take_along_axis(type_click, cat.types[videos], axis=1)
    video_type = cat.types[videos]
    gain = p_click * np.minimum(states[:, BUDGET, None], cat.lengths[videos])
    repeat = video_type == states[:, LAST_TYPE, None]
    spent = (
        gain * (1.0 - BUDGET_QUALITY_RATE * cat.qualities[videos])
        + (1.0 - p_click) * cfg.no_click_penalty
        + cfg.same_type_penalty * repeat
    )
    return gain / spent


def medium_probability(model: RecommenderModel, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """float64 [B]: probability that the medium behaviour recommends ``actions[i]`` to user ``i``."""
    rates = watch_rate(model, states)  # [B, N]; the candidates' rates are the same numbers
    own = np.take_along_axis(rates, np.asarray(actions, dtype=np.int64)[:, None], axis=1)
    lower = np.count_nonzero(rates < own, axis=1)
    tied = np.count_nonzero(rates == own, axis=1)  # >= 1: the video itself
    n, c = model.n_actions, MEDIUM_CANDIDATES
    return (((lower + tied) / n) ** c - (lower / n) ** c) / tied


def recommender_behaviour(model: RecommenderModel, name: str) -> Behaviour:
    """The expert or medium behaviour of a recommender twin."""
    if name == "expert":

        def expert(states: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
            return np.argmax(watch_rate(model, states), axis=1)

        return Behaviour(
            "expert", expert, lambda states, actions: (np.asarray(actions) == expert(states, None)).astype(np.float64)
        )
    if name == "medium":

        def medium(states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            candidates = rng.integers(0, model.n_actions, size=(len(states), MEDIUM_CANDIDATES))
            best = np.argmax(watch_rate(model, states, candidates), axis=1)
            return candidates[np.arange(len(states)), best]

        return Behaviour("medium", medium, lambda states, actions: medium_probability(model, states, actions))
    raise ValueError(f"no {name} behaviour for the recommender (expert, medium; random is generic)")
