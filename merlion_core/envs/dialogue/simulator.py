"""The agenda-based user simulator, stepped for a whole batch of dialogues with arrays.

One row of the state array is one dialogue: the observation block first (what the system
sees), then the hidden part (the user's goal and agenda). Everything is stored as float32
holding small integers; :meth:`UserSimulator.unpack` gives int64 views by name.

The agenda is a stack of *user codes* (inform slot s, request slot r, ask for a booking in
domain d): initially, per domain in goal order, top first: the constraints (random order),
the booking details, "book it", the requests (random order). A turn:

1. the system act's atoms take effect (the values come from the database: the first entity
   that matches the belief state, as ConvLab-2's lexicaliser does):
   - informing a requested slot answers it when the entity meets the goal's constraints; an
     entity that violates them makes the user push its unsaid / changed constraints;
   - a request for a slot pushes the answer (the goal's value, or "don't care");
   - "no offer" when nothing matches makes a user whose constraints must change switch to its
     final constraints and push the changed ones;
   - a booking succeeds when all booking details were said and the entity meets the goal;
     missing details are pushed; an offer to book pushes the details (or "book it");
2. stale codes are dropped (said, answered, booked, or the domain is finished); a code pushed
   again moves to the top;
3. when the agenda is empty but a goal domain is unfinished, the user asks again for what is
   missing (the domain's needs are pushed); after ``patience`` such repeats it gives the domain
   up (the dialogue then fails); with nothing left the user says bye and the dialogue ends;
4. the user pops 1..``max_user_acts`` codes (drawn per turn), all of the domain on top.

Success: every goal domain finished: all its requests answered, and its booking made, with an
entity that meets its final constraints.
"""

from __future__ import annotations

import numpy as np

from merlion_core.envs.dialogue.actions import ActionTable
from merlion_core.envs.dialogue.goals import Goals
from merlion_core.envs.dialogue.schema import (
    DB_DOMAINS,
    DONTCARE,
    DialogueSchema,
    entity_meets,
    match_entities,
)

DB_BINS = np.array([0, 1, 2, 3, 6, 11])  # DB pointer: 0, 1, 2, 3-5, 6-10, 11+ matching entities


class UserSimulator:
    """State layout, goals -> initial states, and the batched turn."""

    def __init__(
        self, schema: DialogueSchema, table: ActionTable, max_turns: int, max_user_acts: int, patience: int
    ) -> None:
        self.schema, self.table = schema, table
        self.effects = table.per_action()
        self.max_turns, self.max_user_acts, self.patience = max_turns, max_user_acts, patience
        d, ns, nr = len(schema.domains), schema.n_inform, schema.n_request
        self.n_domains, self.ns, self.nr = d, ns, nr
        self.n_codes = ns + nr + d + 1  # inform s | request r | book it (domain d) | bye
        self.bye = self.n_codes - 1
        self.code_domain = np.concatenate([schema.inform_domain, schema.request_domain, np.arange(d), [0]])
        self.db_domains = np.array(
            [schema.domains.index(x) for x in DB_DOMAINS if schema.domains.index(x) in schema.tables]
        )
        self.taxi = schema.domains.index("taxi")
        self.taxi_slots = np.flatnonzero(schema.inform_domain == self.taxi)
        taxi_names = [schema.inform_slots[i][1] for i in self.taxi_slots]
        self.taxi_route = [j for j, n in enumerate(taxi_names) if n in ("departure", "destination")]
        self.taxi_times = [j for j, n in enumerate(taxi_names) if n in ("leaveAt", "arriveBy")]
        self.domain_of_slot = np.eye(d, dtype=bool)[schema.inform_domain]  # [NS, D]
        self.domain_of_request = np.eye(d, dtype=bool)[schema.request_domain]  # [NR, D]
        n_atoms = len(table.atoms)
        observation = [
            ("user_acts", self.n_codes),
            ("system_acts", n_atoms),
            ("belief", ns),
            ("pending", nr),
            ("db_pointer", len(self.db_domains) * len(DB_BINS)),
            ("booked", d),
            ("offered", d),
            ("domain", d),
            ("turn_fraction", 1),
            ("terminal", 1),
        ]
        hidden = [
            ("rank", d),
            ("initial", ns),
            ("final", ns),
            ("requests", nr),
            ("has_book", d),
            ("switched", d),
            ("told", ns),
            ("asked", nr),
            ("answered", nr),
            ("failed", d),
            ("repeats", d),
            ("stack", self.n_codes),
            ("stack_len", 1),
            ("current", 1),
            ("turn", 1),
            ("top", d),
            ("count", d),
            ("success", 1),
        ]
        self.blocks: dict[str, slice] = {}
        start = 0
        for name, width in observation + hidden:
            self.blocks[name] = slice(start, start + width)
            start += width
            if name == "terminal":
                self.obs_dim = start
        self.state_dim = start

    def code_name(self, code: int) -> str:
        """Readable name of a user code: ``inform restaurant-area``, ``request police-phone``,
        ``book hotel``, ``bye``."""
        if code < self.ns:
            return "inform " + "-".join(self.schema.inform_slots[code])
        if code < self.ns + self.nr:
            return "request " + "-".join(self.schema.request_slots[code - self.ns])
        if code < self.ns + self.nr + self.n_domains:
            return "book " + self.schema.domains[code - self.ns - self.nr]
        return "bye"

    # ------------------------------------------------------------------ layout
    def unpack(self, states: np.ndarray) -> dict[str, np.ndarray]:
        """int64 copies of every hidden block (scalars as [B]) and the offered/booked flags."""
        out = {
            name: states[:, sl].astype(np.int64)
            for name, sl in self.blocks.items()
            if sl.start >= self.obs_dim or name in ("booked", "offered")
        }
        for name in ("stack_len", "current", "turn", "success"):
            out[name] = out[name][:, 0]
        return out

    def pack(
        self, st: dict[str, np.ndarray], user_acts: np.ndarray, system_atoms: np.ndarray, ended: np.ndarray
    ) -> np.ndarray:
        """float32 [B, state_dim]: the observation blocks computed from ``st``, then ``st``."""
        b = len(ended)
        out = np.zeros((b, self.state_dim), dtype=np.float32)
        for name, value in st.items():
            out[:, self.blocks[name]] = value.reshape(b, -1)
        bins = np.searchsorted(DB_BINS, st["count"][:, self.db_domains], side="right") - 1  # [B, n_db]
        pointer = np.eye(len(DB_BINS), dtype=np.float32)[bins].reshape(b, -1)
        out[:, self.blocks["user_acts"]] = user_acts
        out[:, self.blocks["system_acts"]] = system_atoms
        out[:, self.blocks["belief"]] = st["told"] != 0
        out[:, self.blocks["pending"]] = (st["asked"] > 0) & (st["answered"] == 0)
        out[:, self.blocks["db_pointer"]] = pointer
        out[:, self.blocks["domain"]] = np.eye(self.n_domains + 1, dtype=np.float32)[st["current"]][:, : self.n_domains]
        out[:, self.blocks["turn_fraction"]] = (st["turn"] / self.max_turns)[:, None]
        out[:, self.blocks["terminal"]] = ended[:, None]
        return out

    # ------------------------------------------------------------------ goal helpers
    def current_values(self, st) -> np.ndarray:
        """int64 [B, NS]: the values the user holds now (final ones after a switch)."""
        switched = st["switched"][:, self.schema.inform_domain] > 0
        return np.where(switched, st["final"], st["initial"])

    def said_values(self, st) -> np.ndarray:
        """int64 [B, NS]: what the user says for each slot: its value, or don't care for info slots."""
        current = self.current_values(st)
        return np.where((current == 0) & ~self.schema.inform_is_book, DONTCARE, current)

    def domains_done(self, st) -> np.ndarray:
        """bool [B, D]: every request answered and the booking made."""
        open_requests = (st["requests"] > 0) & (st["answered"] == 0)
        unanswered = (open_requests.astype(np.int64) @ self.domain_of_request) > 0
        return (st["rank"] >= 0) & ~unanswered & ((st["booked"] > 0) | (st["has_book"] == 0))

    def query(self, st, changed: np.ndarray | None = None) -> None:
        """Database counts and first matches for the belief state (``told``), in place, for the
        rows and domains in ``changed`` (bool [B, D]; None: all). A row that constrains nothing in
        a domain matches every entity, the first one on top."""
        for d in self.db_domains:
            rows = np.arange(len(st["told"])) if changed is None else np.flatnonzero(changed[:, d])
            table = self.schema.tables[d]
            constrained = (st["told"][rows][:, table.slots] > 0).any(axis=1)
            st["count"][rows[~constrained], d] = len(table.entities)
            st["top"][rows[~constrained], d] = 0
            rows = rows[constrained]
            if rows.size:
                match = match_entities(self.schema, d, st["told"][rows])
                st["count"][rows, d] = match.sum(axis=1)
                st["top"][rows, d] = np.where(match.any(axis=1), match.argmax(axis=1), -1)

    def entity_ok(self, st) -> tuple[np.ndarray, np.ndarray]:
        """(exists, meets) bool [B, D]: the system has an entity to talk about, and it meets the goal."""
        exists = st["count"] > 0
        meets = np.zeros_like(exists)
        for d in self.db_domains:
            meets[:, d] = exists[:, d] & entity_meets(self.schema, d, st["top"][:, d], st["final"])
        told = st["told"][:, self.taxi_slots]
        ready = (told[:, self.taxi_route] > 0).all(axis=1) & (told[:, self.taxi_times] > 0).any(axis=1)
        goal = st["final"][:, self.taxi_slots]
        exists[:, self.taxi] = ready
        meets[:, self.taxi] = ready & ((goal <= 0) | (told == goal)).all(axis=1)
        return exists, meets

    def needs(self, st, domains: np.ndarray) -> np.ndarray:
        """bool [B, n_codes]: everything still missing for the given domains (bool [B, D])."""
        said = self.said_values(st)
        current = self.current_values(st)
        in_domain = domains[:, self.schema.inform_domain]
        inform = in_domain & (current != 0) & (st["told"] != said)
        request = domains[:, self.schema.request_domain] & (st["requests"] > 0) & (st["answered"] == 0)
        book_it = domains & (st["has_book"] > 0) & (st["booked"] == 0)
        return np.concatenate([inform, request, book_it, np.zeros((len(domains), 1), bool)], axis=1)

    # ------------------------------------------------------------------ agenda stack
    def _stale(self, st, finished: np.ndarray) -> np.ndarray:
        """bool [B, n_codes]: codes with nothing left to say."""
        stale = np.concatenate(
            [
                st["told"] == self.said_values(st),
                st["answered"] > 0,
                st["booked"] > 0,
                np.ones((len(finished), 1), bool),
            ],
            axis=1,
        )
        return stale | finished[:, self.code_domain]

    def _push(self, st, codes: np.ndarray) -> None:
        """Put ``codes`` (bool [B, n_codes]) on top, smallest code on top; a code already there moves up."""
        stack, length = st["stack"], st["stack_len"]
        positions = np.arange(stack.shape[1])[None, :]
        keep = (positions < length[:, None]) & ~np.take_along_axis(codes, stack, axis=1)
        self._compact(st, keep)
        stack, length = st["stack"], st["stack_len"]
        descending = codes[:, ::-1]
        pos = length[:, None] + np.cumsum(descending, axis=1) - 1
        rows, cols = np.nonzero(descending)
        stack[rows, pos[rows, cols]] = self.n_codes - 1 - cols
        st["stack_len"] = length + descending.sum(axis=1)

    @staticmethod
    def _compact(st, keep: np.ndarray) -> None:
        order = np.argsort(~keep, axis=1, kind="stable")
        st["stack"] = np.take_along_axis(st["stack"], order, axis=1)
        st["stack_len"] = keep.sum(axis=1)

    def _drop_stale(self, st, finished: np.ndarray) -> None:
        stale = np.take_along_axis(self._stale(st, finished), st["stack"], axis=1)
        positions = np.arange(st["stack"].shape[1])[None, :]
        self._compact(st, (positions < st["stack_len"][:, None]) & ~stale)

    # ------------------------------------------------------------------ turns
    def initial(
        self, goals: Goals, rng: np.random.Generator, deterministic: bool = False
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Hidden state of fresh dialogues and the user's opening acts."""
        b, d = goals.rank.shape
        st = {
            name: np.zeros((b, sl.stop - sl.start), dtype=np.int64)
            for name, sl in self.blocks.items()
            if sl.start >= self.obs_dim or name in ("booked", "offered")
        }
        st.update(
            rank=goals.rank,
            initial=goals.initial,
            final=goals.final,
            requests=goals.requests.astype(np.int64),
            has_book=goals.has_book.astype(np.int64),
        )
        for name in ("stack_len", "current", "turn", "success"):
            st[name] = st[name][:, 0]
        st["current"][:] = d  # "no domain yet" (one past the last)
        # agenda, bottom to top: larger key lower; per domain: constraints, booking, book it, requests
        codes = self.needs(st, goals.rank >= 0)
        within = np.concatenate(
            [
                rng.random((b, self.ns)) + np.where(self.schema.inform_is_book, 100, 0),
                300 + rng.random((b, self.nr)),
                np.full((b, d), 200.0),
                np.zeros((b, 1)),
            ],
            axis=1,
        )
        key = np.where(codes, goals.rank[:, self.code_domain] * 1000.0 + within, -np.inf)
        st["stack"] = np.argsort(-key, axis=1, kind="stable")
        st["stack_len"] = codes.sum(axis=1)
        user_acts, _ = self.user_turn(st, np.zeros((b, self.n_codes), bool), rng, deterministic)
        self.query(st)
        return st, user_acts

    def system_turn(self, st, actions: np.ndarray) -> np.ndarray:
        """Apply the system acts (int64 [B]) to the user; returns the codes the user pushes."""
        e, current = self.effects, st["current"]
        mention, informs, nooffer = e.mention[actions], e.informs[actions], e.nooffer[actions]
        requests, book, offerbook = (
            e.requests[actions, current],
            e.book[actions, current],
            e.offerbook[actions, current],
        )
        in_goal = st["rank"] >= 0
        exists, meets = self.entity_ok(st)
        answer = informs & meets[:, self.schema.request_domain] & (st["requests"] > 0)
        st["answered"] |= answer
        st["offered"] |= mention & exists
        push = np.zeros((len(actions), self.n_codes), dtype=bool)
        # an entity that violates the goal: the user restates its constraints
        violated = (mention | book) & in_goal & exists & ~meets
        push[:, : self.ns] |= self.needs(st, violated)[:, : self.ns] & ~self.schema.inform_is_book
        # the system asks for slots of a goal domain (booking slots only when the user books)
        has_book = st["has_book"][:, self.schema.inform_domain] > 0
        asked = requests & in_goal[:, self.schema.inform_domain] & (~self.schema.inform_is_book | has_book)
        push[:, : self.ns] |= asked
        # nothing matches: a user whose constraints must change switches to its final ones
        changes = (st["initial"] != st["final"]) & ~self.schema.inform_is_book  # [B, NS]
        can_switch = (changes.astype(np.int64) @ self.domain_of_slot) > 0
        switch = nooffer & in_goal & (st["count"] == 0) & (st["switched"] == 0) & can_switch
        st["switched"] |= switch
        push[:, : self.ns] |= switch[:, self.schema.inform_domain] & changes
        # bookings and offers to book
        missing_book = self.schema.inform_is_book & has_book & (st["told"] != st["final"])
        incomplete = (missing_book.astype(np.int64) @ self.domain_of_slot) > 0
        wants = (book | offerbook) & (st["has_book"] > 0) & (st["booked"] == 0)
        st["booked"] |= book & wants & ~incomplete & meets
        push[:, : self.ns] |= missing_book & wants[:, self.schema.inform_domain]
        push[:, self.ns + self.nr : self.ns + self.nr + self.n_domains] |= offerbook & wants & ~incomplete
        return push

    def user_turn(
        self, st, push: np.ndarray, rng: np.random.Generator, deterministic: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Update the agenda and pop the user's acts; returns (user act codes [B, n_codes], bye [B])."""
        b = len(push)
        n_pop = np.full(b, self.max_user_acts) if deterministic else rng.integers(1, self.max_user_acts + 1, size=b)
        finished = self.domains_done(st) | (st["failed"] > 0) | (st["rank"] < 0)
        self._push(st, push)
        self._drop_stale(st, finished)
        for _ in range(self.n_domains + 1):  # an empty agenda: ask again for an unfinished domain
            unfinished = ~finished
            empty = (st["stack_len"] == 0) & unfinished.any(axis=1)
            if not empty.any():
                break
            first = np.argmin(np.where(unfinished, st["rank"], 1 << 30), axis=1)
            rows = np.flatnonzero(empty)
            st["repeats"][rows, first[rows]] += 1
            give_up = st["repeats"][rows, first[rows]] > self.patience
            st["failed"][rows[give_up], first[rows[give_up]]] = 1
            finished[rows[give_up], first[rows[give_up]]] = True
            retry = rows[~give_up]
            chosen = np.zeros((b, self.n_domains), dtype=bool)
            chosen[retry, first[retry]] = True
            self._push(st, self.needs(st, chosen))
        # pop up to n_pop codes of the domain on top
        k = self.max_user_acts
        index = st["stack_len"][:, None] - 1 - np.arange(k)[None, :]
        codes = np.take_along_axis(st["stack"], np.maximum(index, 0), axis=1)
        domain = self.code_domain[codes]
        same = (index >= 0) & (domain == domain[:, :1]) & (np.arange(k)[None, :] < n_pop[:, None])
        take = np.cumprod(same, axis=1).astype(bool)
        st["stack_len"] -= take.sum(axis=1)
        user_acts = np.zeros((b, self.n_codes), dtype=bool)
        rows, cols = np.nonzero(take)
        user_acts[rows, codes[rows, cols]] = True
        bye = ~take[:, 0]
        user_acts[bye, self.bye] = True
        # the belief state hears the informs; a changed constraint withdraws the offered entity
        said = user_acts[:, : self.ns] & (st["told"] != self.said_values(st))
        st["told"] = np.where(user_acts[:, : self.ns], self.said_values(st), st["told"])
        st["offered"][(said.astype(np.int64) @ self.domain_of_slot) > 0] = 0
        st["asked"] |= user_acts[:, self.ns : self.ns + self.nr]
        st["current"] = np.where(take[:, 0], domain[:, 0], st["current"])
        return user_acts, bye

    def step(
        self, st, actions: np.ndarray, rng: np.random.Generator, deterministic: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One system turn and the user's answer: (user acts, atoms, ended, success), ``st`` in place."""
        atoms = self.table.act_atoms[actions]
        push = self.system_turn(st, actions)
        told = st["told"].copy()
        user_acts, bye = self.user_turn(st, push, rng, deterministic)
        self.query(st, changed=((told != st["told"]).astype(np.int64) @ self.domain_of_slot) > 0)
        st["turn"] += 1
        success = (self.domains_done(st).sum(axis=1) == (st["rank"] >= 0).sum(axis=1)) & (st["failed"] == 0).all(axis=1)
        st["success"] = success.astype(np.int64)
        ended = bye | (st["turn"] >= self.max_turns)
        return user_acts, atoms, ended, success
