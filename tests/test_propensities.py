"""Behaviour probabilities: each behaviour's ``probability`` against its own ``act``, and the
propensities the collector records."""

from __future__ import annotations

import numpy as np
import pytest
from dialogue_support import SYNTHETIC_ENV

from merlion_core.data.collect import collect
from merlion_core.envs import make_model
from merlion_core.envs.behaviours import make_behaviour
from merlion_core.envs.model import Behaviour
from merlion_core.envs.recommender import behaviours as rec

DRAWS = 20_000
SMALL_MAZE = {"action_noise": 0.0}


def some_states(model, k: int, seed: int = 0) -> np.ndarray:
    """k hidden states reached by a few random steps from the start (a spread of situations)."""
    rng = np.random.default_rng(seed)
    states = model.initial_states(k, rng)
    for _ in range(3):
        result = model.step(states, rng.integers(0, model.n_actions, size=k), rng)
        states = np.where(result.terminated[:, None], states, result.next_states)
    return states


def all_actions(behaviour, state: np.ndarray, n_actions: int) -> np.ndarray:
    """float64 [A]: the behaviour's probability of every action id at one state."""
    return behaviour.probability(np.repeat(state[None], n_actions, axis=0), np.arange(n_actions))


def draw_counts(behaviour, state: np.ndarray, n_actions: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(counts of DRAWS actions drawn by ``act`` at one state, ``probability`` of every action there)."""
    drawn = behaviour(np.repeat(state[None], DRAWS, axis=0), np.random.default_rng(seed))
    p = all_actions(behaviour, state, n_actions)
    counts = np.bincount(drawn, minlength=n_actions).astype(np.float64)
    assert np.all(counts[p == 0] == 0), "act drew an action whose probability is 0"
    return counts, p


def chi_square(obs: np.ndarray, exp: np.ndarray) -> tuple[float, int]:
    keep = exp > 0
    return float(np.sum((obs[keep] - exp[keep]) ** 2 / exp[keep])), int(keep.sum()) - 1


def fine_cells(counts: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One cell per action expected at least 5 times, the rest pooled."""
    expected = DRAWS * p
    big = expected >= 5
    return np.append(counts[big], counts[~big].sum()), np.append(expected[big], expected[~big].sum())


def coarse_cells(counts: np.ndarray, p: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Actions in order of probability, cut into cells of about equal expected mass (sensitive to
    a probability that is off by a little for many actions at once)."""
    order = np.argsort(-p, kind="stable")
    cell = np.minimum((np.cumsum(p[order]) - p[order] / 2) * bins, bins - 1).astype(np.int64)
    return np.bincount(cell, counts[order], bins), DRAWS * np.bincount(cell, p[order], bins)


def within_chance(stat: float, dof: int) -> bool:
    """A chi-square statistic below its mean + 6 sd (+ slack for tiny dof): never exceeded by chance here."""
    return stat <= dof + 6 * np.sqrt(2 * max(dof, 1)) + 5


def assert_matches_act(behaviour, states: np.ndarray, n_actions: int) -> None:
    for i, state in enumerate(states):
        counts, p = draw_counts(behaviour, state, n_actions, seed=100 + i)
        assert p.dtype == np.float64 and p.min() >= 0
        assert p.sum() == pytest.approx(1.0, abs=1e-9)
        for cells in (fine_cells, coarse_cells):
            stat, dof = chi_square(*cells(counts, p))
            assert within_chance(stat, dof), (i, cells.__name__, stat, dof)


# ----------------------------------------------------------------------------- each behaviour


@pytest.mark.parametrize("name", ["medium", "expert"])
def test_maze_planner_probability_matches_its_draws(name):
    model = make_model("maze", SMALL_MAZE)
    behaviour = make_behaviour(model, name)
    states = some_states(model, 3)
    assert_matches_act(behaviour, states, model.n_actions)
    # uniform over one equivalence class: 1/size on its members, 0 elsewhere
    p = all_actions(behaviour, states[0], model.n_actions)
    support = np.flatnonzero(p)
    assert len(np.unique(model.action_classes[support])) == 1
    assert np.allclose(p[support], 1.0 / len(support))
    assert len(support) == np.count_nonzero(model.action_classes == model.action_classes[support[0]])


@pytest.mark.parametrize("name", ["medium", "expert"])
def test_multistep_plan_is_deterministic(name):
    model = make_model("multistep-maze")
    behaviour = make_behaviour(model, name)
    states = some_states(model, 4)
    plans = behaviour(states, np.random.default_rng(0))
    np.testing.assert_array_equal(behaviour.probability(states, plans), np.ones(4))
    np.testing.assert_array_equal(behaviour.probability(states, (plans + 1) % model.n_actions), np.zeros(4))
    p = all_actions(behaviour, states[0], model.n_actions)
    assert p.sum() == 1.0 and p[plans[0]] == 1.0


@pytest.mark.parametrize("env", ["maze", "recommender"])
def test_random_is_uniform(env):
    model = make_model(env)
    behaviour = make_behaviour(model, "random")
    p = all_actions(behaviour, some_states(model, 1)[0], model.n_actions)
    assert np.all(p == 1.0 / model.n_actions) and p.sum() == pytest.approx(1.0)


def test_recommender_expert_is_its_argmax():
    model = make_model("recommender")
    behaviour = make_behaviour(model, "expert")
    states = some_states(model, 5)
    best = behaviour(states, np.random.default_rng(0))
    np.testing.assert_array_equal(behaviour.probability(states, best), np.ones(5))
    for state in states[:2]:
        p = all_actions(behaviour, state, model.n_actions)
        assert p.sum() == 1.0 and np.count_nonzero(p) == 1


def test_recommender_medium_probability_matches_its_draws():
    model = make_model("recommender")
    behaviour = make_behaviour(model, "medium")
    states = some_states(model, 3)
    assert_matches_act(behaviour, states, model.n_actions)
    # and the test has the power to see a slightly wrong formula (C - 1 candidates)
    wrong = Behaviour("wrong", behaviour.act, lambda s, a: _with_candidates(model, s, a, rec.MEDIUM_CANDIDATES - 1))
    counts, p = draw_counts(wrong, states[0], model.n_actions, seed=100)
    assert not within_chance(*chi_square(*coarse_cells(counts, p)))
    # closed form: the best video is picked unless all C candidates miss it
    p = all_actions(behaviour, states[0], model.n_actions)
    best = int(np.argmax(rec.watch_rate(model, states[:1])[0]))
    assert p[best] == pytest.approx(1 - (1 - 1 / model.n_actions) ** rec.MEDIUM_CANDIDATES)
    assert p.argmax() == best


def _with_candidates(model, states, actions, c):
    saved = rec.MEDIUM_CANDIDATES
    rec.MEDIUM_CANDIDATES = c
    try:
        return rec.medium_probability(model, states, actions)
    finally:
        rec.MEDIUM_CANDIDATES = saved


def test_recommender_medium_probability_with_tied_rates(monkeypatch):
    """Tied rates: the tied videos share the chance that their rate is the best drawn."""
    model = make_model("recommender")
    n = model.n_actions
    rates = np.tile(np.repeat(np.arange(n // 4, dtype=np.float64), 4)[::-1], (2, 1))  # groups of 4 ties
    rates[1] = np.random.default_rng(1).permutation(rates[1])

    def table(model, states, candidates=None):
        rows = rates[np.asarray(states)[:, 0].astype(np.int64)]
        return rows if candidates is None else np.take_along_axis(rows, candidates, axis=1)

    monkeypatch.setattr(rec, "watch_rate", table)
    behaviour = rec.recommender_behaviour(model, "medium")
    fake_states = np.array([[0.0], [1.0]])
    for row in range(2):
        p = all_actions(behaviour, fake_states[row], n)
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
        top = np.flatnonzero(rates[row] == rates[row].max())
        c = rec.MEDIUM_CANDIDATES
        assert np.allclose(p[top], (1 - ((n - 4) / n) ** c) / 4)
        counts, _ = draw_counts(behaviour, fake_states[row], n, seed=7 + row)
        for cells in (fine_cells, coarse_cells):
            assert within_chance(*chi_square(*cells(counts, p)))


@pytest.mark.parametrize("name", ["medium", "expert"])
def test_dialogue_rule_policies_are_deterministic(name):
    model = make_model("dialogue", SYNTHETIC_ENV)
    policy = make_behaviour(model, name)
    states = some_states(model, 6)
    chosen = policy(states, np.random.default_rng(0))
    np.testing.assert_array_equal(policy.probability(states, chosen), np.ones(6))
    p = all_actions(policy, states[0], model.n_actions)
    assert p.sum() == 1.0 and p[chosen[0]] == 1.0


# ----------------------------------------------------------------------------- collection


def test_collected_propensities_are_the_mixture_at_the_logged_states():
    noise, n = 0.3, 3000
    ds = collect("maze", "medium", noise, n, seed=2, n_envs=16, env_overrides=SMALL_MAZE)
    model = make_model("maze", SMALL_MAZE)
    assert ds.has_propensities and ds.propensities.dtype == np.float32
    floor = np.float32(noise / model.n_actions)
    assert ds.propensities.min() >= floor and ds.propensities.max() <= 1
    assert np.any(ds.propensities > 0.5)  # many logged actions are the behaviour's own
    # the maze's observation is its state: recompute at the logged (s, a) pairs
    behaviour = make_behaviour(model, "medium")
    expected = (1 - noise) * behaviour.probability(ds.observations, ds.actions) + noise / model.n_actions
    np.testing.assert_allclose(ds.propensities, expected, rtol=1e-6)


def test_propensities_keep_collection_bitwise_reproducible():
    a = collect("recommender", "medium", 0.5, 1500, seed=5, n_envs=32)
    b = collect("recommender", "medium", 0.5, 1500, seed=5, n_envs=32)
    assert a.has_propensities and a.propensities.tobytes() == b.propensities.tobytes()
    assert a.content_digest() == b.content_digest()
    assert a.propensities.min() >= np.float32(0.5 / a.n_actions)


@pytest.mark.parametrize("env, overrides", [("multistep-maze", None), ("dialogue", SYNTHETIC_ENV)])
def test_every_env_records_propensities(env, overrides):
    noise = 0.5
    ds = collect(env, "expert", noise, 600, seed=1, n_envs=8, env_overrides=overrides)
    floor, top = np.float32(noise / ds.n_actions), np.float32(1 - noise + noise / ds.n_actions)
    assert ds.has_propensities and ds.propensities.min() >= floor
    # deterministic behaviours: the logged action is either the behaviour's (top) or a noise draw (floor)
    assert set(np.unique(ds.propensities)) <= {floor, top}


def test_pure_noise_and_no_noise():
    uniform = collect("maze", "expert", 1.0, 500, seed=0, n_envs=8, env_overrides=SMALL_MAZE)
    assert np.all(uniform.propensities == np.float32(1 / 4096))
    clean = collect("maze", "expert", 0.0, 500, seed=0, n_envs=8, env_overrides=SMALL_MAZE)
    model = make_model("maze", SMALL_MAZE)
    sizes = np.bincount(model.action_classes)
    np.testing.assert_allclose(clean.propensities, 1.0 / sizes[model.action_classes[clean.actions]], rtol=1e-6)


def test_behaviour_without_probability_records_none(monkeypatch):
    import dataclasses

    from merlion_core.data import collect as collect_module

    original = collect_module.make_behaviour
    monkeypatch.setattr(
        collect_module,
        "make_behaviour",
        lambda model, name: dataclasses.replace(original(model, name), probability=None),
    )
    without = collect("maze", "medium", 0.5, 400, seed=9, n_envs=8, env_overrides=SMALL_MAZE)
    monkeypatch.undo()
    recorded = collect("maze", "medium", 0.5, 400, seed=9, n_envs=8, env_overrides=SMALL_MAZE)
    assert without.propensities is None and recorded.has_propensities
    assert dataclasses.replace(recorded, propensities=None).equals(without)  # the same transitions either way
