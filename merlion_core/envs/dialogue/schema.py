"""The dialogue task's slots, value vocabularies and database tables, as arrays.

Built once from the parsed MultiWOZ files (:class:`~merlion_core.data.multiwoz_io.MultiWOZData`):

- domains: attraction, hospital, hotel, police, restaurant, taxi, train (the goal model's order
  is irrelevant; indices follow this tuple);
- *inform slots* (index space ``NS``): every domain's constraint slots (goal_model ``info``)
  followed by its booking slots (``book``), domains in order, slots sorted by name;
- *request slots* (``NR``): every domain's requestable slots (goal_model ``reqt``);
- value ids: 0 = no value, -1 = "don't care", k >= 1 = the k-th value of the slot's sorted
  vocabulary. Database slots use the database's own values (value_set / db files); train times,
  taxi slots and booking slots use the goal model's values that the ontology also lists;
- database tables: per domain with a database (all but taxi), int32 [E, k] value ids of every
  entity for the domain's constraint slots; train ``leaveAt`` / ``arriveBy`` columns hold minutes
  and match as "leaves at or after" / "arrives by".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from merlion_core.data.multiwoz_io import DOMAINS, MultiWOZData

DONTCARE = -1
CATEGORICAL, AFTER, BEFORE = 0, 1, 2  # how a constraint column matches an entity
DB_DOMAINS = tuple(d for d in DOMAINS if d != "taxi")
BOOKABLE = ("hotel", "restaurant", "train")
# corpus act slot name -> goal slot name (domain-specific overrides below)
ACT_SLOT_NAMES = {
    "Addr": "address",
    "Post": "postcode",
    "Phone": "phone",
    "Area": "area",
    "Type": "type",
    "Name": "name",
    "Fee": "entrance fee",
    "Food": "food",
    "Stars": "stars",
    "Internet": "internet",
    "Parking": "parking",
    "Department": "department",
    "Car": "car type",
    "Id": "trainID",
    "Leave": "leaveAt",
    "Arrive": "arriveBy",
    "Depart": "departure",
    "Dest": "destination",
    "Day": "day",
    "People": "people",
    "Stay": "stay",
    "Ticket": "price",
    "Price": "pricerange",
    "Time": "time",
}
TRAIN_ACT_SLOT_NAMES = {"Price": "price", "Time": "duration"}
ONTOLOGY_NAMES = {"pricerange": "price range", "arriveBy": "arrive by", "leaveAt": "leave at"}


class SchemaError(ValueError):
    """The MultiWOZ files do not support the dialogue task (one line: what and where)."""


def goal_slot_name(domain: str, act_slot: str) -> str:
    """The goal-model slot name of a corpus act slot (``Addr`` -> ``address``; train ``Time`` -> ``duration``)."""
    if domain == "train" and act_slot in TRAIN_ACT_SLOT_NAMES:
        return TRAIN_ACT_SLOT_NAMES[act_slot]
    return ACT_SLOT_NAMES.get(act_slot, act_slot.lower())


def ontology_key(domain: str, slot: str, is_book: bool) -> str:
    """The ontology.json key of a goal slot (``restaurant-price range``, ``hotel-book stay``)."""
    return f"{domain}-{'book ' if is_book else ''}{ONTOLOGY_NAMES.get(slot, slot)}"


def parse_minutes(value: str) -> int:
    """'HH:MM' -> minutes after midnight (hours may exceed 23, as in '24:45'); -1 if not a time."""
    parts = value.split(":")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return -1
    return int(parts[0]) * 60 + int(parts[1])


@dataclass(frozen=True, eq=False)
class DomainTable:
    """One domain's database as value ids: entities [E, k] over the domain's constraint slots."""

    slots: np.ndarray  # int64 [k]: global inform-slot indices of the columns
    kinds: np.ndarray  # int64 [k]: CATEGORICAL, AFTER or BEFORE
    entities: np.ndarray  # int32 [E, k]: value ids (categorical) or minutes (time columns)


@dataclass(frozen=True, eq=False)
class DialogueSchema:
    """Slot index spaces, value vocabularies, goal-model distributions and database tables."""

    domains: tuple[str, ...]
    inform_slots: tuple[tuple[str, str], ...]  # (domain, slot), info slots then book slots per domain
    inform_domain: np.ndarray  # int64 [NS]
    inform_is_book: np.ndarray  # bool [NS]
    request_slots: tuple[tuple[str, str], ...]
    request_domain: np.ndarray  # int64 [NR]
    values: tuple[tuple[str, ...], ...]  # per inform slot: sorted vocabulary (value id k -> values[k-1])
    sample_probs: tuple[np.ndarray, ...]  # per inform slot: goal-model probabilities over values
    value_minutes: tuple[np.ndarray, ...]  # per inform slot: minutes of each value (-1 if not a time)
    tables: dict[int, DomainTable]  # domain index -> database (domains with a database)
    orderings: np.ndarray  # int64 [O, D]: rank of each domain in the ordering, -1 absent
    ordering_probs: np.ndarray  # float64 [O]
    info_combos: tuple[tuple[np.ndarray, np.ndarray], ...]  # per domain: (membership [C, NS] bool, probs [C])
    request_combos: tuple[tuple[np.ndarray, np.ndarray], ...]  # per domain: (membership [C, NR] bool, probs [C])
    request_prob: np.ndarray  # float64 [D]: P(the domain goal has requests)
    book_prob: np.ndarray  # float64 [D]: P(the domain goal has a booking)

    @property
    def n_inform(self) -> int:
        return len(self.inform_slots)

    @property
    def n_request(self) -> int:
        return len(self.request_slots)

    def inform_index(self, domain: str, slot: str, book: bool | None = None) -> int:
        """Global index of a domain's inform slot (-1 if the domain has no such slot)."""
        for i, (d, s) in enumerate(self.inform_slots):
            if d == domain and s == slot and (book is None or bool(self.inform_is_book[i]) == book):
                return i
        return -1

    def request_index(self, domain: str, slot: str) -> int:
        """Global index of a domain's requestable slot (-1 if none)."""
        return self.request_slots.index((domain, slot)) if (domain, slot) in self.request_slots else -1

    def value_id(self, slot_index: int, value: str) -> int:
        """The id of ``value`` in an inform slot's vocabulary (0 if unknown)."""
        vocab = self.values[slot_index]
        return vocab.index(value) + 1 if value in vocab else 0

    def value_name(self, slot_index: int, value_id: int) -> str:
        if value_id == DONTCARE:
            return "dontcare"
        return self.values[slot_index][value_id - 1] if value_id > 0 else ""


def _slot_vocabulary(data: MultiWOZData, domain: str, slot: str, is_book: bool) -> tuple[tuple[str, ...], np.ndarray]:
    """The slot's values and the goal model's sampling probabilities over them."""
    kind = "book" if is_book else "info"
    dist = data.goal_model["ind_slot_value_dist"].get(domain, {}).get(kind, {}).get(slot, {})
    if not isinstance(dist, dict):
        raise SchemaError(f"goal_model.json: ind_slot_value_dist.{domain}.{kind}.{slot}: expected value -> probability")
    db = data.db[domain]
    in_db = (
        domain in DB_DOMAINS
        and not is_book
        and isinstance(db, list)
        and any(slot in e for e in db)
        and not (domain == "train" and slot in ("leaveAt", "arriveBy"))
    )
    if in_db:  # database slot: the database's own values, goal values restricted to them
        vocab = sorted({str(e[slot]) for e in db if slot in e})
    else:  # goal-only slot: goal values the ontology knows (times must parse)
        known = set(data.ontology.get(ontology_key(domain, slot, is_book), ()))
        vocab = sorted(v for v in dist if v in known)
        if slot in ("leaveAt", "arriveBy", "time"):
            vocab = [v for v in vocab if parse_minutes(v) >= 0]
    probs = np.array([float(dist.get(v, 0.0)) for v in vocab])
    if len(vocab) == 0 or probs.sum() <= 0:
        raise SchemaError(f"goal_model.json: {domain}.{kind}.{slot}: no sampleable value in the database/ontology")
    return tuple(vocab), probs / probs.sum()


def _domain_table(data: MultiWOZData, domain: str, slots: list[int], schema_slots, values) -> DomainTable:
    entities = data.db[domain]
    kinds = []
    columns = []
    for i in slots:
        slot = schema_slots[i][1]
        if domain == "train" and slot in ("leaveAt", "arriveBy"):
            kinds.append(AFTER if slot == "leaveAt" else BEFORE)
            column = [parse_minutes(str(e.get(slot, ""))) for e in entities]
            if min(column) < 0:
                raise SchemaError(f"db/train_db.json: a train has no valid {slot} time")
        else:
            kinds.append(CATEGORICAL)
            lookup = {v: k + 1 for k, v in enumerate(values[i])}
            column = [lookup.get(str(e.get(slot, "")), 0) for e in entities]
        columns.append(column)
    table = np.array(columns, dtype=np.int32).T.reshape(len(entities), len(slots))
    return DomainTable(np.array(slots, dtype=np.int64), np.array(kinds, dtype=np.int64), table)


def _combos(pairs, slot_index: dict[str, int], width: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(pairs, list) or not pairs:
        raise SchemaError(f"goal_model.json: slots_combination_dist.{where}: expected [[slots], count] pairs")
    member = np.zeros((len(pairs), width), dtype=bool)
    counts = np.zeros(len(pairs))
    for row, (slots, count) in enumerate(pairs):
        for s in slots:
            if s not in slot_index:
                raise SchemaError(f"goal_model.json: slots_combination_dist.{where}: unknown slot {s!r}")
            member[row, slot_index[s]] = True
        counts[row] = float(count)
    return member, counts / counts.sum()


def build_schema(data: MultiWOZData) -> DialogueSchema:
    """Index spaces, vocabularies and tables of the dialogue task from the MultiWOZ files."""
    gm = data.goal_model
    inform, is_book, request = [], [], []
    for d in DOMAINS:
        dist = gm["ind_slot_dist"].get(d, {})
        inform += [(d, s) for s in sorted(dist.get("info", {}))]
        is_book += [False] * len(dist.get("info", {}))
        inform += [(d, s) for s in sorted(dist.get("book", {}))]
        is_book += [True] * len(dist.get("book", {}))
        request += [(d, s) for s in sorted(dist.get("reqt", {}))]
    vocabularies = [_slot_vocabulary(data, d, s, b) for (d, s), b in zip(inform, is_book, strict=True)]
    values = tuple(v for v, _ in vocabularies)
    minutes = tuple(np.array([parse_minutes(x) for x in v], dtype=np.int64) for v in values)
    domain_of = {d: i for i, d in enumerate(DOMAINS)}
    inform_domain = np.array([domain_of[d] for d, _ in inform], dtype=np.int64)
    tables = {}
    for d in DB_DOMAINS:
        slots = [i for i, ((dd, _), b) in enumerate(zip(inform, is_book, strict=True)) if dd == d and not b]
        tables[domain_of[d]] = _domain_table(data, d, slots, inform, values)

    orderings = [(o, p) for o, p in gm["domain_ordering_dist"] if o and p > 0]
    if not orderings:
        raise SchemaError("goal_model.json: domain_ordering_dist has no non-empty ordering")
    order_table = np.full((len(orderings), len(DOMAINS)), -1, dtype=np.int64)
    for row, (order, _) in enumerate(orderings):
        for rank, d in enumerate(order):
            order_table[row, domain_of[d]] = rank
    order_probs = np.array([p for _, p in orderings], dtype=np.float64)

    info_combos, request_combos, request_prob, book_prob = [], [], [], []
    for d in DOMAINS:
        combos = gm["slots_combination_dist"].get(d, {})
        info_index = {s: i for i, ((dd, s), b) in enumerate(zip(inform, is_book, strict=True)) if dd == d and not b}
        request_of = {s: i for i, (dd, s) in enumerate(request) if dd == d}
        info_combos.append(_combos(combos.get("info", [[[], 1]]), info_index, len(inform), f"{d}.info"))
        request_combos.append(_combos(combos.get("reqt", []), request_of, len(request), f"{d}.reqt"))
        nums = gm["slots_num_dist"].get(d, {})
        n_info = sum(c for _, c in nums.get("info", [])) or 1
        request_prob.append(min(1.0, sum(c for _, c in nums.get("reqt", [])) / n_info))
        has_book = any(dd == d and b for (dd, _), b in zip(inform, is_book, strict=True))
        book_prob.append(float(gm["book_dist"].get(d, 0.0)) if has_book else 0.0)

    return DialogueSchema(
        domains=DOMAINS,
        inform_slots=tuple(inform),
        inform_domain=inform_domain,
        inform_is_book=np.array(is_book, dtype=bool),
        request_slots=tuple(request),
        request_domain=np.array([domain_of[d] for d, _ in request], dtype=np.int64),
        values=values,
        sample_probs=tuple(p for _, p in vocabularies),
        value_minutes=minutes,
        tables=tables,
        orderings=order_table,
        ordering_probs=order_probs / order_probs.sum(),
        info_combos=tuple(info_combos),
        request_combos=tuple(request_combos),
        request_prob=np.array(request_prob),
        book_prob=np.array(book_prob),
    )


def match_entities(schema: DialogueSchema, domain: int, constraints: np.ndarray) -> np.ndarray:
    """bool [B, E]: entities of ``domain`` meeting each row's constraints.

    ``constraints`` int [B, NS] value ids over all inform slots; 0 and -1 (don't care) constrain nothing.
    """
    table = schema.tables[domain]
    values = constraints[:, table.slots]  # [B, k]
    ok = np.ones((values.shape[0], table.entities.shape[0]), dtype=bool)
    for col, (slot, kind) in enumerate(zip(table.slots, table.kinds, strict=True)):
        wanted = values[:, col]
        free = (wanted <= 0)[:, None]
        entity = table.entities[None, :, col]
        if kind == CATEGORICAL:
            ok &= free | (entity == wanted[:, None])
        else:
            limit = schema.value_minutes[slot][np.maximum(wanted, 1) - 1][:, None]
            ok &= free | ((entity >= limit) if kind == AFTER else (entity <= limit))
    return ok


def entity_meets(schema: DialogueSchema, domain: int, entities: np.ndarray, constraints: np.ndarray) -> np.ndarray:
    """bool [B]: entity ``entities[b]`` (index, -1 = none) of ``domain`` meets row b's constraints."""
    table = schema.tables[domain]
    rows = table.entities[np.maximum(entities, 0)]  # [B, k]
    values = constraints[:, table.slots]
    ok = entities >= 0
    for col, (slot, kind) in enumerate(zip(table.slots, table.kinds, strict=True)):
        wanted = values[:, col]
        if kind == CATEGORICAL:
            hit = rows[:, col] == wanted
        else:
            limit = schema.value_minutes[slot][np.maximum(wanted, 1) - 1]
            hit = (rows[:, col] >= limit) if kind == AFTER else (rows[:, col] <= limit)
        ok &= (wanted <= 0) | hit
    return ok
