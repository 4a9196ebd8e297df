"""Diagnostics: the true pseudometric (Eq. 3 with noise), Spearman, class separation, OOD, Eq. 8."""

import json

import numpy as np
import pytest
from scipy.optimize import linprog
from scipy.stats import rankdata, spearmanr

from merlion_core.diagnostics import (
    DiagnosticsResult,
    _average_ranks,
    class_separation,
    diagnose,
    lipschitz_check,
    ood_fraction,
    pairwise_l1,
    pseudometric,
    reward_distance,
    sample_actions,
    sample_states,
    spearman_per_state,
    true_pseudometric,
    w2_shared_mixture_bound,
)
from merlion_core.envs import make_model

EPS = 0.1
TRAVEL = 0.045 * 4  # substep_length * n_substeps: free-space travel of a unit displacement
# Positions where every one of the 64 actions of the 6-actuator maze moves freely (no wall,
# border, goal or reward region within 0.18); the brief's (0.8, 0.15) is not: moving down
# by 0.156 crosses y = 0 there.
OPEN_POSITIONS = [(0.8, 0.2), (0.75, 0.2), (0.7, 0.2), (0.2, 0.55), (0.25, 0.7), (0.3, 0.65), (0.8, 0.7), (0.2, 0.8)]


@pytest.fixture(scope="module")
def small_maze():
    return make_model("maze", {"n_actuators": 6})


def _states(positions, flag=0.0):
    return np.array([(x, y, flag) for x, y in positions], dtype=np.float32)


def _assert_open(model, states):
    """Every action moves the full free-space distance and earns the same reward."""
    a = np.arange(model.n_actions)
    for s in states:
        res = model.true_step(np.repeat(s[None], len(a), 0), a)
        np.testing.assert_allclose(res.next_states[:, :2], s[:2] + TRAVEL * model.displacements, atol=1e-6)
        assert np.ptp(res.rewards) == 0 and not res.terminated.any()


def _exact_w2(x_i, x_j, shared, eps):
    """Exact W2 between (1-eps) delta(x_i) + eps U(shared) and the same with x_j (an LP)."""
    atoms = np.vstack([x_i, x_j, shared])
    n = len(atoms)
    p = np.r_[1 - eps, 0.0, np.full(len(shared), eps / len(shared))]
    q = np.r_[0.0, 1 - eps, np.full(len(shared), eps / len(shared))]
    cost = ((atoms[:, None] - atoms[None]) ** 2).sum(-1).ravel()
    a_eq = np.vstack([np.kron(np.eye(n), np.ones(n)), np.kron(np.ones(n), np.eye(n))])
    res = linprog(cost, A_eq=a_eq, b_eq=np.r_[p, q], bounds=(0, None), method="highs")
    return np.sqrt(res.fun)


# ---------------------------------------------------------------- equation functions
def test_equation_functions_hand_values():
    w2 = w2_shared_mixture_bound(np.array([0.0, 0.0]), np.array([3.0, 4.0]), EPS)
    assert w2 == pytest.approx(np.sqrt(0.9) * 5)
    r = reward_distance(np.float64(1.0), np.float64(-1.0), EPS)
    assert r == pytest.approx(0.9 * 2)
    assert pseudometric(r, w2, 0.5) == pytest.approx(1.8 + 0.5 * np.sqrt(0.9) * 5)
    # no noise: plain Euclidean distance and plain reward gap; broadcasting over leading axes
    pts = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    plain = w2_shared_mixture_bound(pts[:, None], pts[None], 0.0)
    np.testing.assert_allclose(plain, [[0, 5, 10], [5, 0, 5], [10, 5, 0]])


def test_w2_bound_is_an_upper_bound_tight_without_shortcuts():
    # shared atoms only at the two next states themselves: nothing to shortcut, bound is exact
    x_i, x_j = np.array([0.0, 0.0]), np.array([1.0, 0.0])
    exact = _exact_w2(x_i, x_j, np.vstack([x_i, x_j]), 0.5)
    assert exact == pytest.approx(float(w2_shared_mixture_bound(x_i, x_j, 0.5)), rel=1e-6)
    # a shared atom half-way lets mass hop in two short moves: the exact W2 is strictly smaller
    shared = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    x_j = np.array([2.0, 0.0])
    exact = _exact_w2(x_i, x_j, shared, 0.5)
    bound = float(w2_shared_mixture_bound(x_i, x_j, 0.5))
    assert exact < bound - 1e-3
    # and it never undercuts the exact value on random clouds
    rng = np.random.default_rng(3)
    cloud = rng.normal(size=(6, 2))
    for i, j in [(0, 1), (2, 5), (3, 4)]:
        bound = float(w2_shared_mixture_bound(cloud[i], cloud[j], EPS))
        assert _exact_w2(cloud[i], cloud[j], cloud, EPS) <= bound + 1e-7


# ---------------------------------------------------------------- the true pseudometric
def test_true_pseudometric_in_open_space(small_maze):
    gamma = 0.9
    states = _states([(0.8, 0.2)])
    _assert_open(small_maze, states)
    d = true_pseudometric(small_maze, states, gamma=gamma)
    assert d.shape == (1, 64, 64) and d.dtype == np.float32
    disp = small_maze.displacements
    expected = gamma * np.sqrt(1 - EPS) * TRAVEL * np.linalg.norm(disp[:, None] - disp[None], axis=-1)
    np.testing.assert_allclose(d[0], expected, atol=2e-6)
    same = small_maze.action_classes[:, None] == small_maze.action_classes[None]
    assert np.abs(d[0][same]).max() < 1e-6
    assert (d[0][~same] > 1e-3).all()
    # a subset of actions gives the matching sub-block
    acts = np.array([3, 7, 40, 63])
    sub = true_pseudometric(small_maze, states, acts, gamma)
    np.testing.assert_allclose(sub[0], d[0][np.ix_(acts, acts)])


@pytest.mark.parametrize("env, overrides", [("maze", {"n_actuators": 6}), ("multistep-maze", None)])
def test_true_pseudometric_is_a_pseudometric(env, overrides):
    model = make_model(env, overrides)
    rng = np.random.default_rng(0)
    # near the goal, a wall corner, the bonus region (flag 0 and 1), the penalty band, a border
    states = _states([(0.27, 0.40), (0.58, 0.82), (0.85, 0.36), (0.5, 0.85), (0.02, 0.02)])
    states = np.vstack([states, _states([(0.85, 0.36)], flag=1.0)])
    acts = sample_actions(model.n_actions, 48, rng)
    d = true_pseudometric(model, states, acts, gamma=0.99).astype(np.float64)
    np.testing.assert_array_equal(d, d.transpose(0, 2, 1))
    assert np.all(np.diagonal(d, axis1=1, axis2=2) == 0) and (d >= 0).all()
    triangle = d[:, :, None, :] <= d[:, :, :, None] + d[:, None, :, :] + 1e-5  # d_ik <= d_ij + d_jk
    assert triangle.all()
    # each entry is 0.9 |r_i - r_j| + gamma sqrt(0.9) ||s'_i - s'_j|| from the raw true_step
    b, k = len(states), len(acts)
    step = model.true_step(np.repeat(states, k, 0), np.tile(acts, b))
    nxt = step.next_states.reshape(b, k, -1).astype(np.float64)
    rew = step.rewards.reshape(b, k).astype(np.float64)
    manual = 0.9 * np.abs(rew[:, :, None] - rew[:, None]) + 0.99 * np.sqrt(0.9) * np.linalg.norm(
        nxt[:, :, None] - nxt[:, None], axis=-1
    )
    np.testing.assert_allclose(d, manual, rtol=1e-5, atol=1e-5)
    assert np.ptp(rew) > 1.0  # rewards really differ somewhere, so the reward term is exercised


def test_true_pseudometric_rejects_bad_input(small_maze):
    with pytest.raises(ValueError, match="actions"):
        true_pseudometric(small_maze, _states([(0.8, 0.2)]), np.array([0, 64]))
    with pytest.raises(ValueError, match="states"):
        true_pseudometric(small_maze, np.zeros((2, 2), np.float32))


# ---------------------------------------------------------------- comparing representations
def test_pairwise_l1_by_hand():
    e = np.array([[[0.0, 0.0], [1.0, 2.0], [-1.0, 1.0]]], dtype=np.float32)
    d = pairwise_l1(e)
    assert d.dtype == np.float32
    np.testing.assert_array_equal(d[0], [[0, 3, 2], [3, 0, 3], [2, 3, 0]])
    assert pairwise_l1(e.astype(np.int64)).dtype == np.float64


def test_average_ranks_match_scipy():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, size=(4, 50)).astype(np.float64)  # many ties
    np.testing.assert_array_equal(_average_ranks(x), rankdata(x, axis=1))
    x = rng.normal(size=(3, 40)).astype(np.float32)
    np.testing.assert_array_equal(_average_ranks(x), rankdata(x, axis=1))


def test_spearman_per_state():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(3, 20, 2))
    true = np.linalg.norm(pts[:, :, None] - pts[:, None], axis=-1)
    np.testing.assert_allclose(spearman_per_state(np.exp(true) + 3.0 * true, true), 1.0)
    np.testing.assert_allclose(spearman_per_state(-(true**3), true), -1.0)
    noise = rng.random((3, 64, 64))
    assert np.abs(spearman_per_state(noise, rng.random((3, 64, 64)))).max() < 0.1
    # against scipy on one state with ties on both sides
    learned = np.round(noise[:, :20, :20] * 4)
    tied_true = np.round(true * 2)
    iu = np.triu_indices(20, k=1)
    expected = spearmanr(learned[1][iu], tied_true[1][iu]).statistic
    assert spearman_per_state(learned, tied_true)[1] == pytest.approx(expected, abs=1e-12)
    # constant side -> NaN for that state only
    flat = learned.copy()
    flat[2] = 5.0
    rho = spearman_per_state(flat, tied_true)
    assert np.isnan(rho[2]) and np.isfinite(rho[:2]).all()


def test_class_separation():
    classes = np.array([0, 0, 1, 1])
    e = np.array([[[0.0], [0.0], [1.0], [3.0]]])
    # same-class pairs: 0 and 2 (mean 1); different-class pairs: 1, 3, 1, 3 (mean 2)
    assert class_separation(pairwise_l1(e), classes) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    many = rng.integers(0, 6, size=40)
    centres = rng.normal(size=(6, 4))
    collapsed = np.broadcast_to(centres[many], (3, 40, 4))
    assert class_separation(pairwise_l1(collapsed), many) == 0.0
    assert class_separation(pairwise_l1(rng.normal(size=(8, 40, 4))), many) == pytest.approx(1.0, abs=0.05)
    assert np.isnan(class_separation(pairwise_l1(e), np.array([0, 1, 2, 3])))  # no same-class pair


def test_ood_fraction():
    rel = np.array([[1.0, 0.5, 0.1, 0.0], [0.3, 1.0, 0.2, 0.05]])
    assert ood_fraction(rel, 0.2) == pytest.approx(4 / 8)  # 0.2 itself counts (<= tau)
    assert ood_fraction(rel, 0.0) == pytest.approx(1 / 8)
    with pytest.raises(ValueError, match="max G"):
        ood_fraction(rel * 3.0, 0.2)


def test_lipschitz_check_by_hand():
    gamma = 0.5  # bound: |dQ| <= 2 d
    d = np.array([[[0, 1, 2, 0], [1, 0, 0.5, 1], [2, 0.5, 0, 2], [0, 1, 2, 0]]], dtype=np.float64)
    q = np.array([[0.0, 1.0, 5.0, 0.0]])
    # pairs: (0,1) 1 <= 2 r=.5; (0,2) 5 > 4 r=1.25; (0,3) d=0 gap 0 ok; (1,2) 4 > 1 r=4;
    #        (1,3) 1 <= 2 r=.5; (2,3) 5 > 4 r=1.25
    res = lipschitz_check(q, d, gamma)
    assert res.n_pairs == 6
    assert res.violation_fraction == pytest.approx(3 / 6)
    assert res.max_ratio == pytest.approx(4.0)
    # Q that is (1/(1-gamma)) times a 0.5-Lipschitz function of an L1 embedding never violates
    rng = np.random.default_rng(0)
    e = rng.normal(size=(5, 30, 3))
    q = (1 / (1 - 0.9)) * 0.5 * e.sum(-1)
    res = lipschitz_check(q, pairwise_l1(e), 0.9)
    assert res.violation_fraction == 0.0 and 0.3 < res.max_ratio <= 0.5 + 1e-12


# ---------------------------------------------------------------- sampling and diagnose
def test_sample_states_and_actions():
    rng = np.random.default_rng(0)
    obs = np.vstack([np.zeros((50, 3)), np.arange(30).reshape(10, 3)]).astype(np.float32)  # 11 distinct
    s = sample_states(obs, 5, rng)
    assert s.shape == (5, 3) and s.dtype == np.float32 and len(np.unique(s, axis=0)) == 5
    all_rows = sample_states(obs, 100, rng)
    assert len(all_rows) == 11 and len(np.unique(all_rows, axis=0)) == 11
    again = [sample_states(obs, 4, np.random.default_rng(7)) for _ in range(2)]
    np.testing.assert_array_equal(again[0], again[1])
    a = sample_actions(4096, 512, rng)
    assert a.dtype == np.int64 and len(np.unique(a)) == 512 and (np.diff(a) > 0).all() and a.max() < 4096
    np.testing.assert_array_equal(sample_actions(64, 512, rng), np.arange(64))


def test_diagnose_end_to_end(small_maze):
    states = _states(OPEN_POSITIONS)
    _assert_open(small_maze, states)

    def true_displacements(s, a):
        return np.broadcast_to(7.0 * small_maze.displacements[a][None], (len(s), len(a), 2)).copy()

    res = diagnose(small_maze, true_displacements, states, n_action_samples=512, rng=np.random.default_rng(0))
    assert isinstance(res, DiagnosticsResult)
    assert res.n_states == len(OPEN_POSITIONS) and res.n_actions_used == 64
    assert res.spearman_median > 0.9  # L1 of the displacement vs Euclidean W2: not quite 1
    assert res.class_separation < 0.05
    assert res.spearman_per_state.shape == (len(OPEN_POSITIONS),)
    json.dumps(res.to_dict(), allow_nan=False)

    rng = np.random.default_rng(1)

    def random_embedding(s, a):
        return rng.normal(size=(len(s), len(a), 8))

    noise = diagnose(small_maze, random_embedding, states, rng=np.random.default_rng(0))
    assert noise.spearman_median < 0.3 and noise.class_separation > 0.8

    sub = diagnose(small_maze, true_displacements, states, n_action_samples=16, rng=np.random.default_rng(0))
    assert sub.n_actions_used == 16
    with pytest.raises(ValueError, match="embed_fn"):
        diagnose(small_maze, lambda s, a: np.zeros((len(s), 2)), states, rng=np.random.default_rng(0))


def test_to_dict_maps_nan_to_none():
    res = DiagnosticsResult(float("nan"), np.array([np.nan, 0.5]), float("nan"), 2, 4)
    assert res.to_dict() == {
        "spearman_median": None,
        "spearman_per_state": [None, 0.5],
        "class_separation": None,
        "n_states": 2,
        "n_actions_used": 4,
    }


def test_chunking_does_not_change_results(small_maze, monkeypatch):
    import merlion_core.diagnostics as diagnostics

    rng = np.random.default_rng(0)
    states = _states([(0.27, 0.40), (0.8, 0.2), (0.58, 0.82)])
    learned = rng.random((3, 64, 64))
    d = true_pseudometric(small_maze, states)
    rho = spearman_per_state(learned, d)
    monkeypatch.setattr(diagnostics, "CHUNK_ELEMENTS", 1)  # one state per chunk
    np.testing.assert_array_equal(true_pseudometric(small_maze, states), d)
    np.testing.assert_array_equal(spearman_per_state(learned, d), rho)
