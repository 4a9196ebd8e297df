"""User goals sampled from MultiWOZ's goal model, vectorised over dialogues.

A goal (the recipe of ConvLab-2's goal generator, re-implemented on arrays):

1. domains and their order: one ordering from ``domain_ordering_dist`` (the empty one dropped);
2. per domain, constraints: a slot combination from ``slots_combination_dist.info`` and a value per
   slot from ``ind_slot_value_dist`` (values restricted to the database / ontology, see schema).
   Taxi goals always name a departure and a destination (sampled like the other slots when the
   combination lacks them) and one time;
3. constraints that match no database entity become the *initial* constraints of a goal that
   must change: one slot j is picked; if the other constraints match something, the user either
   drops j ("don't care", probability ``relax_probability``) or changes j to the value of a random
   entity that matches the others; otherwise all constraint values are taken from a random entity.
   The result, the *final* constraints, matches at least one entity. The user starts with the
   initial values and switches when the system says no entity matches (train goals start with the
   final values, as in ConvLab-2);
4. requests: with probability ``request_prob[d]`` (requests per goal in ``slots_num_dist``) a
   combination from ``slots_combination_dist.reqt``, minus slots that are already constraints;
   a booking with probability ``book_dist[d]``, each booking slot's value from the goal model.
   A domain goal with neither requests nor a booking gets requests (ConvLab-2 resamples).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from merlion_core.envs.dialogue.schema import (
    AFTER,
    CATEGORICAL,
    DONTCARE,
    DialogueSchema,
    match_entities,
)

MAX_RESAMPLES = 50


@dataclass(frozen=True, eq=False)
class Goals:
    """A batch of goals (value ids as in the schema)."""

    rank: np.ndarray  # int64 [B, D]: order of each domain in the dialogue, -1 = not in the goal
    initial: np.ndarray  # int64 [B, NS]: constraints the user starts with, and booking values
    final: np.ndarray  # int64 [B, NS]: constraints after a no-match change (-1 = dropped), booking values
    requests: np.ndarray  # bool [B, NR]: slots the user wants to be told
    has_book: np.ndarray  # bool [B, D]


def _draw(probs: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """n draws from a categorical distribution by inverse CDF (int64 [n])."""
    cdf = np.cumsum(probs)
    return np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(probs) - 1)


def _random_true(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """int64 [B]: a uniformly random True column per row (-1 where a row has none)."""
    keys = np.where(mask, rng.random(mask.shape), -1.0)
    pick = keys.argmax(axis=1)
    return np.where(mask.any(axis=1), pick, -1)


def _entity_values(schema: DialogueSchema, domain: int, entities: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """int64 [B, k]: value ids of the given entities for the table's columns; times snapped to the
    slot's vocabulary on the satisfying side (0 where no vocabulary time qualifies)."""
    table = schema.tables[domain]
    rows = table.entities[entities].astype(np.int64)
    out = rows.copy()
    for col, (slot, kind) in enumerate(zip(table.slots, table.kinds, strict=True)):
        if kind == CATEGORICAL:
            continue
        minutes = schema.value_minutes[slot]
        order = np.argsort(minutes)
        sorted_minutes = minutes[order]
        if kind == AFTER:  # latest vocabulary time at or before the train's departure
            pos = np.searchsorted(sorted_minutes, rows[:, col], side="right") - 1
            ok = pos >= 0
        else:  # earliest vocabulary time at or after the train's arrival
            pos = np.searchsorted(sorted_minutes, rows[:, col], side="left")
            ok = pos < len(sorted_minutes)
        out[:, col] = np.where(ok, order[np.clip(pos, 0, len(order) - 1)] + 1, 0)
    return out


def _constraints(schema, d, n, rng) -> tuple[np.ndarray, np.ndarray]:
    """Sampled constraint slots (bool [n, NS]) and values (int64 [n, NS]) of domain d."""
    member, probs = schema.info_combos[d]
    chosen = member[_draw(probs, rng, n)]
    if schema.domains[d] == "taxi":
        for name in ("departure", "destination"):
            chosen[:, schema.inform_index("taxi", name, book=False)] = True
        leave, arrive = schema.inform_index("taxi", "leaveAt"), schema.inform_index("taxi", "arriveBy")
        chosen[:, leave] |= ~chosen[:, arrive]
    values = np.zeros((n, schema.n_inform), dtype=np.int64)
    for s in np.flatnonzero((schema.inform_domain == d) & ~schema.inform_is_book):
        values[:, s] = np.where(chosen[:, s], _draw(schema.sample_probs[s], rng, n) + 1, 0)
    return chosen, values


def _adjust(schema, d, chosen, values, relax_probability, rng) -> tuple[np.ndarray, np.ndarray]:
    """Final constraints for rows whose constraints match nothing; bool [n] of rows now valid."""
    final = values.copy()
    table = schema.tables[d]
    zero = ~match_entities(schema, d, values).any(axis=1)
    if not zero.any():
        return final, np.ones(len(values), dtype=bool)
    rows = np.flatnonzero(zero)
    j = _random_true(chosen[rows], rng)  # the slot to drop or change
    relaxed = values[rows].copy()
    relaxed[np.arange(len(rows)), np.maximum(j, 0)] = 0
    candidates = match_entities(schema, d, relaxed) & (j >= 0)[:, None]
    has_candidate = np.asarray(candidates.any(axis=1))  # no copy; ndarray.any(axis) is typed np.bool | NDArray
    may_relax = schema.domains[d] != "train"  # a train query needs all its slots
    relax = has_candidate & (rng.random(len(rows)) < relax_probability) & may_relax
    entity = np.where(has_candidate, _random_true(candidates, rng), rng.integers(0, len(table.entities), len(rows)))
    from_entity = _entity_values(schema, d, entity, table.slots)  # [m, k]
    cols = chosen[rows][:, table.slots]
    # change one slot (a candidate exists) or all chosen slots (none does)
    take = np.where(has_candidate[:, None], table.slots[None, :] == j[:, None], True) & cols
    new = np.where(take, from_entity, values[rows][:, table.slots])
    new = np.where(relax[:, None] & (table.slots[None, :] == j[:, None]), DONTCARE, new)
    final[rows[:, None], table.slots[None, :]] = new
    valid = match_entities(schema, d, final).any(axis=1) & ~((final[:, table.slots] == 0) & chosen[:, table.slots]).any(
        1
    )
    return final, valid


def sample_goals(schema: DialogueSchema, n: int, rng: np.random.Generator, relax_probability: float = 0.5) -> Goals:
    """``n`` goals drawn from the goal model (see the module docstring)."""
    n_domains, ns, nr = len(schema.domains), schema.n_inform, schema.n_request
    rank = schema.orderings[_draw(schema.ordering_probs, rng, n)]
    initial = np.zeros((n, ns), dtype=np.int64)
    final = np.zeros((n, ns), dtype=np.int64)
    requests = np.zeros((n, nr), dtype=bool)
    has_book = np.zeros((n, n_domains), dtype=bool)
    # a request slot with the same name as one of the goal's constraints is no request
    same_name = np.array([[r[1] == s[1] for s in schema.inform_slots] for r in schema.request_slots])  # [NR, NS]
    for d in range(n_domains):
        rows = np.flatnonzero(rank[:, d] >= 0)
        columns = np.flatnonzero((schema.inform_domain == d) & ~schema.inform_is_book)
        pending = rows
        chosen_all = np.zeros((len(rows), ns), dtype=bool)
        for _ in range(MAX_RESAMPLES):  # resample the rare goals whose change did not work out
            if pending.size == 0:
                break
            chosen, values = _constraints(schema, d, pending.size, rng)
            if d in schema.tables:
                adjusted, valid = _adjust(schema, d, chosen, values, relax_probability, rng)
            else:
                adjusted, valid = values, np.ones(pending.size, dtype=bool)
            start = adjusted if schema.domains[d] == "train" else values
            done = pending[valid]
            initial[np.ix_(done, columns)], final[np.ix_(done, columns)] = (
                start[valid][:, columns],
                adjusted[valid][:, columns],
            )
            chosen_all[np.searchsorted(rows, done)] = chosen[valid]
            pending = pending[~valid]
        if pending.size:
            raise RuntimeError(f"goal sampler: no valid {schema.domains[d]} goal after {MAX_RESAMPLES} tries")
        member, probs = schema.request_combos[d]
        wants = rng.random(len(rows)) < schema.request_prob[d]
        booking = rng.random(len(rows)) < schema.book_prob[d]
        drawn = np.zeros((len(rows), nr), dtype=bool)
        need = np.ones(len(rows), dtype=bool)
        for _ in range(MAX_RESAMPLES):
            candidate = member[_draw(probs, rng, len(rows))] & ~((chosen_all.astype(np.int64) @ same_name.T) > 0)
            fill = need & candidate.any(axis=1)
            drawn[fill] = candidate[fill]
            need &= ~fill
            if not need.any():
                break
        mine = schema.request_domain == d
        requests[np.ix_(rows, mine)] = (drawn & (wants | ~booking)[:, None])[:, mine]
        has_book[rows, d] = booking
        for s in np.flatnonzero((schema.inform_domain == d) & schema.inform_is_book):
            value = np.where(booking, _draw(schema.sample_probs[s], rng, len(rows)) + 1, 0)
            initial[rows, s] = final[rows, s] = value
    return Goals(rank=rank, initial=initial, final=final, requests=requests, has_book=has_book)
