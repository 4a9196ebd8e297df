"""The action set: the most frequent composite system acts, and what each one does.

How a composite act is formed. The corpus counts in ``da_slot_cnt.json`` are keyed by a system
turn's acts as ConvLab-2 writes them, ``Domain-Intent-Slot-Value`` joined by ``;`` in annotation
order, where Value is ``?`` for requests, ``none`` for slot-less acts and ``1``, ``2``, ... for the
n-th value of that slot in the turn. MERLION Studio's simulator fills values from the database
itself, so a composite is the *set* of the turn's ``Domain-Intent-Slot`` triples: the value index
is dropped, repeats are merged and the triples are sorted alphabetically, joined by ``;``. Keys
that give the same composite (the same acts in another order, or with more values) add their
counts.

How the set is ordered. Composites are ranked by that merged count, most frequent first, ties
broken by the composite's string; the first ``n`` (1500) are the actions, action id = rank.

The *atoms* are the distinct triples that occur in the chosen composites (sorted); an action is
a multi-hot row over them, and each atom has an effect class for the simulator.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from merlion_core.envs.dialogue.schema import BOOKABLE, DialogueSchema, goal_slot_name

# effect classes of an atom
NONE, MENTION, REQUEST, NOOFFER, BOOK, OFFERBOOK = range(6)
MENTION_INTENTS = ("Inform", "Recommend", "Select")
NO_ENTITY_SLOTS = ("Choice", "none", "Open")
BOOKING = "Booking"  # the corpus' domain of booking acts: they refer to the domain under discussion


def canonical_composite(triples: Iterable[str | Sequence[str]]) -> str:
    """The composite of one system turn: sorted unique ``Domain-Intent-Slot`` triples joined by ``;``.

    Accepts corpus atoms (``"Hotel-Inform-Area-1"``), triples (``"Hotel-Inform-Area"``) or
    ``(domain, intent, slot)`` tuples; the value part of a 4-field atom is dropped.
    """
    out = set()
    for atom in triples:
        parts = atom.split("-") if isinstance(atom, str) else list(atom)
        out.add("-".join(parts[:3]))
    return ";".join(sorted(out))


def top_composites(counts: Iterable[tuple[str, int]], n: int) -> tuple[tuple[str, ...], np.ndarray]:
    """The ``n`` most frequent composites (merged counts, ties by string) and their counts."""
    merged: Counter[str] = Counter()
    for key, count in counts:
        merged[canonical_composite(key.split(";"))] += int(count)
    ranked = sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))
    if len(ranked) < n:
        raise ValueError(f"dialogue env: n_actions={n} but da_slot_cnt.json gives only {len(ranked)} composite acts")
    chosen = ranked[:n]
    return tuple(k for k, _ in chosen), np.array([c for _, c in chosen], dtype=np.int64)


def act_coverage(turns: Iterable[Iterable[Sequence[str]]], actions: Sequence[str]) -> tuple[float, int]:
    """(share, n_turns): share of system turns whose composite is one of ``actions``.

    A turn without any annotated act counts as not covered.
    """
    action_set = set(actions)
    hits = total = 0
    for triples in turns:
        triples = list(triples)
        total += 1
        hits += bool(triples) and canonical_composite(triples) in action_set
    return (hits / total if total else 0.0), total


@dataclass(frozen=True, eq=False)
class ActionEffects:
    """bool effect tables per action; [A, D + 1, K] tables are indexed by the current domain."""

    mention: np.ndarray  # [A, D]
    informs: np.ndarray  # [A, NR]
    requests: np.ndarray  # [A, D + 1, NS]
    nooffer: np.ndarray  # [A, D]
    book: np.ndarray  # [A, D + 1, D]
    offerbook: np.ndarray  # [A, D + 1, D]


@dataclass(frozen=True, eq=False)
class ActionTable:
    """Actions as atoms, and each atom's effect in the simulator.

    Targets that depend on the domain under discussion (the corpus' ``Booking-*`` acts) are
    tables indexed by [atom, current domain]; others repeat the same target in every column.
    """

    composites: tuple[str, ...]  # [A]
    counts: np.ndarray  # int64 [A]: merged corpus counts
    atoms: tuple[str, ...]  # [n_atoms] "Domain-Intent-Slot"
    act_atoms: np.ndarray  # float32 [A, n_atoms] multi-hot
    effect: np.ndarray  # int64 [n_atoms]
    mention: np.ndarray  # float32 [n_atoms, D]: the atom refers to an entity of domain d
    informs: np.ndarray  # float32 [n_atoms, NR]: the atom tells the value of request slot r
    requests: np.ndarray  # float32 [n_atoms, D(current), NS]: the atom asks for inform slot s
    nooffer: np.ndarray  # float32 [n_atoms, D]
    book: np.ndarray  # float32 [n_atoms, D(current), D]: the atom makes a booking in domain d
    offerbook: np.ndarray  # float32 [n_atoms, D(current), D]

    @property
    def n_actions(self) -> int:
        return len(self.composites)

    def per_action(self) -> ActionEffects:
        """The effect tables gathered per action (so a turn indexes rows instead of multiplying)."""
        a = self.act_atoms
        n_atoms, d, ns = self.requests.shape

        def with_none(table: np.ndarray) -> np.ndarray:  # [A, D + 1, K]: row D = no domain discussed yet
            k = table.shape[2]
            per = (a @ table.reshape(n_atoms, d * k)).reshape(len(a), d, k) > 0
            return np.concatenate([per, np.zeros((len(a), 1, k), dtype=bool)], axis=1)

        return ActionEffects(
            mention=a @ self.mention > 0,
            informs=a @ self.informs > 0,
            requests=with_none(self.requests),
            nooffer=a @ self.nooffer > 0,
            book=with_none(self.book),
            offerbook=with_none(self.offerbook),
        )

    def atom_index(self, atom: str) -> int:
        """Index of an atom (-1 if no chosen composite uses it)."""
        return self.atoms.index(atom) if atom in self.atoms else -1

    def action_of(self, composite: str) -> int:
        """Action id of a composite (any order of its triples); -1 if not in the set."""
        key = canonical_composite(composite.split(";"))
        return self.composites.index(key) if key in self.composites else -1


def _atom_effect(atom: str) -> tuple[str, str, str, int]:
    domain, intent, slot = atom.split("-")
    if domain == "general":
        return domain, intent, slot, NONE
    if intent in MENTION_INTENTS and slot == "Ref":
        return domain, intent, slot, BOOK  # telling a reference number = the booking is made
    if intent in MENTION_INTENTS:
        if domain == BOOKING:
            return domain, intent, slot, OFFERBOOK  # "shall I book it for ...?"
        return domain, intent, slot, NONE if slot in NO_ENTITY_SLOTS else MENTION
    effect = {"Request": REQUEST, "NoOffer": NOOFFER, "Book": BOOK, "OfferBooked": BOOK, "OfferBook": OFFERBOOK}.get(
        intent, NONE
    )
    return domain, intent, slot, effect


def build_action_table(schema: DialogueSchema, composites: tuple[str, ...], counts: np.ndarray) -> ActionTable:
    """The multi-hot action table and the atoms' effect tables (built once per env config)."""
    atoms = tuple(sorted({a for c in composites for a in c.split(";")}))
    column = {a: j for j, a in enumerate(atoms)}
    act_atoms = np.zeros((len(composites), len(atoms)), dtype=np.float32)
    for i, composite in enumerate(composites):
        act_atoms[i, [column[a] for a in composite.split(";")]] = 1.0
    n_domains, ns, nr = len(schema.domains), schema.n_inform, schema.n_request
    effect = np.zeros(len(atoms), dtype=np.int64)
    mention = np.zeros((len(atoms), n_domains), dtype=np.float32)
    informs = np.zeros((len(atoms), nr), dtype=np.float32)
    requests = np.zeros((len(atoms), n_domains, ns), dtype=np.float32)
    nooffer = np.zeros((len(atoms), n_domains), dtype=np.float32)
    book = np.zeros((len(atoms), n_domains, n_domains), dtype=np.float32)
    offerbook = np.zeros_like(book)
    names = {d.capitalize(): i for i, d in enumerate(schema.domains)}
    for j, atom in enumerate(atoms):
        domain, _, slot, kind = _atom_effect(atom)
        effect[j] = kind
        # the domain(s) the atom acts on: its own, or (Booking-*) the one under discussion
        targets = (
            [(c, names[domain]) for c in range(n_domains)]
            if domain in names
            else ([(c, c) for c in range(n_domains) if schema.domains[c] in BOOKABLE] if domain == BOOKING else [])
        )
        for current, target in targets:
            name = goal_slot_name(schema.domains[target], slot)
            if kind == MENTION:
                mention[j, target] = 1.0
                r = schema.request_index(schema.domains[target], name)
                if r >= 0:
                    informs[j, r] = 1.0
            elif kind == REQUEST:
                # a booking request asks for a booking slot; a domain's own request prefers its constraint
                s = schema.inform_index(schema.domains[target], name, book=True if domain == BOOKING else None)
                if s >= 0:
                    requests[j, current, s] = 1.0
            elif kind == NOOFFER:
                nooffer[j, target] = 1.0
            elif kind == BOOK:
                book[j, current, target] = 1.0
            elif kind == OFFERBOOK:
                offerbook[j, current, target] = 1.0
    return ActionTable(
        composites, counts, atoms, act_atoms, effect, mention, informs, requests, nooffer, book, offerbook
    )
