"""merlion/Recommender-v0 on real RecSim, its numpy twin, behaviours, data and External features."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from merlion_core import diagnostics
from merlion_core.data.collect import collect, env_normalisers, normalised_score
from merlion_core.envs import make_env, make_model, resolve_env_id
from merlion_core.envs.behaviours import make_behaviour
from merlion_core.envs.recommender.behaviours import watch_rate
from merlion_core.envs.recommender.recsim_env import RecSimRecommenderEnv
from merlion_core.envs.recommender.twin import (
    BUDGET,
    BUDGET_QUALITY_RATE,
    CLUSTER_QUALITY_MEANS,
    HISTORY,
    LAST_TYPE,
    MIN_NORMALIZER,
    NO_CLICK_MASS,
    RecommenderConfig,
    RecommenderModel,
    click_probability,
    drift_interest,
)
from merlion_core.envs.rollout import rollout_episodes
from merlion_core.evaluation import evaluate
from merlion_core.representation import external

ENV_ID = "merlion/Recommender-v0"


class FixedDraws:
    """A stand-in generator that hands out the uniforms a test chose."""

    def __init__(self, *draws):
        self.draws = [np.asarray(d, dtype=np.float64) for d in draws]

    def random(self, n):
        draw = self.draws.pop(0)
        assert draw.shape == (n,)
        return draw


@pytest.fixture(scope="module")
def env():
    return RecSimRecommenderEnv()


@pytest.fixture(scope="module")
def model():
    return make_model("recommender")


def test_check_env_passes_and_spaces():
    environment = gym.make(ENV_ID)
    check_env(environment.unwrapped, skip_render_check=True)
    assert resolve_env_id("recommender") == ENV_ID
    assert isinstance(environment.unwrapped, RecSimRecommenderEnv)
    assert environment.action_space.n == 1000
    assert environment.observation_space.shape == (100,)  # 20 interests + 20 previous type + 3 x 20 history


def test_catalogue_and_constants_are_recsims(env, model):
    types, qualities, lengths = env.catalogue_arrays()
    assert np.array_equal(types, model.catalogue.types)
    assert np.array_equal(qualities, model.catalogue.qualities) and np.array_equal(lengths, model.catalogue.lengths)
    assert set(types.tolist()) == set(range(20)) and lengths.min() >= 1.0 and lengths.max() <= 10.0
    assert np.abs(qualities - CLUSTER_QUALITY_MEANS[types]).max() < 0.5  # N(type mean, 0.1)
    sampler = env.recsim._document_sampler
    assert np.array_equal(sampler.cluster_means, CLUSTER_QUALITY_MEANS)
    user = env.user_model.user_sampler.sample_user()
    assert user.time_budget == 100.0 and user.step_penalty == 0.5
    assert user.user_update_alpha == BUDGET_QUALITY_RATE
    assert (user.choice_features["no_click_mass"], user.choice_features["min_normalizer"]) == (
        NO_CLICK_MASS,
        MIN_NORMALIZER,
    )
    # another catalogue seed draws another catalogue, and the env follows its config
    other = RecSimRecommenderEnv(catalogue_seed=1, n_videos=50)
    assert np.array_equal(
        other.catalogue_arrays()[0], RecommenderModel(RecommenderConfig(catalogue_seed=1, n_videos=50)).catalogue.types
    )


def test_click_and_drift_by_hand():
    assert np.allclose(click_probability(np.array([-1.0, 0.0, 1.0, 0.5])), [0.0, 1 / 3, 1 / 2, 1.5 / 3.5])
    # x = 0.5: alpha = 0.15, step 0.15 * 0.5 = 0.075; up when flip < 0.75
    assert np.allclose(drift_interest(np.array([0.5, 0.5]), np.array([0.7, 0.8])), [0.575, 0.425])
    assert np.array_equal(drift_interest(np.array([-1.0, 1.0]), np.array([0.0, 0.99])), [-1.0, 1.0])


def test_twin_step_by_hand(model):
    cat = model.catalogue
    video = int(np.flatnonzero(cat.types == 19)[0])  # a 'nutritious' type, quality about 3
    other = int(np.flatnonzero((cat.types == 4) & (cat.lengths > 2.5))[0])
    states = model.initial_states(3, np.random.default_rng(0))
    states[:, 19], states[:, 4] = 0.5, 0.0
    states[1, LAST_TYPE] = 19  # repeats the previous type
    states[2, BUDGET] = 2.0  # less budget than the video is long
    states[0, HISTORY:] = [7, 8, 9]
    result = model.step(states, np.array([video, video, other]), FixedDraws([0.1, 0.9, 0.2], [0.9, 0.5]))
    q, length = cat.qualities[video], cat.lengths[video]
    # user 0 watches (0.1 < 3/7); the drift goes down (0.9 >= 0.75): 0.5 - 0.075
    assert result.rewards[0] == np.float32(length) and result.next_states[0, 19] == pytest.approx(0.425)
    assert result.next_states[0, BUDGET] == pytest.approx(100 - length + BUDGET_QUALITY_RATE * length * q)
    assert list(result.next_states[0, HISTORY:]) == [19, 7, 8] and result.next_states[0, LAST_TYPE] == 19
    # user 1 does not watch (0.9 >= 3/7) and repeats the type: 0.5 + 2.5
    assert result.rewards[1] == 0 and result.next_states[1, BUDGET] == pytest.approx(97.0)
    assert np.array_equal(result.next_states[1, HISTORY:], states[1, HISTORY:])
    # user 2 watches (0.2 < 1/3) only the 2 minutes it has left, then the quality refund keeps it going
    assert result.rewards[2] == pytest.approx(2.0)
    assert result.next_states[2, BUDGET] == pytest.approx(BUDGET_QUALITY_RATE * 2.0 * cat.qualities[other])
    assert list(result.terminated) == [False, False, cat.qualities[other] <= 0]


def test_observation_hides_the_budget_and_lies_in_unit_box(model):
    states = model.initial_states(2, np.random.default_rng(1))
    states[1] = states[0]
    states[1, BUDGET] = 3.0
    states[:, LAST_TYPE], states[:, HISTORY] = 5, 6
    obs = model.observe(states)
    assert obs.dtype == np.float32 and obs.shape == (2, 100)
    assert np.array_equal(obs[0], obs[1]) and obs.min() >= 0 and obs.max() <= 1
    assert np.allclose(obs[0, :20], (states[0, :20] + 1) / 2)
    assert obs[0, 20 + 5] == 1 and obs[0, 20:40].sum() == 1 and obs[0, 40 + 6] == 1 and obs[0, 40:].sum() == 1


def _recsim_action(env, model, policy, rng, step):
    """Random videos, every third step a video of the previous type (exercises the 2.5 penalty),
    or a behaviour on RecSim's hidden state."""
    if policy is not None:
        return int(policy(env.state(), rng)[0])
    last = env.user_model.user_state.last_recommended_type
    if step % 3 == 2 and last >= 0:
        return int(np.flatnonzero(model.catalogue.types == last)[0])
    return int(rng.integers(0, model.n_actions))


@pytest.mark.parametrize("behaviour", [None, "expert", "medium"])
def test_twin_reproduces_recsim_trajectories_exactly(env, model, behaviour):
    """Same seeds -> the one-user twin and RecSim agree bit for bit at every step."""
    policy = None if behaviour is None else make_behaviour(model, behaviour)
    rng = np.random.default_rng(11)
    n_steps = penalties = clicks = 0
    for episode in range(12):
        obs, info = env.reset(seed=1000 + episode)
        states = model.initial_states(1, np.random.RandomState(info["user_seed"]))
        stream = np.random.RandomState(info["numpy_seed"])
        assert np.array_equal(model.observe(states)[0], obs)
        done = False
        while not done:
            action = _recsim_action(env, model, policy, rng, n_steps)
            penalties += int(states[0, LAST_TYPE] == model.catalogue.types[action])
            obs, reward, terminated, truncated, step_info = env.step(action)
            result = model.step(states, np.array([action]), stream)
            states = result.next_states
            assert np.array_equal(env.state(), states)  # interests, budget, previous type, history
            assert np.array_equal(model.observe(states)[0], obs)
            assert result.rewards[0] == np.float32(reward) and result.terminated[0] == terminated
            clicks += step_info["clicked"]
            n_steps += 1
            done = terminated or truncated
        assert terminated and states[0, BUDGET] <= 0
    assert n_steps > 300 and clicks > 50 and (behaviour is not None or penalties > 30)


def test_env_keeps_its_own_numpy_stream():
    first, second = RecSimRecommenderEnv(), RecSimRecommenderEnv()
    np.random.seed(123)
    outside = np.random.get_state()[1].copy()
    traces = {0: [], 1: []}
    for environment in (first, second):
        environment.reset(seed=7)
    for step in range(40):  # interleaved: each env still gives the trajectory of its seed
        for index, environment in enumerate((first, second)):
            obs, reward, terminated, truncated, _ = environment.step((step * 37) % 1000)
            traces[index].append((reward, obs.sum()))
    assert traces[0] == traces[1]
    assert np.array_equal(np.random.get_state()[1], outside)  # the caller's global stream is untouched


def test_behaviours_order_and_medium_band(model):
    expert, random = env_normalisers("recommender")
    medium = rollout_episodes(model, make_behaviour(model, "medium"), 1000, np.random.default_rng(5))
    medium_score = float(normalised_score(medium.returns.mean(), expert, random))
    assert expert > random + 100 and 30 <= medium_score <= 70
    states = model.initial_states(64, np.random.default_rng(2))
    states[:, LAST_TYPE] = 19
    chosen = make_behaviour(model, "expert")(states, np.random.default_rng(0))
    rates = watch_rate(model, states)
    assert np.array_equal(rates[np.arange(64), chosen], rates.max(axis=1))
    assert not np.any(model.catalogue.types[chosen] == 19)  # the 2.5 penalty is never worth it here


def test_collect_is_deterministic_and_bounded():
    first = collect("recommender", "medium", 0.5, 4000, seed=3)
    again = collect("recommender", "medium", 0.5, 4000, seed=3)
    assert first.equals(again) and first.n_transitions == 4000 and first.obs_dim == 100
    assert first.meta.env_id == ENV_ID and first.meta.expert_return > first.meta.random_return
    assert first.observations.min() >= 0 and first.observations.max() <= 1
    assert first.terminals.sum() >= first.n_episodes - 1 and first.distinct_actions() > 900
    # the logged reward is the watch time: never above the video's length
    assert np.all(first.rewards <= make_model("recommender").catalogue.lengths[first.actions] + 1e-6)


def test_evaluate_an_observation_policy(model):
    cat = model.catalogue

    class BestQualityOtherType:
        """Observation only: the best-quality video whose type was not just recommended."""

        def act(self, obs):
            assert obs.shape[1] == 100
            previous = obs[:, 20:40].argmax(axis=1) + 100 * (obs[:, 20:40].max(axis=1) == 0)
            score = cat.qualities[None, :] - 10.0 * (cat.types[None, :] == previous[:, None])
            return np.argmax(score, axis=1)

    result = evaluate(BestQualityOtherType(), "recommender", episodes=200, seed=0)
    assert result.env_id == ENV_ID and result.normalised_score > 50  # quality is most of the expert's edge


def test_external_features_are_type_quality_length(model):
    table = external.features("recommender", 1000, normalise=False)
    cat = model.catalogue
    assert table.shape == (1000, 22)
    assert np.array_equal(table[:, :20].argmax(axis=1), cat.types) and np.array_equal(
        table[:, :20].sum(axis=1), np.ones(1000)
    )
    assert np.array_equal(table[:, 20], cat.qualities) and np.array_equal(table[:, 21], cat.lengths)
    scaled = external.build(external.ExternalConfig(env="recommender"), 1000, 100)
    assert scaled.dim == 22 and scaled.config.env == ENV_ID
    assert np.allclose(scaled.table[:, 21].numpy(), cat.lengths / cat.lengths.max())
    with pytest.raises(ValueError, match="1000 actions with its default config, not 50"):
        external.features("recommender", 50)
    # fit follows the dataset's own catalogue
    small = collect("recommender", "random", 0.0, 300, seed=0, env_overrides={"n_videos": 50, "catalogue_seed": 4})
    rep, _ = external.fit(small, external.ExternalConfig(normalise=False), device="cpu")
    small_cat = RecommenderModel(RecommenderConfig(n_videos=50, catalogue_seed=4)).catalogue
    assert np.allclose(rep.table[:, 20].numpy(), small_cat.qualities)


def test_diagnostics_refuse_a_model_with_hidden_state(model):
    with pytest.raises(ValueError, match="hidden state"):
        diagnostics.true_pseudometric(model, model.observe(model.initial_states(2)), np.arange(3))


def test_make_env_overrides_and_truncation():
    environment = make_env("recommender", n_videos=20, max_steps=3, initial_budget=1000.0)
    environment.reset(seed=0)
    outcomes = [environment.step(0)[2:4] for _ in range(3)]
    assert outcomes == [(False, False), (False, False), (False, True)]
    with pytest.raises(ValueError, match="not in Discrete"):
        environment.unwrapped.step(20)


def _recsim_episodes(policy, n_episodes, seed):
    environment, rng = RecSimRecommenderEnv(), np.random.default_rng(seed)
    returns, lengths = np.zeros(n_episodes), np.zeros(n_episodes, dtype=np.int64)
    environment.reset(seed=seed)
    for episode in range(n_episodes):
        if episode:
            environment.reset()
        done = False
        while not done:
            _, reward, terminated, truncated, _ = environment.step(int(policy(environment.state(), rng)[0]))
            returns[episode] += reward
            lengths[episode] += 1
            done = terminated or truncated
    return returns, lengths


@pytest.mark.slow
def test_batched_twin_matches_recsim_in_distribution_and_a_perturbed_twin_does_not(model):
    """1000 RecSim episodes vs 1000 twin episodes stepped side by side (another draw order):
    two-sample KS on return and length; a twin whose no-click cost is 0.6 instead of 0.5 is
    rejected by the same test."""
    from scipy.stats import ks_2samp

    policy = make_behaviour(model, "medium")
    recsim_returns, recsim_lengths = _recsim_episodes(policy, 1000, seed=0)
    twin = rollout_episodes(model, policy, 1000, np.random.default_rng(1))
    perturbed_model = make_model("recommender", {"no_click_penalty": 0.6})
    perturbed = rollout_episodes(
        perturbed_model, make_behaviour(perturbed_model, "medium"), 1000, np.random.default_rng(1)
    )
    assert ks_2samp(recsim_returns, twin.returns).pvalue > 0.05
    assert ks_2samp(recsim_lengths, twin.lengths).pvalue > 0.05
    assert ks_2samp(recsim_returns, perturbed.returns).pvalue < 1e-3
    assert ks_2samp(recsim_lengths, perturbed.lengths).pvalue < 1e-3


def test_encoders_and_agents_train_on_a_recommender_dataset(tmp_path):
    """The benchmark's path: MERLION (paper's |E| = 10, p = 0.1) and External encoders, a latent
    CQL agent on External latents, evaluation from the saved agent."""
    import torch

    from merlion_core.data.io import save_dataset
    from merlion_core.pipelines.agent import evaluate_agent, train_agent
    from merlion_core.pipelines.encoder import train_encoder
    from merlion_core.representation.artifacts import load_representation

    torch.set_num_threads(1)
    path = tmp_path / "recommender.h5"
    save_dataset(collect("recommender", "medium", 0.5, 3000, seed=0), path)
    losses = []
    train_encoder(
        path,
        "merlion",
        tmp_path / "merlion",
        overrides={"steps": 60, "log_every": 20},
        device="cpu",
        progress=lambda step, metrics: losses.append(metrics["transition_loss"]),
    )
    merlion_rep = load_representation(tmp_path / "merlion")
    assert (merlion_rep.config.dim, merlion_rep.config.p, merlion_rep.config.reward_scale) == (10, 0.1, 0.1)
    assert losses[-1] < losses[0]
    obs = torch.as_tensor(collect("recommender", "random", 0.0, 8, seed=1).observations)
    embeddings = merlion_rep.representation.embed_chunk(obs, torch.arange(1000))
    assert embeddings.shape == (8, 1000, 10) and torch.isfinite(embeddings).all()
    train_encoder(path, "external", tmp_path / "external", device="cpu")
    assert load_representation(tmp_path / "external").representation.dim == 22
    train_agent(
        path,
        "cql",
        tmp_path / "cql",
        steps=30,
        encoder_dir=tmp_path / "external",
        eval_episodes=3,
        overrides={"batch_size": 64, "hidden": (32, 32)},
        device="cpu",
    )
    summary = evaluate_agent(tmp_path / "cql", episodes=4)
    assert summary["n_episodes"] == 4 and summary["env_id"] == ENV_ID
