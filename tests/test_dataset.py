"""TransitionDataset / DatasetMeta / from_arrays: validation rules, coercions, statistics."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from dataset_factory import N_ACTIONS, make_fields

from merlion_core.data import dataset as dmod
from merlion_core.data import validation as vmod  # the caps live (and are patched) there
from merlion_core.data.dataset import (
    SCHEMA_VERSION,
    DatasetError,
    DatasetMeta,
    TransitionDataset,
    from_arrays,
    validate,
)


def make(**overrides) -> TransitionDataset:
    f = make_fields()
    n_actions = overrides.pop("n_actions", N_ACTIONS)
    f.update(overrides)
    return TransitionDataset(**f, n_actions=n_actions)


# ----------------------------------------------------------------------------- statistics


def test_episode_statistics_match_hand_computation():
    f = make_fields()
    f["rewards"] = np.array([1, 1, 1, 1, 1, 2, 2, 2, 2, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], np.float32)
    ds = TransitionDataset(**f, n_actions=N_ACTIONS, meta=DatasetMeta(expert_return=10.0, random_return=2.0))
    assert ds.n_transitions == 15 and ds.obs_dim == 3 and ds.n_episodes == 3
    np.testing.assert_array_equal(ds.episode_ends, [4, 8, 14])
    assert ds.episode_ends.dtype == np.int64
    np.testing.assert_array_equal(ds.episode_lengths(), [5, 4, 6])
    returns = ds.episode_returns()
    assert returns.dtype == np.float64
    np.testing.assert_array_equal(returns, [5.0, 8.0, 3.0])
    assert ds.mean_return() == pytest.approx(16 / 3)
    # 100 * (R - 2) / (10 - 2)
    assert ds.normalised_score(6.0) == pytest.approx(50.0)
    np.testing.assert_allclose(ds.normalised_score(returns), [37.5, 75.0, 12.5])
    assert ds.normalised_score(ds.mean_return()) == pytest.approx(100 * (16 / 3 - 2) / 8)


def test_trailing_partial_episode_is_not_counted():
    f = make_fields()
    f["terminals"][14] = False  # the last 6 transitions no longer end
    ds = TransitionDataset(**f, n_actions=N_ACTIONS)
    assert ds.n_episodes == 2
    np.testing.assert_allclose(ds.episode_returns(), [f["rewards"][:5].sum(), f["rewards"][5:9].sum()], rtol=1e-6)


def test_normalised_score_needs_normalisers():
    with pytest.raises(DatasetError, match="expert_return"):
        make().normalised_score(1.0)
    ds = TransitionDataset(**make_fields(), n_actions=N_ACTIONS, meta=DatasetMeta(expert_return=1.0, random_return=1.0))
    with pytest.raises(DatasetError, match="expert_return"):
        ds.normalised_score(1.0)


def test_distinct_actions():
    f = make_fields()
    f["actions"] = np.array([0, 3, 3, 7, 0] * 3, np.int64)
    assert TransitionDataset(**f, n_actions=N_ACTIONS).distinct_actions() == 3
    assert TransitionDataset(**f, n_actions=10**9).distinct_actions() == 3


def test_valid_arrays_are_not_copied():
    f = make_fields()
    ds = from_arrays(f, N_ACTIONS)
    for name, arr in f.items():
        assert getattr(ds, name) is arr


def test_equals_and_subset():
    a, b = make(), make()
    assert a.equals(b)
    assert not a.equals(make(n_actions=17))
    assert not a.equals(dataclasses.replace(a, meta=DatasetMeta(seed=1)))
    f = make_fields()
    f["rewards"] = f["rewards"].copy()
    f["rewards"][3] += 1
    assert not a.equals(TransitionDataset(**f, n_actions=N_ACTIONS))
    sub = a.subset(np.arange(5, 15))
    assert sub.n_transitions == 10 and sub.n_episodes == 2
    np.testing.assert_array_equal(sub.actions, a.actions[5:])


# ----------------------------------------------------------------------------- validation


def _object_obs() -> np.ndarray:
    arr = np.empty((15, 3), dtype=object)
    arr[:] = 0.0
    return arr


@pytest.mark.parametrize(
    "overrides, match",
    [
        (
            {
                "observations": np.zeros((0, 3), np.float32),
                "next_observations": np.zeros((0, 3), np.float32),
                "actions": np.zeros(0, np.int64),
                "rewards": np.zeros(0, np.float32),
                "terminals": np.zeros(0, bool),
                "timeouts": np.zeros(0, bool),
            },
            r"observations: empty dataset",
        ),
        ({"observations": np.zeros(15, np.float32)}, r"observations: expected a 2-D"),
        ({"next_observations": np.zeros((15, 4), np.float32)}, r"next_observations: shape \(15, 4\) differs"),
        ({"rewards": np.zeros(14, np.float32)}, r"rewards: length 14 differs from observations length 15"),
        ({"observations": np.zeros((15, 3), np.float64)}, r"observations: dtype float64, expected float32"),
        ({"actions": np.zeros(15, np.int32)}, r"actions: dtype int32, expected int64"),
        ({"terminals": np.zeros(15, np.uint8)}, r"terminals: dtype uint8, expected bool"),
        ({"observations": _object_obs()}, r"observations: dtype object is not allowed"),
        ({"n_actions": 3.0}, r"n_actions: expected an int"),
        ({"n_actions": 1}, r"n_actions: must be >= 2"),
        ({"n_actions": True}, r"n_actions: expected an int"),
    ],
)
def test_constructor_rejects(overrides, match):
    with pytest.raises(DatasetError, match=match):
        make(**overrides)


def test_nonfinite_values_report_count_and_first_index():
    f = make_fields()
    f["observations"][7, 1] = np.nan
    f["observations"][9] = np.inf
    with pytest.raises(DatasetError, match=r"observations: 4 non-finite value\(s\).*first at index 7"):
        TransitionDataset(**f, n_actions=N_ACTIONS)
    f = make_fields()
    f["next_observations"][2, 0] = -np.inf
    with pytest.raises(DatasetError, match=r"next_observations: 1 non-finite.*index 2"):
        TransitionDataset(**f, n_actions=N_ACTIONS)
    f = make_fields()
    f["rewards"][11] = np.nan
    with pytest.raises(DatasetError, match=r"rewards: 1 non-finite.*index 11"):
        TransitionDataset(**f, n_actions=N_ACTIONS)


def test_action_range():
    f = make_fields()
    f["actions"][[3, 8]] = [16, 40]
    with pytest.raises(
        DatasetError, match=r"actions: 2 ids out of range \[0, 16\) \(first at index 3: 16\).*max id \+ 1 = 41"
    ):
        TransitionDataset(**f, n_actions=N_ACTIONS)
    f = make_fields()
    f["actions"][5] = -1
    with pytest.raises(DatasetError, match=r"actions: 1 negative ids .*index 5: -1"):
        TransitionDataset(**f, n_actions=N_ACTIONS)


def test_episode_boundaries():
    f = make_fields()
    f["terminals"][:] = False
    f["timeouts"][:] = False
    with pytest.raises(DatasetError, match="terminals: no episode boundary"):
        TransitionDataset(**f, n_actions=N_ACTIONS)
    f = make_fields()
    f["timeouts"][4] = True  # also terminal
    with pytest.raises(
        DatasetError, match=r"timeouts: 1 transition\(s\) both terminal and timeout \(first at index 4\)"
    ):
        TransitionDataset(**f, n_actions=N_ACTIONS)


def test_size_caps(monkeypatch):
    monkeypatch.setattr(vmod, "MAX_TRANSITIONS", 10)
    with pytest.raises(DatasetError, match="observations: 15 transitions exceed the cap of 10"):
        make()
    monkeypatch.setattr(vmod, "MAX_TRANSITIONS", 100)
    monkeypatch.setattr(vmod, "MAX_OBS_DIM", 2)
    with pytest.raises(DatasetError, match="observations: observation dim 3 outside"):
        make()


def test_validate_is_callable_directly():
    validate(make())


def test_messages_are_single_line():
    err = DatasetError("a\nb\r\n  c")
    assert str(err) == "a b c"


# ----------------------------------------------------------------------------- from_arrays


def test_from_arrays_coerces_safe_cases():
    f = make_fields()
    raw = dict(f)
    raw["observations"] = f["observations"].astype(np.float64)
    raw["rewards"] = f["rewards"].astype(np.float64)
    raw["actions"] = f["actions"].astype(np.float32).reshape(-1, 1)
    raw["terminals"] = f["terminals"].astype(np.uint8)
    raw["timeouts"] = f["timeouts"].astype(np.int32).reshape(-1, 1)
    ds = from_arrays(raw, N_ACTIONS)
    assert ds.equals(TransitionDataset(**f, n_actions=N_ACTIONS))
    ds = from_arrays(dict(f, actions=f["actions"].astype(np.uint16)), N_ACTIONS)
    assert ds.actions.dtype == np.int64


def test_from_arrays_infers_n_actions_only_when_allowed():
    f = make_fields()
    with pytest.raises(DatasetError, match="n_actions: not given"):
        from_arrays(f, None)
    ds = from_arrays(f, None, infer_n_actions=True)
    assert ds.n_actions == int(f["actions"].max()) + 1
    assert ds.meta.extra == {"n_actions_inferred": True}


@pytest.mark.parametrize(
    "name, value, match",
    [
        ("actions", np.full(15, 1.5), r"actions: 15 non-integral value\(s\)"),
        ("actions", np.array(["a"] * 15), r"actions: dtype <U1 is not allowed"),
        ("terminals", np.full(15, 2, np.int8), r"terminals: 15 value\(s\) not 0/1"),
        ("observations", np.full((15, 3), np.nan), r"observations: 45 non-finite"),
        ("rewards", np.array(3.0), r"rewards: expected an array with a leading \[N\] axis"),
        ("timeouts", np.zeros(12, bool), r"timeouts: length 12 differs"),
    ],
)
def test_from_arrays_rejects(name, value, match):
    with pytest.raises(DatasetError, match=match):
        from_arrays(dict(make_fields(), **{name: value}), N_ACTIONS)


def test_from_arrays_missing_field():
    f = make_fields()
    del f["next_observations"]
    with pytest.raises(DatasetError, match="next_observations: required field missing"):
        from_arrays(f, N_ACTIONS)


def test_float64_overflowing_float32_is_reported():
    f = make_fields()
    obs = f["observations"].astype(np.float64)
    obs[3, 0] = 1e300
    with pytest.raises(DatasetError, match=r"observations: 1 value\(s\) beyond the float32 range.*index 3"):
        from_arrays(dict(f, observations=obs), N_ACTIONS)


# ----------------------------------------------------------------------------- DatasetMeta


def test_meta_round_trip_and_strictness():
    meta = DatasetMeta(
        env_id="merlion/Maze-v0",
        env_config={"size": 7},
        behaviour="expert",
        noise=0.1,
        seed=3,
        expert_return=10.0,
        random_return=-2.5,
        extra={"k": [1, 2]},
    )
    assert DatasetMeta.from_dict(meta.to_dict()) == meta
    with pytest.raises(DatasetError, match="meta: unknown key"):
        DatasetMeta.from_dict({**meta.to_dict(), "colour": "red"})
    with pytest.raises(DatasetError, match="schema_version"):
        DatasetMeta.from_dict({"schema_version": SCHEMA_VERSION + 1})
    with pytest.raises(DatasetError, match="meta.seed"):
        DatasetMeta.from_dict({"seed": "three"})
    with pytest.raises(DatasetError, match="meta.noise"):
        DatasetMeta(noise=1.5)
    with pytest.raises(DatasetError, match="meta.expert_return"):
        DatasetMeta(expert_return=float("nan"))
    with pytest.raises(DatasetError, match="meta: expected a JSON object"):
        DatasetMeta.from_dict([1])


# ----------------------------------------------------------------------------- content digest


def test_content_digest_identifies_the_transitions_not_the_meta(tmp_path):
    from merlion_core.data.io import load_dataset, save_dataset

    data = make()
    digest = data.content_digest()
    assert len(digest) == 64 and digest == make().content_digest()
    # the same transitions from a file in another format, with other meta: the same digest
    save_dataset(dataclasses.replace(data, meta=DatasetMeta(env_id="somewhere/Else-v0")), tmp_path / "d.npz")
    assert load_dataset(tmp_path / "d.npz").content_digest() == digest
    # one reward, one action, the action count: each changes it
    rewards = data.rewards.copy()
    rewards[3] += 1.0
    assert make(rewards=rewards).content_digest() != digest
    actions = data.actions.copy()
    actions[0] = (actions[0] + 1) % N_ACTIONS
    assert make(actions=actions).content_digest() != digest
    assert make(n_actions=N_ACTIONS + 1).content_digest() != digest


# ----------------------------------------------------------------------------- propensities

PROBS = np.linspace(0.05, 1.0, 15).astype(np.float32)


def test_propensities_are_optional_and_kept():
    plain = make()
    assert plain.propensities is None and not plain.has_propensities
    assert "propensities" not in repr(plain) and set(plain.arrays()) == set(dmod.FIELDS)
    ds = make(propensities=PROBS)
    assert ds.has_propensities and ds.propensities is PROBS and "propensities" in repr(ds)
    assert set(ds.arrays()) == set(dmod.FIELDS)  # the six required fields, as callers expect
    assert set(ds.arrays(optional=True)) == {*dmod.FIELDS, "propensities"}
    assert dmod.OPTIONAL_FIELDS == ("propensities",) and len(dmod.FIELDS) == 6
    validate(ds)


def test_propensities_in_equals_subset_and_digest():
    ds = make(propensities=PROBS)
    assert ds.equals(make(propensities=PROBS.copy()))
    assert not ds.equals(make()) and not make().equals(ds)
    other = PROBS.copy()
    other[2] = 0.5
    assert not ds.equals(make(propensities=other))
    sub = ds.subset(np.arange(5, 15))
    np.testing.assert_array_equal(sub.propensities, PROBS[5:])
    assert make().subset(np.arange(5, 15)).propensities is None
    # the digest is the one recorded before the field existed, with or without propensities
    assert make().content_digest() == "6902fbaa6fc0407ac63bd974d396eef1e9c579fcdb742fd711ae2797ec3108ec"
    assert ds.content_digest() == make().content_digest() == make(propensities=other).content_digest()


@pytest.mark.parametrize(
    "values, match",
    [
        (
            {3: 0.0, 9: 0.0, 12: 0.0},
            r"^propensities: 3 value\(s\) are 0 \(first at index 3\); the logged action was taken, "
            r"so its probability cannot be 0$",
        ),
        ({4: 1.5}, r"^propensities: 1 value\(s\) outside \[0, 1\] \(first at index 4: 1\.5\)$"),
        ({6: -0.25, 7: 2.0}, r"^propensities: 2 value\(s\) outside \[0, 1\] \(first at index 6: -0\.25\)$"),
        ({8: np.nan}, r"^propensities: 1 non-finite value\(s\) \(NaN or inf\), first at index 8$"),
        ({1: np.inf}, r"^propensities: 1 non-finite value\(s\) \(NaN or inf\), first at index 1$"),
    ],
)
def test_propensity_values_are_checked(values, match):
    probs = PROBS.copy()
    for index, value in values.items():
        probs[index] = value
    with pytest.raises(DatasetError, match=match):
        make(propensities=probs)
    with pytest.raises(DatasetError, match=match):  # the loaders' entry point says the same
        from_arrays(dict(make_fields(), propensities=probs.astype(np.float64)), N_ACTIONS)


@pytest.mark.parametrize(
    "value, match",
    [
        (np.full(14, 0.5, np.float32), r"^propensities: length 14 differs from observations length 15$"),
        (np.full((15, 2), 0.5, np.float32), r"^propensities: expected a 1-D array \[N\], got shape \(15, 2\)$"),
        (np.full(15, 0.5, np.float64), r"^propensities: dtype float64, expected float32$"),
        ([0.5] * 15, r"^propensities: expected a numpy array or None, got list$"),
    ],
)
def test_propensity_shape_and_type_are_checked(value, match):
    with pytest.raises(DatasetError, match=match):
        make(propensities=value)


def test_from_arrays_coerces_propensities():
    f = make_fields()
    for raw in (PROBS.astype(np.float64), PROBS.reshape(-1, 1), list(PROBS)):
        ds = from_arrays(dict(f, propensities=raw), N_ACTIONS)
        assert ds.propensities.dtype == np.float32 and np.array_equal(ds.propensities, PROBS)
    assert from_arrays(dict(f, propensities=PROBS), N_ACTIONS).propensities is PROBS  # not copied
    ones = from_arrays(dict(f, propensities=np.ones(15, np.int64)), N_ACTIONS)
    assert ones.propensities.dtype == np.float32 and np.all(ones.propensities == 1)
    assert from_arrays(dict(f, propensities=None), N_ACTIONS).propensities is None
    with pytest.raises(DatasetError, match=r"^propensities: length 14 differs from observations length 15$"):
        from_arrays(dict(f, propensities=PROBS[:14]), N_ACTIONS)
    with pytest.raises(DatasetError, match=r"^propensities: dtype <U3 is not allowed"):
        from_arrays(dict(f, propensities=np.array(["0.5"] * 15)), N_ACTIONS)
    with pytest.raises(DatasetError, match=r"^propensities: 1 value\(s\) are 0 \(first at index 0\)"):
        from_arrays(dict(f, propensities=np.array([1e-60] + [0.5] * 14)), N_ACTIONS)  # underflows float32


# ----------------------------------------------------------------------------- action-count cap, dropped rows


def test_action_count_cap_refuses_given_and_inferred_n_actions():
    assert dmod.MAX_ACTIONS == 10_000_000  # a module constant of dataset.py (defined in validation.py)
    f = make_fields()
    f["actions"][3] = 10**12
    with pytest.raises(DatasetError) as info:
        from_arrays(f, None, infer_n_actions=True)
    assert str(info.value) == (
        "actions: id 1000000000000 at index 3 implies n_actions >= 1000000000001, which "
        "exceeds the action-count cap max_actions=10000000 (MAX_ACTIONS); pass "
        "max_actions=1000000000001 (or more: load_dataset(max_actions=...), --max-actions on "
        "the command line) if that many actions is intended"
    )
    ds = from_arrays(f, None, infer_n_actions=True, max_actions=10**12 + 1)  # raised: accepted
    assert ds.n_actions == 10**12 + 1
    with pytest.raises(
        DatasetError,
        match=r"^n_actions: 1000000000001 exceeds the action-count cap "
        r"max_actions=10000000 \(MAX_ACTIONS\); pass max_actions=",
    ):
        validate(ds)  # validate applies the default cap too
    validate(ds, max_actions=None)
    with pytest.raises(DatasetError, match=r"^n_actions: 40 exceeds the action-count cap max_actions=20; pass "):
        from_arrays(make_fields(), 40, max_actions=20)  # a given n_actions, far above the ids used: the cap only
    assert from_arrays(make_fields(), 10_000_000).n_actions == 10_000_000  # the cap itself is allowed
    for bad in (1, 2.5, True, "9"):
        with pytest.raises(DatasetError, match=r"^max_actions: expected an int >= 2"):
            from_arrays(make_fields(), N_ACTIONS, max_actions=bad)


def test_from_arrays_keep_checks_every_row_before_dropping():
    f = make_fields()
    keep = np.ones(15, bool)
    keep[[8, 14]] = False
    ds = from_arrays(f, N_ACTIONS, keep=keep)
    assert ds.n_transitions == 13 and np.array_equal(ds.rewards, f["rewards"][keep])
    cases = [
        ("observations", (14, 1), np.nan, r"^observations: 1 non-finite value\(s\) \(NaN or inf\), first at index 14$"),
        ("rewards", 8, np.inf, r"^rewards: 1 non-finite value\(s\) \(NaN or inf\), first at index 8$"),
        ("actions", 8, -2, r"^actions: 1 negative ids out of range \[0, 16\) \(first at index 8: -2\)$"),
        ("actions", 14, 99, r"^actions: 1 ids out of range \[0, 16\) \(first at index 14: 99\)"),
    ]
    for name, where, value, match in cases:
        arr = f[name].copy()
        arr[where] = value
        with pytest.raises(DatasetError, match=match):
            from_arrays(dict(f, **{name: arr}), N_ACTIONS, keep=keep)
    probs = np.full(15, 0.5, np.float32)
    probs[14] = 1.5
    with pytest.raises(DatasetError, match=r"^propensities: 1 value\(s\) outside \(0, 1\] \(first at index 14: 1.5\)"):
        from_arrays(dict(f, propensities=probs), N_ACTIONS, keep=keep)
    acts = f["actions"].copy()
    acts[:] = 1
    acts[14] = 9  # the only id 9 is in a dropped row: n_actions is still inferred from every row
    assert from_arrays(dict(f, actions=acts), None, infer_n_actions=True, keep=keep).n_actions == 10
    with pytest.raises(DatasetError, match=r"^observations: empty dataset: all 15 rows were dropped \(why\)$"):
        from_arrays(f, N_ACTIONS, {"extra": {"dropped_reason": "why"}}, keep=np.zeros(15, bool))
    with pytest.raises(DatasetError, match=r"^keep: expected a bool mask of shape \(15,\)"):
        from_arrays(f, N_ACTIONS, keep=np.ones(14, bool))
