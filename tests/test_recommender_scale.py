"""merlion/Recommender-v0 at catalogue scale: the vectorised catalogue, the behaviours' cell index
(answers bit for bit like the full scan), and a collection at 10^6 videos within a memory bound."""

import dataclasses
import hashlib
import tracemalloc

import numpy as np
import pytest

from merlion_core.data.collect import collect
from merlion_core.envs import make_model
from merlion_core.envs.behaviours import make_behaviour
from merlion_core.envs.recommender import behaviours as rec
from merlion_core.envs.recommender.twin import (
    BUDGET,
    CLUSTER_QUALITY_MEANS,
    LAST_TYPE,
    N_TYPES,
    QUALITY_STD,
    Catalogue,
    RecommenderConfig,
    RecommenderModel,
    catalogue_order,
    draw_catalogue,
    recsim_order_catalogue,
    sample_video,
    vectorised_catalogue,
)

MEMORY_LIMIT = 256 * 2**20
"""Peak traced allocation of a 64-user collection at 10^6 videos (one [64, 10^6] float64 array is 512 MiB)."""


def digest(*arrays):
    h = hashlib.sha256()
    for array in arrays:
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:16]


def catalogue_arrays(catalogue):
    return catalogue.types, catalogue.qualities, catalogue.lengths


def assert_same_catalogue(a, b):
    for x, y in zip(catalogue_arrays(a), catalogue_arrays(b), strict=True):
        np.testing.assert_array_equal(x, y)


def varied_states(model, n, seed):
    """Users with budgets from 0.3 to 100 (shorter than some videos, longer than all), some at
    budget <= 0, previous types from none to all 20, and a few interests at -1 (zero rates)."""
    rng = np.random.default_rng(seed)
    states = model.initial_states(n, rng)
    states[:, BUDGET] = rng.choice([100.0, 12.0, 6.0, 4.3, 2.0, 1.0], size=n) * rng.uniform(0.3, 1.0, n)
    states[: n // 16, BUDGET] = -rng.uniform(0.0, 3.0, n // 16)
    states[:, LAST_TYPE] = rng.integers(-1, N_TYPES, n)
    states[n // 16 : n // 8, :N_TYPES] = -1.0  # P(click) = 0 for every type: every rate is 0
    return states


def test_vectorised_catalogue_is_seeded_and_has_recsims_marginals():
    config = RecommenderConfig(n_videos=100_000, catalogue_order="vectorised")
    catalogue = draw_catalogue(config)
    assert_same_catalogue(catalogue, vectorised_catalogue(config))  # drawn afresh: the same arrays
    other = vectorised_catalogue(dataclasses.replace(config, catalogue_seed=1))
    assert np.mean(other.types == catalogue.types) < 0.1 and not np.array_equal(other.lengths, catalogue.lengths)
    counts = np.bincount(catalogue.types, minlength=N_TYPES)
    assert counts.sum() == 100_000 and np.abs(counts / 100_000 - 1 / N_TYPES).max() < 0.004  # sd 0.0007
    for video_type in range(N_TYPES):
        quality = catalogue.qualities[catalogue.types == video_type]
        assert abs(quality.mean() - CLUSTER_QUALITY_MEANS[video_type]) < 0.01  # sd of the mean 0.0014
        assert abs(quality.std() - QUALITY_STD) < 0.005
    assert catalogue.lengths.min() >= 1.0 and catalogue.lengths.max() <= 10.0
    assert abs(catalogue.lengths.mean() - 4.3) < 0.02 and abs(catalogue.lengths.std() - 1.0) < 0.02
    assert not catalogue.types.flags.writeable


def test_auto_order_keeps_recsims_catalogue():
    default = RecommenderConfig()
    assert catalogue_order(default) == "recsim"
    assert_same_catalogue(draw_catalogue(default), recsim_order_catalogue(default))
    rng = np.random.RandomState(0)  # RecSim's sampler: one video at a time
    videos = np.array([sample_video(rng, CLUSTER_QUALITY_MEANS, default) for _ in range(1000)])
    np.testing.assert_array_equal(draw_catalogue(default).qualities, videos[:, 1])
    # the catalogue of the code before catalogue_order existed, pinned
    assert digest(*catalogue_arrays(draw_catalogue(default))) == "5ec73b5320bd5e43"
    assert catalogue_order(RecommenderConfig(n_videos=100_000)) == "recsim"
    assert catalogue_order(RecommenderConfig(n_videos=100_001)) == "vectorised"
    vectorised = draw_catalogue(RecommenderConfig(catalogue_order="vectorised"))
    assert not np.array_equal(vectorised.types, draw_catalogue(default).types)


def test_config_errors():
    RecommenderConfig(n_videos=1_000_000)
    with pytest.raises(ValueError, match=r"n_videos: must be in \[1, 1000000\]"):
        RecommenderConfig(n_videos=1_000_001)
    with pytest.raises(ValueError, match="'recsim' allows at most 100000 videos, got n_videos=200000"):
        RecommenderConfig(n_videos=200_000, catalogue_order="recsim")
    with pytest.raises(ValueError, match="catalogue_order: one of auto, recsim, vectorised, got 'sorted'"):
        RecommenderConfig(catalogue_order="sorted")


def test_behaviours_at_1000_videos_are_unchanged():
    """Fixed-seed regression: the digest of the expert's and the medium's actions and of the
    medium's probabilities, computed with the code before the cell index existed."""
    model = make_model("recommender")
    rng = np.random.default_rng(0)
    states = model.initial_states(512, rng)
    states[:, BUDGET] = rng.uniform(0.5, 100.0, 512)
    states[:, LAST_TYPE] = rng.integers(-1, 20, 512)
    expert = make_behaviour(model, "expert")(states, None)
    medium_behaviour = make_behaviour(model, "medium")
    medium = medium_behaviour(states, np.random.default_rng(1))
    probabilities = medium_behaviour.probability(states, (np.arange(512) * 7919) % 1000)
    assert digest(expert.astype(np.int64), medium.astype(np.int64), probabilities) == "fd5874d8dda33a36"


@pytest.mark.parametrize("n_videos", [1000, 10_000])
def test_cell_index_answers_like_the_scan(n_videos):
    model = make_model("recommender", {"n_videos": n_videos})
    index = rec.catalogue_index(model.catalogue)
    assert index is not None and index.sizes.min() >= 1 and index.sizes.max() <= rec.CELL_SIZE
    covered = np.concatenate([m[:s] for m, s in zip(index.members, index.sizes, strict=True)])
    assert np.array_equal(np.sort(covered), np.arange(n_videos))  # every video in one cell
    states = varied_states(model, 600, seed=n_videos)
    actions = np.random.default_rng(3).integers(0, n_videos, 600)
    scanned = rec.expert_actions(model, states)
    np.testing.assert_array_equal(rec.expert_actions(model, states, index), scanned)
    np.testing.assert_array_equal(np.argmax(rec.watch_rate(model, states), axis=1), scanned)
    np.testing.assert_array_equal(
        rec.medium_probability(model, states, actions, index), rec.medium_probability(model, states, actions)
    )


def test_cell_index_breaks_ties_like_the_scan():
    """A catalogue whose second half repeats its first: every rate is tied; the expert takes the
    first of the best, the medium's probability shares the tie."""
    base = draw_catalogue(RecommenderConfig(n_videos=5000, catalogue_order="vectorised"))
    model = RecommenderModel(RecommenderConfig(n_videos=10_000))
    model.catalogue = Catalogue(*(np.concatenate([a, a]) for a in catalogue_arrays(base)))
    index = rec.catalogue_index(model.catalogue)
    assert index is not None
    states = varied_states(model, 300, seed=4)
    actions = np.random.default_rng(5).integers(0, 10_000, 300)
    chosen = rec.expert_actions(model, states, index)
    np.testing.assert_array_equal(chosen, rec.expert_actions(model, states))
    assert chosen[states[:, BUDGET] > 0].max() < 5000  # the first copy
    probability = rec.medium_probability(model, states, actions, index)
    np.testing.assert_array_equal(probability, rec.medium_probability(model, states, actions))
    np.testing.assert_array_equal(probability, rec.medium_probability(model, states, actions % 5000, index))


def test_medium_probability_through_the_index_sums_to_one():
    model = make_model("recommender", {"n_videos": 10_000})
    index = rec.catalogue_index(model.catalogue)
    state = varied_states(model, 64, seed=6)[40:41]
    p = rec.medium_probability(model, np.repeat(state, 10_000, axis=0), np.arange(10_000), index)
    assert p.sum() == pytest.approx(1.0, abs=1e-9)
    best = int(np.argmax(rec.watch_rate(model, state)[0]))
    assert p[best] == pytest.approx(1 - (1 - 1e-4) ** rec.MEDIUM_CANDIDATES) and p.argmax() == best


def test_behaviours_at_a_million_videos_match_the_scan():
    model = make_model("recommender", {"n_videos": 1_000_000})
    assert catalogue_order(model.config) == "vectorised" and model.n_actions == 1_000_000
    index = rec.catalogue_index(model.catalogue)
    states = varied_states(model, 16, seed=7)
    actions = np.random.default_rng(8).integers(0, 1_000_000, 16)
    np.testing.assert_array_equal(rec.expert_actions(model, states, index), rec.expert_actions(model, states))
    np.testing.assert_array_equal(
        rec.medium_probability(model, states, actions, index), rec.medium_probability(model, states, actions)
    )


def test_a_collection_at_a_million_videos_stays_within_memory():
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        data = collect(
            "recommender", "medium", 0.5, 640, seed=0, n_envs=64, env_overrides={"n_videos": 10**6, "max_steps": 10}
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_LIMIT, f"peak {peak / 2**20:.0f} MiB"
    assert data.n_actions == 10**6 and data.meta.env_config["n_videos"] == 10**6
    assert len(np.unique(data.actions)) > 600 and data.actions.min() < 10**4 and data.actions.max() > 99 * 10**4
    assert np.all(data.propensities >= 0.5 / 10**6) and np.all(data.propensities < 1e-4)
    assert data.meta.expert_return > data.meta.random_return


def test_the_real_recsim_env_refuses_a_vectorised_catalogue():
    from merlion_core.envs.recommender.recsim_env import RecSimRecommenderEnv

    with pytest.raises(ValueError, match="RecSim draws its catalogue one video at a time"):
        RecSimRecommenderEnv(n_videos=200_000)
    with pytest.raises(ValueError, match="catalogue_order 'vectorised'"):
        RecSimRecommenderEnv(n_videos=50, catalogue_order="vectorised")
    assert RecSimRecommenderEnv(n_videos=50).action_space.n == 50
