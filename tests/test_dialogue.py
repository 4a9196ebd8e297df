"""The dialogue env on the committed synthetic MultiWOZ-layout folder (no real data needed)."""

from __future__ import annotations

import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from dialogue_support import SYNTHETIC, SYNTHETIC_ENV, hidden, say, start, synthetic_model, user_said  # noqa: F401
from gymnasium.utils.env_checker import check_env

from merlion_core.data.collect import collect, normalised_score
from merlion_core.data.multiwoz_io import ENV_VAR, MultiWOZDataError, MultiWOZDataMissing, load_multiwoz
from merlion_core.envs import make_model
from merlion_core.envs.behaviours import make_behaviour
from merlion_core.envs.dialogue.actions import act_coverage, canonical_composite, top_composites
from merlion_core.envs.dialogue.model import DialogueEnv
from merlion_core.envs.dialogue.schema import DONTCARE, match_entities
from merlion_core.envs.rollout import rollout_episodes

RESTAURANT_PHONE = {
    "order": ["restaurant"],
    "info": {"restaurant": {"area": "centre", "food": "italian"}},
    "requests": {"restaurant": ["phone"]},
}


# ---------------------------------------------------------------- composites and the action set
def test_composites_merge_orders_and_value_indices_and_rank_by_count():
    counts = [
        ("A-Inform-Name-1;A-Inform-Addr-1", 3),
        ("A-Inform-Addr-1;A-Inform-Name-1", 2),
        ("A-Inform-Addr-1;A-Inform-Name-1;A-Inform-Name-2", 1),
        ("general-bye-none-none", 5),
        ("B-Request-Area-?", 6),
    ]
    composites, merged = top_composites(counts, 3)
    # 3 + 2 + 1 = 6 ties with B's 6: ties go by the string
    assert composites == ("A-Inform-Addr;A-Inform-Name", "B-Request-Area-?".rsplit("-", 1)[0], "general-bye-none")
    assert merged.tolist() == [6, 6, 5]
    with pytest.raises(ValueError, match="n_actions=4 but da_slot_cnt.json gives only 3"):
        top_composites(counts, 4)


def test_act_coverage_counts_turns_whose_composite_is_an_action():
    actions = ("A-Inform-Addr;A-Inform-Name", "general-bye-none")
    turns = [
        [("A", "Inform", "Name"), ("A", "Inform", "Addr"), ("A", "Inform", "Name")],  # repeat: same set
        [],  # unannotated: not covered
        [("C", "Inform", "X")],
        [("general", "bye", "none")],
    ]
    assert act_coverage(turns, actions) == (0.5, 4)
    assert canonical_composite(["general-bye-none-none", "A-Inform-Addr-2"]) == "A-Inform-Addr;general-bye-none"


def test_synthetic_action_table_and_booking_acts_follow_the_current_domain(synthetic_model):
    table = synthetic_model.actions
    assert table.n_actions == 60 and table.act_atoms.shape == (60, len(table.atoms))
    assert table.counts[table.action_of("Restaurant-Inform-Name")] == 60 + 5 + 4  # two orders, two values merged
    effects = table.per_action()
    schema = synthetic_model.schema
    people = table.action_of("Booking-Request-People")
    restaurant, police = schema.domains.index("restaurant"), schema.domains.index("police")
    asked = np.flatnonzero(effects.requests[people, restaurant])
    assert [schema.inform_slots[s] for s in asked] == [("restaurant", "people")]
    assert not effects.requests[people, police].any()
    train_book = table.action_of("Train-OfferBooked-Ref")
    assert effects.book[train_book, police, schema.domains.index("train")]  # a train booking is a train booking


# ---------------------------------------------------------------- database and goals
def test_constraint_matching_on_hand_picked_entities(synthetic_model):
    schema = synthetic_model.schema
    restaurant, train = schema.domains.index("restaurant"), schema.domains.index("train")

    def names(domain, constraints, key):
        c = np.zeros((1, schema.n_inform), dtype=np.int64)
        for slot, value in constraints.items():
            s = schema.inform_index(schema.domains[domain], slot, book=False)
            c[0, s] = DONTCARE if value == "dontcare" else schema.value_id(s, value)
        entities = load_multiwoz(str(SYNTHETIC)).db[schema.domains[domain]]
        return [entities[e][key] for e in np.flatnonzero(match_entities(schema, domain, c)[0])]

    assert names(restaurant, {"area": "centre", "food": "italian"}, "name") == ["alpha bistro"]
    assert names(restaurant, {"pricerange": "expensive"}, "name") == ["bravo house", "charlie grill"]
    assert names(restaurant, {"area": "centre", "food": "chinese"}, "name") == []
    assert len(names(restaurant, {"area": "dontcare"}, "name")) == 5
    route = {"day": "monday", "departure": "cambridge", "destination": "ely"}
    assert names(train, {**route, "leaveAt": "10:00"}, "trainID") == ["TR0002"]  # leaves at or after 10:00
    assert names(train, {**route, "arriveBy": "10:00"}, "trainID") == ["TR0001"]  # arrives by 10:00
    assert names(train, {**route, "leaveAt": "12:00"}, "trainID") == []


def test_sampled_goals_are_valid_and_satisfiable(synthetic_model):
    from merlion_core.envs.dialogue.goals import sample_goals

    schema = synthetic_model.schema
    goals = sample_goals(schema, 400, np.random.default_rng(0))
    for d in schema.tables:
        rows = np.flatnonzero(goals.rank[:, d] >= 0)
        assert match_entities(schema, d, goals.final[rows]).any(axis=1).all()  # final constraints match
    changed = (goals.initial != goals.final).any(axis=1)
    assert 0.05 < changed.mean() < 0.6  # some goals must change a constraint after "no offer"
    in_goal = goals.rank[:, schema.request_domain] >= 0
    assert not (goals.requests & ~in_goal).any()  # requests only in goal domains
    wants = (goals.requests.astype(int) @ np.eye(7, dtype=int)[schema.request_domain]) > 0
    assert ((wants | goals.has_book) == (goals.rank >= 0)).all()  # every goal domain asks or books


# ---------------------------------------------------------------- the simulator's reactions
def test_a_request_gets_answered_and_the_dialogue_ends_in_success(synthetic_model):
    m = synthetic_model
    states = start(m, [RESTAURANT_PHONE])
    assert user_said(m, states) == {"inform restaurant-area", "inform restaurant-food", "request restaurant-phone"}
    done = say(m, states, "Restaurant-Inform-Name;Restaurant-Inform-Phone")
    assert user_said(m, done.next_states) == {"bye"}
    assert done.terminated[0] and done.successes[0] and done.rewards[0] == pytest.approx(-1 + 40)
    # telling the address instead leaves the phone unanswered: the user asks again
    again = say(m, states, "Restaurant-Inform-Addr;Restaurant-Inform-Name")
    assert user_said(m, again.next_states) == {"request restaurant-phone"}
    assert not again.terminated[0] and again.rewards[0] == -1
    assert hidden(m, again.next_states)["repeats"][0, m.schema.domains.index("restaurant")] == 1


def test_no_offer_makes_the_user_change_or_drop_a_constraint(synthetic_model):
    m = synthetic_model
    restaurant = m.schema.domains.index("restaurant")
    changing = {
        "order": ["restaurant"],
        "info": {"restaurant": {"area": "centre", "food": "chinese"}},
        "final": {"restaurant": {"food": "italian"}},
        "requests": {"restaurant": ["address"]},
    }
    dropping = {**changing, "final": {"restaurant": {"area": "dontcare"}}}
    states = start(m, [changing, dropping])
    assert (hidden(m, states)["count"][:, restaurant] == 0).all()  # centre + chinese: nothing
    after = say(m, states, "Restaurant-NoOffer-none").next_states
    assert user_said(m, after, 0) == {"inform restaurant-food"}
    assert user_said(m, after, 1) == {"inform restaurant-area"}
    st = hidden(m, after)
    food, area = m.schema.inform_index("restaurant", "food"), m.schema.inform_index("restaurant", "area")
    assert m.schema.value_name(food, st["told"][0, food]) == "italian" and st["told"][1, area] == DONTCARE
    assert st["count"][:, restaurant].tolist() == [1, 2]  # alpha bistro; delta diner and echo kitchen
    finished = say(m, after, "Restaurant-Inform-Addr;Restaurant-Inform-Name")
    assert finished.successes.all()
    # "no offer" while something matches changes nothing
    plain = start(m, [RESTAURANT_PHONE])
    ignored = hidden(m, say(m, plain, "Restaurant-NoOffer-none").next_states)
    assert ignored["switched"][0, restaurant] == 0
    assert (ignored["told"] == hidden(m, plain)["told"]).all()


def test_a_completed_booking_ends_the_domain(synthetic_model):
    m = synthetic_model
    spec = {
        "order": ["restaurant", "police"],
        "info": {"restaurant": {"area": "south"}},
        "book": {"restaurant": {"day": "monday", "people": "2", "time": "12:00"}},
        "requests": {"police": ["phone"]},
    }
    states = start(m, [spec])
    said = user_said(m, states)
    assert "inform restaurant-area" in said and len(said) == 3  # the area and two booking details
    # booking before all details are known: nothing is booked, the user gives the missing one
    early = say(m, states, "Booking-Book-Ref").next_states
    missing = {"inform restaurant-day", "inform restaurant-people", "inform restaurant-time"} - said
    assert user_said(m, early) == missing | {"book restaurant"}
    restaurant = m.schema.domains.index("restaurant")
    assert hidden(m, early)["booked"][0, restaurant] == 0
    booked = say(m, early, "Booking-Book-Ref")
    st = hidden(m, booked.next_states)
    assert st["booked"][0, restaurant] == 1 and not booked.terminated[0]
    assert user_said(m, booked.next_states) == {"request police-phone"}  # the next domain
    assert st["current"][0] == m.schema.domains.index("police")
    assert say(m, booked.next_states, "Police-Inform-Name;Police-Inform-Phone").successes[0]


def test_an_entity_that_violates_the_goal_answers_nothing(synthetic_model):
    m = make_model("dialogue", {**SYNTHETIC_ENV, "max_user_acts": 1})
    spec = {
        "order": ["restaurant"],
        "info": {"restaurant": {"area": "north", "food": "chinese"}},
        "requests": {"restaurant": ["phone"]},
    }
    states = start(m, [spec])
    first = user_said(m, states)
    assert first in ({"inform restaurant-area"}, {"inform restaurant-food"})
    # one constraint known: the first match (charlie grill or delta diner) breaks the other one
    result = say(m, states, "Restaurant-Inform-Name;Restaurant-Inform-Phone")
    other = {"inform restaurant-area", "inform restaurant-food"} - first
    assert user_said(m, result.next_states) == other
    assert hidden(m, result.next_states)["answered"].sum() == 0


def test_rewards_and_failure_when_the_system_never_helps():
    m = make_model("dialogue", {**SYNTHETIC_ENV, "patience": 100, "max_turns": 5})
    states = start(m, [RESTAURANT_PHONE])
    rewards = []
    for _ in range(5):
        result = say(m, states, "general-reqmore-none")
        states = result.next_states
        rewards.append(float(result.rewards[0]))
    assert rewards == [-1, -1, -1, -1, -1 - 20] and result.terminated[0] and not result.successes[0]
    # with the default patience the user gives up and says bye before the turn limit
    m = make_model("dialogue", SYNTHETIC_ENV)
    states, n = start(m, [RESTAURANT_PHONE]), 0
    while True:
        result, n = say(m, states, "general-reqmore-none"), n + 1
        states = result.next_states
        if result.terminated[0]:
            break
    assert n == 3 and user_said(m, states) == {"bye"} and result.rewards[0] == -21  # asked again twice


# ---------------------------------------------------------------- the env
def test_observation_is_a_fixed_size_vector_in_the_unit_box(synthetic_model):
    m = synthetic_model
    rng = np.random.default_rng(1)
    states = m.initial_states(64, rng)
    for _ in range(4):
        states = m.step(states, rng.integers(0, m.n_actions, 64), rng).next_states
    obs = m.observe(states)
    assert obs.shape == (64, m.obs_dim) and obs.dtype == np.float32
    assert obs.min() >= 0 and obs.max() <= 1
    pointer = obs[:, m.simulator.blocks["db_pointer"]].reshape(64, 6, -1)
    assert (pointer.sum(-1) == 1).all()  # one count bin per database domain


def test_check_env_and_gym_make_with_overrides():
    env = DialogueEnv(**SYNTHETIC_ENV)
    check_env(env, skip_render_check=True)
    made = gym.make("merlion/Dialogue-v0", **SYNTHETIC_ENV)
    obs, _ = made.reset(seed=3)
    assert made.action_space.n == 60 and obs.shape == (made.unwrapped.model.obs_dim,)


def test_same_seed_same_dialogues_and_data(synthetic_model):
    m = synthetic_model
    runs = []
    for seed in (5, 5, 6):
        rng = np.random.default_rng(seed)
        states = m.initial_states(32, rng)
        trace = [states]
        for _ in range(6):
            trace.append(m.step(trace[-1], rng.integers(0, m.n_actions, 32), rng).next_states)
        runs.append(np.stack(trace))
    assert np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], runs[2])
    a = collect("dialogue", "medium", 0.5, 1500, seed=2, n_envs=32, env_overrides=SYNTHETIC_ENV)
    b = collect("dialogue", "medium", 0.5, 1500, seed=2, n_envs=32, env_overrides=SYNTHETIC_ENV)
    c = collect("dialogue", "medium", 0.5, 1500, seed=3, n_envs=32, env_overrides=SYNTHETIC_ENV)
    for field in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert not np.array_equal(a.actions, c.actions)
    assert a.obs_dim == m.obs_dim and a.meta.env_id == "merlion/Dialogue-v0"
    assert a.meta.expert_return > a.meta.random_return


def test_behaviours_expert_beats_medium_beats_random(synthetic_model):
    m = synthetic_model
    scores = {}
    for name in ("expert", "medium", "random"):
        result = rollout_episodes(m, make_behaviour(m, name), 300, np.random.default_rng(4))
        scores[name] = result
    assert scores["expert"].successes.mean() >= 0.9
    assert scores["random"].successes.mean() <= 0.1
    expert, medium, random = (scores[k].returns.mean() for k in ("expert", "medium", "random"))
    assert expert > medium + 10 and medium > random + 10
    assert 20 < normalised_score(medium, expert, random) < 80
    # the rule policies read only the observation: they act the same on observations alone
    states = m.initial_states(50, np.random.default_rng(0))
    policy = make_behaviour(m, "expert")
    assert np.array_equal(policy(states, None), policy(m.observe(states), None))


# ---------------------------------------------------------------- missing or broken data
def test_missing_data_gives_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(MultiWOZDataMissing, match=f"set the {ENV_VAR} environment variable.*ConvLab-2"):
        make_model("dialogue")
    with pytest.raises(MultiWOZDataMissing, match="lacks goal_model.json"):
        make_model("dialogue", {"data_dir": str(tmp_path)})
    proc = subprocess.run(
        [sys.executable, "-m", "merlion_core.cli", "env-info", "dialogue"],
        capture_output=True,
        text=True,
        env={k: v for k, v in __import__("os").environ.items() if k != ENV_VAR},
    )
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and ENV_VAR in proc.stderr


def test_real_data_tests_skip_with_the_reason_when_the_data_is_absent(tmp_path):
    import os

    env = {**os.environ, ENV_VAR: str(tmp_path / "nowhere")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_dialogue_multiwoz.py"],
        capture_output=True,
        text=True,
        env=env,
        cwd=SYNTHETIC.parents[2],
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "4 skipped" in proc.stdout and "real MultiWOZ data not found" in proc.stdout and ENV_VAR in proc.stdout


def test_broken_file_is_reported_with_its_path(tmp_path):
    import shutil

    broken = tmp_path / "multiwoz"
    shutil.copytree(SYNTHETIC, broken)
    (broken / "goal_model.json").write_text(json.dumps({"ind_slot_dist": {}}))
    with pytest.raises(MultiWOZDataError, match="goal_model.json: missing key"):
        load_multiwoz(str(broken))


def test_cli_option_points_at_the_data():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "merlion_core.cli",
            "--multiwoz-dir",
            str(SYNTHETIC),
            "env-info",
            "dialogue",
            "--env-config",
            '{"n_actions": 60}',
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["n_actions"] == 60 and info["max_steps"] == 20 and info["expert_return"] > info["random_return"]
