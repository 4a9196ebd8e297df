"""Rule-based system policies for the dialogue env (the expert and the medium behaviour).

Both read only the observation part of the state (the user's acts, the belief flags, the
pending requests, the database pointer, booked / offered flags, the domain under discussion),
never the user's hidden goal. Each turn a policy decides which atoms it wants to say, with
weights, and picks the action (composite) with the best score: the sum of the wanted atoms'
weights it contains minus ``EXTRA_ATOM_COST`` per atom it contains that is not wanted. The
score is one matrix product over all actions, so nothing loops over actions or dialogues.

Expert, in order of precedence:

1. the user said bye: say bye;
2. a pending request can be answered (the domain has a matching entity; a taxi needs its
   departure, destination and a time): inform every pending slot of that domain (the domain
   under discussion first) with the entity's name;
3. a taxi request cannot be answered yet: ask for the first missing taxi slot;
4. the user's constraints in the domain under discussion match nothing: say so ("no offer");
5. the user is booking (said a booking detail or "book it" this turn) and nothing is booked:
   book when all the domain's booking details are known, else ask for the first missing one;
6. the domain under discussion has a matching entity not offered yet: offer it (its name);
7. otherwise: ask whether the user needs anything else (reqmore).

Medium: an information-only agent: the same rules without 4 and 5 (it never says "no offer" and
never books or asks for booking details), and it answers one pending request a turn. Goals
that need a booking or a change of constraints fail with it.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from merlion_core.envs.dialogue.schema import ACT_SLOT_NAMES, BOOKABLE

EXTRA_ATOM_COST = 0.6
BOOK_ATOMS = {"hotel": "Booking-Book-Ref", "restaurant": "Booking-Book-Ref", "train": "Train-OfferBooked-Ref"}
NAME_ATOMS = {"train": "Train-Inform-Id", "hospital": "Hospital-Inform-Department", "taxi": "Taxi-Inform-Car"}


def act_slot(domain: str, slot: str) -> str:
    """The corpus act slot of a goal slot (``address`` -> ``Addr``; train ``price`` -> ``Ticket``)."""
    if domain == "train" and slot in ("price", "duration"):
        return {"price": "Ticket", "duration": "Time"}[slot]
    for act, goal in ACT_SLOT_NAMES.items():
        if goal == slot:
            return act
    return slot.capitalize()


class RulePolicy:
    """Vectorised rule-based system policy over a :class:`DialogueModel`'s states."""

    def __init__(self, model, name: str) -> None:
        if name not in ("expert", "medium"):
            raise ValueError(f"dialogue: unknown rule behaviour {name!r}; choose expert or medium")
        self.name = name
        self.sim = model.simulator
        schema, table = model.schema, model.actions
        self.schema, self.table = schema, table
        n_atoms, d = len(table.atoms), len(schema.domains)

        def one_hot(atoms: list[str]) -> np.ndarray:
            out = np.zeros((len(atoms), n_atoms), dtype=np.float32)
            for i, atom in enumerate(atoms):
                j = table.atom_index(atom)
                if j >= 0:
                    out[i, j] = 1.0
            return out

        cap = [x.capitalize() for x in schema.domains]
        self.answer_atoms = one_hot(
            [f"{cap[schema.domains.index(dd)]}-Inform-{act_slot(dd, s)}" for dd, s in schema.request_slots]
        )  # [NR, n_atoms]
        self.ask_atoms = one_hot(
            [
                f"{'Booking' if b and dd != 'train' else cap[schema.domains.index(dd)]}-Request-{act_slot(dd, s)}"
                for (dd, s), b in zip(schema.inform_slots, schema.inform_is_book, strict=True)
            ]
        )  # [NS, n_atoms]
        self.name_atoms = one_hot([NAME_ATOMS.get(x, f"{x.capitalize()}-Inform-Name") for x in schema.domains])
        self.book_atoms = one_hot([BOOK_ATOMS.get(x, "") for x in schema.domains])
        self.nooffer_atoms = one_hot([f"{x.capitalize()}-NoOffer-none" for x in schema.domains])
        self.general = {k: one_hot([f"general-{k}-none"])[0] for k in ("bye", "reqmore")}
        self.atoms_by_action = np.ascontiguousarray(table.act_atoms.T)  # [n_atoms, A]
        self.atoms_per_action = table.act_atoms.sum(axis=1)[None, :]
        self.bookable = np.array([x in BOOKABLE for x in schema.domains])
        self.is_db = np.isin(np.arange(d), self.sim.db_domains)
        # the first slot to ask for: taxi route and time; booking details
        taxi = self.sim.taxi_slots
        self.taxi_order = taxi[
            np.argsort(
                [["departure", "destination", "leaveAt", "arriveBy"].index(schema.inform_slots[i][1]) for i in taxi]
            )
        ]
        self.info_of_domain = self.sim.domain_of_slot & ~schema.inform_is_book[:, None]  # [NS, D]
        self.book_of_domain = self.sim.domain_of_slot & schema.inform_is_book[:, None]

    def observation(self, states: np.ndarray) -> dict[str, np.ndarray]:
        blocks = self.sim.blocks
        return {
            name: states[:, blocks[name]] > 0.5
            for name in ("user_acts", "belief", "pending", "booked", "offered", "domain")
        } | {"pointer": states[:, blocks["db_pointer"]].reshape(len(states), len(self.sim.db_domains), -1).argmax(-1)}

    def wanted(self, states: np.ndarray) -> np.ndarray:
        """float32 [B, n_atoms]: the weight of every atom the policy wants to say."""
        obs = self.observation(states)
        b, d = len(states), len(self.schema.domains)
        sim, medium = self.sim, self.name == "medium"
        current = np.where(obs["domain"].any(1), obs["domain"].argmax(1), -1)
        cur = np.eye(d, dtype=bool)[np.maximum(current, 0)] & (current >= 0)[:, None]
        matches = np.zeros((b, d), dtype=np.int64)
        matches[:, sim.db_domains] = obs["pointer"]  # count bin: 0 = no match
        belief = obs["belief"]
        # np.asarray (no copy): ndarray.all/any with an axis are typed np.bool | NDArray
        taxi_ready = np.asarray(
            belief[:, sim.taxi_slots[sim.taxi_route]].all(1) & belief[:, sim.taxi_slots[sim.taxi_times]].any(1)
        )
        available = (matches > 0) | (~self.is_db[None, :] & taxi_ready[:, None])
        pending = obs["pending"]
        pending_domain = (pending.astype(np.int64) @ sim.domain_of_request) > 0
        answerable = pending_domain & available
        first = np.where(answerable.any(1), answerable.argmax(1), -1)
        target = np.where((answerable & cur).any(1), current, first)
        wanted = np.zeros((b, len(self.table.atoms)), dtype=np.float32)
        decided = obs["user_acts"][:, sim.bye].copy()
        wanted[decided] += 2 * self.general["bye"]
        # 2. answer pending requests of one domain
        rows = np.flatnonzero(~decided & (target >= 0))
        answer = pending[rows] & (sim.schema.request_domain[None, :] == target[rows, None])
        if medium:  # one slot a turn
            answer = np.eye(answer.shape[1], dtype=bool)[answer.argmax(1)] & answer
        wanted[rows] += answer.astype(np.float32) @ self.answer_atoms + 0.5 * self.name_atoms[target[rows]]
        decided[rows] = True
        # 3. a taxi request waiting for the route or time
        taxi_wait = ~decided & pending_domain[:, sim.taxi] & ~taxi_ready
        missing = ~belief[:, self.taxi_order]
        ask = self.taxi_order[missing.argmax(1)]
        wanted[taxi_wait] += 2 * self.ask_atoms[ask[taxi_wait]]
        decided |= taxi_wait
        # 4. no entity matches the user's constraints
        told_here = (belief.astype(np.int64) @ self.info_of_domain) > 0
        no_match = ~decided & (cur & self.is_db & told_here & (matches == 0)).any(1)
        if not medium:
            wanted[no_match] += 2 * self.nooffer_atoms[current[no_match]]
            decided |= no_match
        # 5. booking
        said_book = obs["user_acts"][:, : sim.ns] & self.schema.inform_is_book
        book_talk = ((said_book.astype(np.int64) @ sim.domain_of_slot) > 0) | obs["user_acts"][
            :, sim.ns + sim.nr : sim.ns + sim.nr + d
        ]
        booking = ~decided & (cur & book_talk & self.bookable & ~obs["booked"]).any(1)
        untold = self.book_of_domain[None, :, :].transpose(0, 2, 1) & ~belief[:, None, :]  # [B, D, NS]
        untold_here = untold[np.arange(b), np.maximum(current, 0)]  # [B, NS]
        complete = ~untold_here.any(1) & (cur & available).any(1)
        if not medium:
            rows = np.flatnonzero(booking & complete)
            wanted[rows] += 2 * self.book_atoms[current[rows]] + 0.5 * self.name_atoms[current[rows]]
            ask_book = booking & ~complete & untold_here.any(1)
            wanted[ask_book] += 2 * self.ask_atoms[untold_here[ask_book].argmax(1)]
            decided |= booking
        # 6. offer an entity of the domain under discussion
        offer = ~decided & (cur & self.is_db & available & ~obs["offered"]).any(1)
        wanted[offer] += self.name_atoms[current[offer]]
        decided |= offer
        # 7. anything else?
        wanted[~decided] += self.general["reqmore"]
        return wanted

    def __call__(self, states: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """int64 [B]: argmax over actions of sum(wanted weights) - EXTRA_ATOM_COST * unwanted atoms.

        The wanted matrix has a few entries a row, so the score is a sparse x dense product:
        (w + cost) on the wanted atoms times the action table, minus cost * atoms per action."""
        wanted = self.wanted(np.asarray(states, dtype=np.float32))
        rows, cols = np.nonzero(wanted)
        gain = sparse.csr_matrix((wanted[rows, cols] + EXTRA_ATOM_COST, (rows, cols)), shape=wanted.shape)
        score = np.asarray(gain @ self.atoms_by_action) - EXTRA_ATOM_COST * self.atoms_per_action
        return np.argmax(score, axis=1).astype(np.int64)

    def probability(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """float64 [B]: the policy is deterministic, so 1 for the action it picks and 0 elsewhere."""
        return (np.asarray(actions) == self(states, None)).astype(np.float64)


def make_rule_behaviour(model, name: str) -> RulePolicy:
    """The expert or medium rule policy of a dialogue model."""
    return RulePolicy(model, name)
