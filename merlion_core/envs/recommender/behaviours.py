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

Memory and time at scale. The expert's argmax and the medium's counts k_<, g need every video's
rate. Small catalogues scan them, ``SCAN_ELEMENTS`` (user, video) rates at a time. From
``INDEX_MIN_VIDEOS`` videos a :class:`CellIndex`, built once per behaviour, groups each type's
videos into cells of close length and quality. For a user with budget b > 0 the rate rises with
min(b, length) and with quality (c = (1 - P) no_click_penalty + penalty > 0, 1 - 0.9/3.4 q > 0),
so a cell's rates lie between the rates of its two corners; cells whose corners (with a relative
margin far above float rounding) settle the comparison are counted whole or dropped, and only
the videos of the others are scanned. The results are the scan's, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from merlion_core.envs.model import Behaviour
from merlion_core.envs.recommender.twin import (
    BUDGET,
    BUDGET_QUALITY_RATE,
    LAST_TYPE,
    N_TYPES,
    Catalogue,
    RecommenderConfig,
    RecommenderModel,
    click_probability,
)

MEDIUM_CANDIDATES = 15
"""Videos the medium's retrieval stage proposes per recommendation."""
SCAN_ELEMENTS = 1 << 20
"""Rates (users x videos) computed at once: bounds every scan to a few float64 arrays of 8 MiB."""
INDEX_MIN_VIDEOS = 8192
"""Catalogues of at least this many videos answer through a :class:`CellIndex` instead of a scan."""
CELL_SIZE = 64
"""Videos per cell of the index (at most)."""
SLAB_CELLS = 16
"""Cells per length band of a type: a band holds SLAB_CELLS * CELL_SIZE videos, cut by quality."""
BOUND_MARGIN = 1e-9
"""Relative margin on a cell's corner rates; float rounding of a rate stays below 1e-12."""
MIN_QUALITY_SLACK = 1e-3
"""The index needs 1 - 0.9/3.4 q >= this for every video (a rate rising with quality); else scan."""


@dataclass(frozen=True)
class CellIndex:
    """Each type's videos, by length band then quality, in cells of at most ``CELL_SIZE``."""

    members: np.ndarray  # int64 [C, CELL_SIZE]: video ids; a short cell repeats its last member
    sizes: np.ndarray  # int64 [C]: videos in the cell
    types: np.ndarray  # int64 [C]
    length_lo: np.ndarray  # float64 [C]
    length_hi: np.ndarray  # float64 [C]
    quality_lo: np.ndarray  # float64 [C]
    quality_hi: np.ndarray  # float64 [C]


def catalogue_index(catalogue: Catalogue) -> CellIndex | None:
    """The cells of ``catalogue`` (sorts only), or None when some quality breaks the rate's monotonicity."""
    types, lengths, qualities = catalogue.types, catalogue.lengths, catalogue.qualities
    if 1.0 - BUDGET_QUALITY_RATE * float(qualities.max()) < MIN_QUALITY_SLACK:
        return None
    n = len(types)
    counts = np.bincount(types, minlength=N_TYPES)
    slabs = -(-counts // (SLAB_CELLS * CELL_SIZE))  # length bands per type, of balanced sizes
    by_length = np.lexsort((lengths, types))
    sorted_types = types[by_length]
    rank = np.arange(n) - (np.cumsum(counts) - counts)[sorted_types]
    slab = np.empty(n, dtype=np.int64)
    slab[by_length] = (np.cumsum(slabs) - slabs)[sorted_types] + rank * slabs[sorted_types] // counts[sorted_types]
    order = np.lexsort((qualities, slab))  # band by band (type-major), by quality inside a band
    slab_sizes = np.bincount(slab, minlength=int(slabs.sum()))
    slab_cells = -(-slab_sizes // CELL_SIZE)
    ordered_slab = slab[order]
    in_slab = np.arange(n) - (np.cumsum(slab_sizes) - slab_sizes)[ordered_slab]
    cell = (np.cumsum(slab_cells) - slab_cells)[ordered_slab] + in_slab // CELL_SIZE
    sizes = np.bincount(cell, minlength=int(slab_cells.sum()))
    starts = np.cumsum(sizes) - sizes
    members = order[starts[:, None] + np.minimum(np.arange(CELL_SIZE)[None, :], sizes[:, None] - 1)]
    return CellIndex(
        members,
        sizes,
        types[members[:, 0]],
        lengths[members].min(axis=1),
        lengths[members].max(axis=1),
        qualities[members].min(axis=1),
        qualities[members].max(axis=1),
    )


def rate(
    p_click: np.ndarray, watchable: np.ndarray, quality: np.ndarray, repeat: np.ndarray, config: RecommenderConfig
) -> np.ndarray:
    """Expected watch / expected budget spent of a video (broadcasting arrays): with P = P(click),
    w = min(budget, length): P w / (P w (1 - 0.9/3.4 q) + (1 - P) no_click_penalty + penalty [repeat])."""
    gain = p_click * watchable
    spent = (
        gain * (1.0 - BUDGET_QUALITY_RATE * quality)
        + (1.0 - p_click) * config.no_click_penalty
        + config.same_type_penalty * repeat
    )
    return gain / spent


def watch_rate(model: RecommenderModel, states: np.ndarray, candidates: np.ndarray | None = None) -> np.ndarray:
    """[B, K]: expected watch time / expected budget spent for each candidate video (int[B, K];
    None = the whole catalogue, K = A), from the true click model and the user's hidden state.

    With P = P(click) and w = min(budget, L): watch = P w; budget spent = P w (1 - 0.9/3.4 q)
    + (1 - P) no_click_penalty + same_type_penalty [type == previous type] > 0 (P <= 1/2)."""
    cat = model.catalogue
    states = np.asarray(states)
    type_click = click_probability(states[:, :N_TYPES])  # [B, 20]
    if candidates is None:
        videos, p_click = np.arange(model.n_actions)[None, :], type_click[:, cat.types]
    else:
        videos = np.asarray(candidates)
        p_click = np.take_along_axis(type_click, cat.types[videos], axis=1)
    watchable = np.minimum(states[:, BUDGET, None], cat.lengths[videos])
    repeat = cat.types[videos] == states[:, LAST_TYPE, None]
    return rate(p_click, watchable, cat.qualities[videos], repeat, model.config)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, max(1, size)):
        yield slice(start, min(n, start + max(1, size)))


def _corner_rates(model: RecommenderModel, index: CellIndex, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([b, C], [b, C]): each cell's rate at (shortest, worst) and at (longest, best) corner."""
    p_click = click_probability(states[:, :N_TYPES])[:, index.types]
    budget = states[:, BUDGET, None]
    repeat = index.types == states[:, LAST_TYPE, None]
    low = rate(p_click, np.minimum(budget, index.length_lo), index.quality_lo, repeat, model.config)
    high = rate(p_click, np.minimum(budget, index.length_hi), index.quality_hi, repeat, model.config)
    return low * (1.0 - BOUND_MARGIN), high * (1.0 + BOUND_MARGIN)


def _cell_rates(
    model: RecommenderModel, index: CellIndex, states: np.ndarray, rows: np.ndarray, cells: np.ndarray
) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """(pairs, rates [p, CELL_SIZE], valid [p, CELL_SIZE]) for the (row, cell) pairs, block by block."""
    for block in _chunks(len(rows), SCAN_ELEMENTS // CELL_SIZE):
        members = index.members[cells[block]]
        valid = np.arange(CELL_SIZE)[None, :] < index.sizes[cells[block], None]
        yield block, watch_rate(model, states[rows[block]], members), valid


def _indexed_best(model: RecommenderModel, index: CellIndex, states: np.ndarray) -> np.ndarray:
    """int64 [b]: the first video of highest rate per user (budgets > 0), scanning only the cells
    whose upper corner reaches the best lower corner."""
    n = model.n_actions
    low, high = _corner_rates(model, index, states)
    rows, cells = np.nonzero(high >= low.max(axis=1, keepdims=True))
    pair_top, pair_first = np.empty(len(rows)), np.empty(len(rows), dtype=np.int64)
    for block, rates, valid in _cell_rates(model, index, states, rows, cells):
        rates = np.where(valid, rates, -np.inf)
        pair_top[block] = rates.max(axis=1)
        at_top = rates == pair_top[block, None]
        pair_first[block] = np.where(at_top, index.members[cells[block]], n).min(axis=1)
    best = np.full(len(states), -np.inf)
    np.maximum.at(best, rows, pair_top)
    first = np.full(len(states), n, dtype=np.int64)
    np.minimum.at(first, rows, np.where(pair_top == best[rows], pair_first, n))
    return first


def _indexed_rank(
    model: RecommenderModel, index: CellIndex, states: np.ndarray, own: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(videos of rate < own, videos of rate == own) per user (budgets > 0), counting whole cells
    whose corners settle it and scanning the rest."""
    low, high = _corner_rates(model, index, states)
    below = high < own[:, None]
    lower = np.where(below, index.sizes, 0).sum(axis=1)
    tied = np.zeros(len(states), dtype=np.int64)
    rows, cells = np.nonzero(~below & (low <= own[:, None]))
    for block, rates, valid in _cell_rates(model, index, states, rows, cells):
        target = own[rows[block], None]
        np.add.at(lower, rows[block], np.count_nonzero(valid & (rates < target), axis=1))
        np.add.at(tied, rows[block], np.count_nonzero(valid & (rates == target), axis=1))
    return lower, tied


def _split_rows(
    model: RecommenderModel, index: CellIndex | None, states: np.ndarray
) -> Iterator[tuple[CellIndex | None, np.ndarray]]:
    """(the index, or None for a scan; user rows) in chunks that keep every [rows, videos or cells]
    array bounded; users with budget <= 0 are scanned (the index's monotonicity needs a positive one)."""
    scanned = np.arange(len(states)) if index is None else np.flatnonzero(states[:, BUDGET] <= 0)
    for block in _chunks(len(scanned), SCAN_ELEMENTS // model.n_actions):
        yield None, scanned[block]
    if index is not None:
        indexed = np.flatnonzero(states[:, BUDGET] > 0)
        for block in _chunks(len(indexed), SCAN_ELEMENTS // len(index.sizes)):
            yield index, indexed[block]


def expert_actions(model: RecommenderModel, states: np.ndarray, index: CellIndex | None = None) -> np.ndarray:
    """int64 [B]: the expert's video per user, the first of highest :func:`watch_rate`."""
    states = np.asarray(states)
    chosen = np.empty(len(states), dtype=np.int64)
    for use, rows in _split_rows(model, index, states):
        if use is not None:
            chosen[rows] = _indexed_best(model, use, states[rows])
        else:
            chosen[rows] = np.argmax(watch_rate(model, states[rows]), axis=1)
    return chosen


def medium_probability(
    model: RecommenderModel, states: np.ndarray, actions: np.ndarray, index: CellIndex | None = None
) -> np.ndarray:
    """float64 [B]: probability that the medium behaviour recommends ``actions[i]`` to user ``i``."""
    states, actions = np.asarray(states), np.asarray(actions, dtype=np.int64)
    lower, tied = np.empty(len(states), dtype=np.int64), np.empty(len(states), dtype=np.int64)
    for use, rows in _split_rows(model, index, states):
        if use is not None:
            own = watch_rate(model, states[rows], actions[rows, None])[:, 0]
            lower[rows], tied[rows] = _indexed_rank(model, use, states[rows], own)
        else:
            rates = watch_rate(model, states[rows])  # [b, N]; the candidates' rates are the same numbers
            own = np.take_along_axis(rates, actions[rows, None], axis=1)
            lower[rows] = np.count_nonzero(rates < own, axis=1)
            tied[rows] = np.count_nonzero(rates == own, axis=1)  # >= 1: the video itself
    n, c = model.n_actions, MEDIUM_CANDIDATES
    return (((lower + tied) / n) ** c - (lower / n) ** c) / tied


def recommender_behaviour(model: RecommenderModel, name: str) -> Behaviour:
    """The expert or medium behaviour of a recommender twin (with a :class:`CellIndex` from
    ``INDEX_MIN_VIDEOS`` videos)."""
    if name not in ("expert", "medium"):
        raise ValueError(f"no {name} behaviour for the recommender (expert, medium; random is generic)")
    index = catalogue_index(model.catalogue) if model.n_actions >= INDEX_MIN_VIDEOS else None
    if name == "expert":

        def expert(states: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
            return expert_actions(model, states, index)

        return Behaviour(
            "expert", expert, lambda states, actions: (np.asarray(actions) == expert(states, None)).astype(np.float64)
        )

    def medium(states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        candidates = rng.integers(0, model.n_actions, size=(len(states), MEDIUM_CANDIDATES))
        best = np.argmax(watch_rate(model, states, candidates), axis=1)
        return candidates[np.arange(len(states)), best]

    return Behaviour("medium", medium, lambda states, actions: medium_probability(model, states, actions, index))
