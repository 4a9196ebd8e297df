"""The recommender's vectorised numpy twin: RecSim's interest_evolution user, many users at once.

It computes exactly what the RecSim-based env (``recsim_env.py``) computes, with the same
floating-point operations, so a one-user twin driven by the same random streams reproduces
RecSim's trajectories bit for bit (tests/test_recommender.py); with a batch of users and one
``np.random.Generator`` the draw order differs, not the distribution. The catalogue is RecSim's
(one video at a time from RandomState(catalogue_seed)) up to 100,000 videos; larger catalogues
(up to 10^6, or any size with ``catalogue_order="vectorised"``) are drawn array-wise from the
same distributions: another catalogue, which the RecSim env does not reproduce.

One step, for a user with interests x (20 types), hidden time budget b and a recommended video
of type c, quality q and length L (the paper's changes to RecSim marked *):

- click with RecSim's multinomial proportional choice (slate of one): P = (x_c + 1) / (x_c + 3)
  (:func:`click_probability`), one uniform draw;
- on a click: reward = watch = min(b, L)*; x_c moves by alpha (1 - x_c), alpha = 0.3 - 0.3 |x_c|,
  up with probability (x_c + 1) / 2 (a second uniform draw, clicks only), clipped to [-1, 1];
  b <- b - watch + (0.9 / 3.4) watch q;
- no click: b <- b - 0.5;
- * b <- b - 2.5 when c equals the type of the previous recommendation;
- the episode terminates when b <= 0 (and is truncated after ``max_steps``).

State (float64 [B, 22 + H]): the 20 interests, the budget, the previous recommendation's type
(-1 before the first), the types of the last H watched videos, most recent first (-1 = empty).
Observation (float32 [B, 40 + 20 H], all in [0, 1]): (x + 1) / 2, a one-hot of the previous
recommendation's type, then H one-hot blocks of the watched-types history (zeros when empty).
The budget is hidden (the paper's "latent attribute").
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from merlion_core.envs.model import StepResult

N_TYPES = 20
"""Video types (RecSim's IEvVideo.NUM_FEATURES and IEvUserState.NUM_FEATURES)."""
CLUSTER_QUALITY_MEANS = np.concatenate(
    (np.linspace(-3.0, 0.0, int(N_TYPES * 0.7)), np.linspace(0.0, 3.0, int(N_TYPES * 0.3)))
)
"""Mean quality of each type (RecSim's UtilityModelVideoSampler: 14 'trashy' then 6 'nutritious')."""
QUALITY_STD = 0.1
"""Std of a video's quality around its type's mean (RecSim's UtilityModelVideoSampler)."""
BUDGET_QUALITY_RATE = 0.9 * (1.0 / 3.4)
"""RecSim's user_update_alpha: a watched video returns rate * watch * quality to the budget."""
NO_CLICK_MASS = 1.0
"""RecSim's no_click_mass of the multinomial proportional choice model."""
MIN_NORMALIZER = -1.0
"""RecSim's min_normalizer, subtracted from every choice score."""
BUDGET, LAST_TYPE, HISTORY = N_TYPES, N_TYPES + 1, N_TYPES + 2
"""Column of the budget, of the previous recommendation's type, first column of the history."""
MAX_VIDEOS = 1_000_000
"""Largest catalogue a config accepts."""
RECSIM_ORDER_MAX_VIDEOS = 100_000
"""Largest catalogue drawn in RecSim's one-video-at-a-time order (a Python loop at construction)."""
CATALOGUE_ORDERS = ("auto", "recsim", "vectorised")
"""Values of RecommenderConfig.catalogue_order."""


@dataclass(frozen=True)
class RecommenderConfig:
    """RecSim interest_evolution with the MERLION paper's changes (A.4; docs/datasets.md)."""

    n_videos: int = 1000
    """|A|: videos in the fixed catalogue, the action set (paper: 1000; at most 10^6)."""
    catalogue_seed: int = 0
    """Seed of the catalogue's one draw (RecSim's document-sampler RandomState; default_rng when vectorised)."""
    catalogue_order: str = "auto"
    """Catalogue draw: recsim (RecSim's order, <= 100,000 videos), vectorised, or auto (recsim up to 100,000)."""
    initial_budget: float = 100.0
    """Time budget of a new user (paper: 100; RecSim: 200)."""
    same_type_penalty: float = 2.5
    """Budget cost of recommending the previous recommendation's type again (paper: 2.5)."""
    no_click_penalty: float = 0.5
    """Budget cost of a recommendation the user does not watch (RecSim's step_penalty)."""
    length_mean: float = 4.3
    """Mean video length in minutes (RecSim's IEvVideoSampler: Normal(4.3, 1.0))."""
    length_std: float = 1.0
    """Std of the video length (RecSim's IEvVideoSampler)."""
    length_min: float = 1.0
    """Video lengths are clipped to [length_min, length_max]."""
    length_max: float = 10.0
    """Upper clip of the video length."""
    history_length: int = 3
    """H: watched types kept in the observation, most recent first."""
    max_steps: int = 500
    """Truncation after this many recommendations (the expert's longest episodes take about 150)."""

    def __post_init__(self) -> None:
        if not 1 <= self.n_videos <= MAX_VIDEOS:
            raise ValueError(f"RecommenderConfig.n_videos: must be in [1, {MAX_VIDEOS}], got {self.n_videos}")
        if self.catalogue_order not in CATALOGUE_ORDERS:
            raise ValueError(
                f"RecommenderConfig.catalogue_order: one of {', '.join(CATALOGUE_ORDERS)}, got {self.catalogue_order!r}"
            )
        if self.catalogue_order == "recsim" and self.n_videos > RECSIM_ORDER_MAX_VIDEOS:
            raise ValueError(
                f"RecommenderConfig: catalogue_order 'recsim' allows at most {RECSIM_ORDER_MAX_VIDEOS} videos, "
                f"got n_videos={self.n_videos}; use 'vectorised' or 'auto'"
            )
        if not 0 <= self.catalogue_seed < 2**32:
            raise ValueError(f"RecommenderConfig.catalogue_seed: must be in [0, 2^32), got {self.catalogue_seed}")
        if self.initial_budget <= 0:
            raise ValueError(f"RecommenderConfig.initial_budget: must be > 0, got {self.initial_budget}")
        if self.same_type_penalty < 0 or self.no_click_penalty <= 0:
            raise ValueError(
                "RecommenderConfig: same_type_penalty must be >= 0 and no_click_penalty > 0, got "
                f"{self.same_type_penalty} and {self.no_click_penalty}"
            )
        if not 0 < self.length_min <= self.length_max or self.length_std < 0:
            raise ValueError(
                "RecommenderConfig: need 0 < length_min <= length_max and length_std >= 0, got "
                f"[{self.length_min}, {self.length_max}] and {self.length_std}"
            )
        if not 0 <= self.history_length <= 50:
            raise ValueError(f"RecommenderConfig.history_length: must be in [0, 50], got {self.history_length}")
        if self.max_steps < 1:
            raise ValueError(f"RecommenderConfig.max_steps: must be >= 1, got {self.max_steps}")


@dataclass(frozen=True)
class Catalogue:
    """The fixed video catalogue: video i is action i."""

    types: np.ndarray  # int64 [A]
    qualities: np.ndarray  # float64 [A]
    lengths: np.ndarray  # float64 [A]


def sample_video(
    rng: np.random.RandomState,
    cluster_means: np.ndarray,
    config: RecommenderConfig,
) -> tuple[int, float, float]:
    """One video (type, quality, length), in RecSim's draw order (type, then quality) plus the length."""
    video_type = int(rng.randint(0, len(cluster_means)))
    quality = float(rng.normal(cluster_means[video_type], QUALITY_STD))
    length = float(np.clip(rng.normal(config.length_mean, config.length_std), config.length_min, config.length_max))
    return video_type, quality, length


def catalogue_order(config: RecommenderConfig) -> str:
    """'recsim' or 'vectorised': how ``config``'s catalogue is drawn ('auto' resolved by its size)."""
    if config.catalogue_order != "auto":
        return config.catalogue_order
    return "recsim" if config.n_videos <= RECSIM_ORDER_MAX_VIDEOS else "vectorised"


def recsim_order_catalogue(config: RecommenderConfig) -> Catalogue:
    """The catalogue RecSim's document sampler draws from RandomState(catalogue_seed), one video at
    a time (a one-off loop at construction: vectorising it would change the draw order)."""
    rng = np.random.RandomState(config.catalogue_seed)
    videos = np.array([sample_video(rng, CLUSTER_QUALITY_MEANS, config) for _ in range(config.n_videos)])
    return Catalogue(videos[:, 0].astype(np.int64), videos[:, 1].copy(), videos[:, 2].copy())


def vectorised_catalogue(config: RecommenderConfig) -> Catalogue:
    """The same distributions as RecSim's sampler (uniform type, quality ~ N(type mean, 0.1),
    clipped normal length) drawn array-wise from default_rng(catalogue_seed): types, then
    qualities, then lengths. Another catalogue than RecSim's order for the same seed."""
    rng = np.random.default_rng(config.catalogue_seed)
    types = rng.integers(0, N_TYPES, size=config.n_videos, dtype=np.int64)
    qualities = rng.normal(CLUSTER_QUALITY_MEANS[types], QUALITY_STD)
    lengths = np.clip(
        rng.normal(config.length_mean, config.length_std, size=config.n_videos), config.length_min, config.length_max
    )
    return Catalogue(types, qualities, lengths)


@functools.lru_cache(maxsize=8)
def draw_catalogue(config: RecommenderConfig) -> Catalogue:
    """The fixed catalogue of ``config`` (read-only arrays), drawn in :func:`catalogue_order`'s way."""
    if catalogue_order(config) == "recsim":
        catalogue = recsim_order_catalogue(config)
    else:
        catalogue = vectorised_catalogue(config)
    for array in (catalogue.types, catalogue.qualities, catalogue.lengths):
        array.setflags(write=False)
    return catalogue


def click_probability(interest: np.ndarray) -> np.ndarray:
    """P(click) of one recommended video: RecSim's multinomial proportional choice over
    {video, no click} with scores x_c - min_normalizer and no_click_mass - min_normalizer, i.e.
    (x_c + 1) / (x_c + 3), computed with the float operations of RecSim and numpy's
    ``random.choice`` (which re-normalises its cumulative sum) so thresholds agree bit for bit."""
    score = np.asarray(interest, dtype=np.float64) - MIN_NORMALIZER
    no_click = NO_CLICK_MASS - MIN_NORMALIZER
    total = score + no_click
    p_click, p_none = score / total, no_click / total
    return p_click / (p_click + p_none)


def drift_interest(interest: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """RecSim's interest update on a click: x +- alpha (1 - x), alpha = 0.3 - 0.3 |x|, '+' when
    flip < (x + 1) / 2, then clipped to [-1, 1]."""
    alpha = (-0.3 / 1.0) * np.abs(interest) + 0.3
    update = alpha * (1.0 - interest)
    moved = np.where(flip < (interest + 1.0) / 2, interest + update, interest - update)
    return np.clip(moved, -1.0, 1.0)


def encode_observation(interests: np.ndarray, last_type: np.ndarray, history: np.ndarray) -> np.ndarray:
    """f32[B, 40 + 20 H]: (x + 1) / 2, one-hot previous type, H one-hot watched types (-1 = zeros)."""
    n = interests.shape[0]
    codes = np.concatenate([np.asarray(last_type).reshape(n, 1), np.asarray(history).reshape(n, -1)], axis=1)
    codes = codes.astype(np.int64)
    one_hot = (codes[:, :, None] == np.arange(N_TYPES)[None, None, :]).reshape(n, -1)
    return np.concatenate([(np.asarray(interests) + 1.0) / 2, one_hot], axis=1).astype(np.float32)


class RecommenderModel:
    """The vectorised twin of ``merlion/Recommender-v0`` (numpy in, numpy out; see the module doc)."""

    has_task_success = False
    """An episode ends when the user's budget runs out: a termination, not a task success."""

    def __init__(self, config: RecommenderConfig = RecommenderConfig()) -> None:
        self.config = config
        self.catalogue = draw_catalogue(config)
        self.n_actions = config.n_videos
        self.max_steps = config.max_steps
        self.state_dim = HISTORY + config.history_length
        self.obs_dim = 2 * N_TYPES + N_TYPES * config.history_length

    def initial_states(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """float64 [n, 22 + H]: new users, interests ~ U(-1, 1)^20 drawn from ``rng`` row by row."""
        rng = np.random.default_rng(0) if rng is None else rng
        states = np.full((n, self.state_dim), -1.0)
        states[:, :N_TYPES] = rng.uniform(-1.0, 1.0, size=(n, N_TYPES))
        states[:, BUDGET] = self.config.initial_budget
        return states

    def observe(self, states: np.ndarray) -> np.ndarray:
        """f32[B, obs_dim]: what a policy sees (everything but the budget)."""
        states = np.asarray(states)
        return encode_observation(states[:, :N_TYPES], states[:, LAST_TYPE], states[:, HISTORY:])

    def step(self, states: np.ndarray, actions: np.ndarray, rng: np.random.Generator) -> StepResult:
        """One recommendation per user: a uniform per user for the click, then one per click for
        the interest drift (RecSim's order when B = 1)."""
        cfg, cat = self.config, self.catalogue
        states = np.asarray(states, dtype=np.float64)
        actions = np.asarray(actions, dtype=np.int64)
        if actions.shape != (states.shape[0],) or (
            actions.size and (actions.min() < 0 or actions.max() >= self.n_actions)
        ):
            raise ValueError(f"RecommenderModel.step: actions must be int[{states.shape[0]}] in [0, {self.n_actions})")
        rows = np.arange(states.shape[0])
        video_type, quality, length = cat.types[actions], cat.qualities[actions], cat.lengths[actions]
        interest = states[rows, video_type]
        budget = states[:, BUDGET]
        clicked = rng.random(states.shape[0]) < click_probability(interest)
        flips = rng.random(int(clicked.sum()))
        watch = np.where(clicked, np.minimum(budget, length), 0.0)

        next_states = states.copy()
        hit = np.flatnonzero(clicked)
        next_states[hit, video_type[hit]] = drift_interest(interest[hit], flips)
        watched_budget = (budget - watch) + (BUDGET_QUALITY_RATE * watch) * quality
        next_budget = np.where(clicked, watched_budget, budget - cfg.no_click_penalty)
        repeat = states[:, LAST_TYPE] == video_type
        next_budget = np.where(repeat, next_budget - cfg.same_type_penalty, next_budget)
        next_states[:, BUDGET] = next_budget
        next_states[:, LAST_TYPE] = video_type
        if cfg.history_length:
            shifted = np.concatenate([video_type[:, None].astype(np.float64), states[:, HISTORY:-1]], axis=1)
            next_states[:, HISTORY:] = np.where(clicked[:, None], shifted, states[:, HISTORY:])
        return StepResult(next_states, watch.astype(np.float32), next_budget <= 0, actions)

    def true_step(self, states: np.ndarray, actions: np.ndarray) -> StepResult:
        """Not defined: the user's click and interest drift are random (use ``step`` with a generator)."""
        raise ValueError(
            "RecommenderModel.true_step: the simulated user is stochastic; call step(states, actions, rng)"
        )

    def action_features(self) -> np.ndarray:
        """float64 [A, 22]: each video's [one-hot type, quality, length] (the External representation),
        written into one array (no [A, 20] temporary)."""
        cat = self.catalogue
        table = np.zeros((self.n_actions, N_TYPES + 2))
        table[np.arange(self.n_actions), cat.types] = 1.0
        table[:, N_TYPES], table[:, N_TYPES + 1] = cat.qualities, cat.lengths
        return table

    def info(self) -> dict[str, Any]:
        cat = self.catalogue
        return {
            "n_types": N_TYPES,
            "videos_per_type": np.bincount(cat.types, minlength=N_TYPES).tolist(),
            "length_range": [float(cat.lengths.min()), float(cat.lengths.max())],
            "quality_range": [float(cat.qualities.min()), float(cat.qualities.max())],
        }
