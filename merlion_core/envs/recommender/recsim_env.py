"""``merlion/Recommender-v0``: Google RecSim's interest_evolution scenario with the paper's changes.

The simulation is RecSim's own: ``SingleUserEnvironment`` with a slate of one, the
``MultinomialProportionalChoiceModel``, ``IEvResponse``, ``IEvVideo`` documents and
``clicked_watchtime_reward``. Subclassed where the paper differs (A.4):

- :class:`PaperVideoSampler` (a ``UtilityModelVideoSampler``): a catalogue of ``n_videos``
  drawn once, when the env is built, from RandomState(catalogue_seed); each video gets RecSim's
  type and quality plus its own length (twin.sample_video); documents are never resampled.
- :class:`PaperUserSampler` (a ``UtilityModelUserSampler``): initial time budget 100, not 200.
- :class:`PaperUserState` (an ``IEvUserState``): also holds the previous recommendation's type
  and the watched-types history, and its observation is twin.encode_observation's vector.
- :class:`PaperUserModel` (an ``IEvUserModel``): after RecSim's update, 2.5 more budget is
  spent when two consecutive recommendations share a type; the history is updated.

Random streams: the user sampler draws interests from its own RandomState; RecSim draws clicks
and interest drift from numpy's global generator. On every reset the env draws two seeds from
its Gymnasium ``np_random`` (reported in the reset info) for these two streams. The global
generator's state is swapped in around each RecSim call and swapped back out afterwards, so
the env is reproducible from ``reset(seed=)`` and code outside it keeps its own global stream.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np

from merlion_core.config import from_dict, to_dict
from merlion_core.envs.recommender.twin import (
    BUDGET,
    HISTORY,
    LAST_TYPE,
    N_TYPES,
    RecommenderConfig,
    catalogue_order,
    encode_observation,
    sample_video,
)

try:
    with contextlib.redirect_stderr(io.StringIO()):  # gym 0.26's import notice about numpy 2: RecSim
        from recsim import (
            choice_model,  # uses gym only for spaces, which this env never builds
        )
        from recsim.environments import interest_evolution as ie
        from recsim.simulator import environment
except ImportError as error:  # pragma: no cover - exercised only without the package
    raise ImportError(
        f"merlion/Recommender-v0 needs RecSim: pip install recsim-no-tf==0.2.3 six gym==0.26.2 ({error})"
    ) from error


class PaperVideoSampler(ie.UtilityModelVideoSampler):
    """RecSim's utility-model videos (type ~ randint(20), quality ~ N(type mean, 0.1)) plus a
    length per video."""

    def __init__(self, config: RecommenderConfig) -> None:
        super().__init__(doc_ctor=ie.IEvVideo, seed=config.catalogue_seed)
        self._config = config

    def sample_document(self) -> ie.IEvVideo:
        video_type, quality, length = sample_video(self._rng, self.cluster_means, self._config)
        features = np.zeros(self._num_clusters)
        features[video_type] = 1.0
        video = ie.IEvVideo(self._doc_count, features, cluster_id=video_type, video_length=length, quality=quality)
        self._doc_count += 1
        return video


class PaperUserState(ie.IEvUserState):
    """An interest_evolution user that also remembers what it was shown and what it watched."""

    def __init__(self, user_interests: np.ndarray, **features: Any) -> None:
        super().__init__(user_interests, **features)
        self.history_length = 0
        self.last_recommended_type = -1
        self.viewed_types: list[int] = []

    def create_observation(self) -> np.ndarray:
        """f32[40 + 20 H]: interests, previous type, watched-types history (twin.encode_observation)."""
        history = (self.viewed_types + [-1] * self.history_length)[: self.history_length]
        return encode_observation(
            self.user_interests[None, :], np.array([self.last_recommended_type]), np.array([history])
        )[0]


class PaperUserSampler(ie.UtilityModelUserSampler):
    """RecSim's utility-model user (interests ~ U(-1, 1)^20) with the paper's budget."""

    def __init__(self, config: RecommenderConfig) -> None:
        super().__init__(user_ctor=PaperUserState, seed=0)
        self._config = config

    def reseed(self, seed: int) -> None:
        self._seed = int(seed)
        self.reset_sampler()

    def sample_user(self) -> PaperUserState:
        user = super().sample_user()
        user.time_budget = self._config.initial_budget
        user.step_penalty = self._config.no_click_penalty
        user.history_length = self._config.history_length
        return user


class PaperUserModel(ie.IEvUserModel):
    """RecSim's interest_evolution user model plus the same-type penalty and the viewed history."""

    def __init__(self, config: RecommenderConfig) -> None:
        super().__init__(
            1,
            choice_model_ctor=choice_model.MultinomialProportionalChoiceModel,
            response_model_ctor=ie.IEvResponse,
            user_state_ctor=PaperUserState,
        )
        self._config = config
        self._user_sampler = PaperUserSampler(config)
        self._user_state = self._user_sampler.sample_user()

    @property
    def user_sampler(self) -> PaperUserSampler:
        return self._user_sampler

    @property
    def user_state(self) -> PaperUserState:
        return self._user_state

    def update_state(self, slate_documents: list, responses: list) -> None:
        super().update_state(slate_documents, responses)
        user, video, response = self._user_state, slate_documents[0], responses[0]
        if video.cluster_id == user.last_recommended_type:
            user.time_budget -= self._config.same_type_penalty
        user.last_recommended_type = int(video.cluster_id)
        if response.clicked and user.history_length:
            user.viewed_types = [int(video.cluster_id)] + user.viewed_types[: user.history_length - 1]


@contextlib.contextmanager
def global_numpy_stream(stream: np.random.RandomState) -> Iterator[None]:
    """Let numpy's global generator (which RecSim draws from) run on ``stream`` for a while."""
    outside = np.random.get_state()
    np.random.set_state(stream.get_state())
    try:
        yield
    finally:
        stream.set_state(np.random.get_state())
        np.random.set_state(outside)


class RecSimRecommenderEnv(gym.Env):
    """Gymnasium env over RecSim (both spaces in ``__init__``, ``reset(seed=)``, 5-tuple ``step``).

    Action i recommends catalogue video i. Reward = watch time of the recommended video (0 when
    not watched). Terminates when the hidden budget is <= 0; truncates after ``max_steps``.
    Keyword overrides (``gymnasium.make(id, n_videos=50)``) change the default config."""

    metadata: dict[str, Any] = {"render_modes": []}  # gym.Env declares it an instance variable

    def __init__(self, config: RecommenderConfig | None = None, **overrides: Any) -> None:
        base = config or RecommenderConfig()
        self.config = from_dict(RecommenderConfig, {**to_dict(base), **overrides}) if overrides else base
        if catalogue_order(self.config) != "recsim":
            raise ValueError(
                f"RecSimRecommenderEnv: RecSim draws its catalogue one video at a time; n_videos "
                f"{self.config.n_videos} with catalogue_order {self.config.catalogue_order!r} is the twin's "
                "vectorised catalogue (use merlion/Recommender-v0)"
            )
        self.user_model = PaperUserModel(self.config)
        self.recsim = environment.SingleUserEnvironment(
            self.user_model, PaperVideoSampler(self.config), self.config.n_videos, 1, resample_documents=False
        )
        obs_dim = 2 * N_TYPES + N_TYPES * self.config.history_length
        self.action_space = gym.spaces.Discrete(self.config.n_videos)
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(obs_dim,), dtype=np.float32)
        self._numpy_stream = np.random.RandomState(0)
        self._t = 0

    def catalogue_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(types, qualities, lengths) of RecSim's candidate set, in action order."""
        videos = self.recsim.candidate_set.get_documents(range(self.config.n_videos))
        return (
            np.array([v.cluster_id for v in videos], dtype=np.int64),
            np.array([v.quality for v in videos]),
            np.array([v.video_length for v in videos]),
        )

    def state(self) -> np.ndarray:
        """float64 [1, 22 + H]: the user's full state (hidden budget included) in the twin's layout,
        for the behaviour policies, which read the hidden state."""
        user = self.user_model.user_state
        state = np.full((1, HISTORY + self.config.history_length), -1.0)
        state[0, :N_TYPES] = user.user_interests
        state[0, BUDGET] = user.time_budget
        state[0, LAST_TYPE] = user.last_recommended_type
        state[0, HISTORY : HISTORY + len(user.viewed_types)] = user.viewed_types
        return state

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        user_seed, numpy_seed = (int(s) for s in self.np_random.integers(0, 2**32, size=2))
        self.user_model.user_sampler.reseed(user_seed)
        self._numpy_stream = np.random.RandomState(numpy_seed)
        with global_numpy_stream(self._numpy_stream):
            user_obs, _ = self.recsim.reset()
        self._t = 0
        return user_obs, {"user_seed": user_seed, "numpy_seed": numpy_seed}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"RecSimRecommenderEnv.step: action {action!r} not in Discrete({self.config.n_videos})")
        with global_numpy_stream(self._numpy_stream):
            user_obs, _, responses, done = self.recsim.step([int(action)])
        self._t += 1
        terminated = bool(done)
        truncated = (not terminated) and self._t >= self.config.max_steps
        reward = float(ie.clicked_watchtime_reward(responses))
        return user_obs, reward, terminated, truncated, {"clicked": bool(responses[0].clicked)}
