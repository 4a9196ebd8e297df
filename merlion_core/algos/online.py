"""Online RL on a fixed action representation (MERLION paper, App. A.6 / Fig. 7; Chandak et al. 2019).

The learner is the latent agent of :mod:`merlion_core.algos.latent_cql` with its offline parts
switched off (``ONLINE_LEARNER_DEFAULTS``: alpha = 0, no behaviour-cloning phase, SAC's entropy
bonus kept in the target): plain SAC in the actor space x of a frozen representation phi(a; s),
tied to real actions. One run:

1. **Warm-up.** ``warmup_steps`` transitions with uniformly random real actions, from ``n_envs``
   episodes of the env's batch model stepped side by side (the env's own action noise on).
2. **Latent map.** The networks' observation statistics are fitted on the warm-up states, and the
   affine map e -> x of :mod:`merlion_core.algos.latent` on phi(a; s) of *every* action at up to
   ``LATENT_FIT_STATES`` warm-up states (:func:`fit_latent_map`): the actor's box then covers the
   whole action set, not only the actions the warm-up happened to draw.
3. **Learning.** Each vector step samples x ~ pi(. | s) per episode, looks it up to a real action
   (L1 nearest, Eq. 1; the critic's best of ``knn_k`` with Wolpertinger), steps the env, stores
   the *executed* real action id (after the env's action noise, ``StepResult.executed_actions``)
   in the replay buffer, then takes ``updates_per_step`` gradient steps on uniform minibatches:
   the critic learns on x = phi(a_executed; s), as in the offline pipeline.

4. **Fine-tuning (optional).** With ``encoder_updates_per_step`` > 0 a MERLION representation takes
   that many steps of its own losses (Algorithm 2: Eq. 6 and the models' Eq. 26) on replay
   minibatches after the learner's steps (:mod:`merlion_core.representation.online_tuning`), as
   Chandak et al. (2019) adapt theirs online; the latent map fitted at the warm-up is kept. The
   default, 0, keeps the encoder fixed. Episodes end on termination or at the
model's ``max_steps`` (a truncation: stored with done = 0, so the target bootstraps), and restart
from ``model.initial_states``. Everything random comes from streams derived from ``config.seed``:
the same seed (and thread count) gives the same run. No paths, no printing: the pipeline
(:mod:`merlion_core.pipelines.online`) evaluates and saves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from merlion_core.algos import latent
from merlion_core.algos.latent_cql import LatentCQL, LatentCQLConfig
from merlion_core.data.sampler import Batch
from merlion_core.envs.model import observe
from merlion_core.models.mlp import host_to_device, resolve_device
from merlion_core.representation.online_tuning import ReplayTuner, check_tunable

ONLINE_LEARNER_DEFAULTS: dict[str, Any] = {
    "alpha": 0.0,
    "bc_steps": 0,
    "backup_entropy": True,
    "n_random": 1,
    "n_policy": 1,
    "cql_samples": "box",
}
"""LatentCQLConfig settings that make it online SAC: no CQL(H) term, no cloning phase, the entropy
bonus in the backup; with alpha = 0 the CQL(H) samples only cost time, so one box sample each."""
SHARED_FIELDS = ("batch_size", "seed")
"""Fields of both configs: the online run's value is the learner's (not settable in ``learner``)."""
LATENT_FIT_STATES = 64
"""Warm-up states (evenly spaced) at which phi(a; s) of every action fits the latent map."""


@dataclass(frozen=True)
class OnlineConfig:
    """Online SAC on latent actions: the interaction loop and the learner's overrides."""

    env_steps: int = 100_000
    """Transitions collected in all (rounded up to whole vector steps of n_envs)."""
    n_envs: int = 16
    """Episodes stepped side by side; one vector step collects one transition from each."""
    warmup_steps: int = 2_000
    """Transitions with uniformly random real actions before learning (rounded up to whole vector steps)."""
    updates_per_step: int = 4
    """Gradient steps after each vector step (n_envs transitions): updates per transition = this / n_envs."""
    replay_size: int = 100_000
    """Replay buffer capacity in transitions (the oldest are overwritten)."""
    batch_size: int = 256
    """Transitions per minibatch, drawn uniformly from the filled replay rows (the learner's batch_size)."""
    eval_every: int = 5_000
    """Evaluate the greedy policy every this many env steps (0: only at the end)."""
    eval_episodes: int = 20
    """Episodes per evaluation (evaluation.evaluate, the env noise seeded by the env step)."""
    seed: int = 0
    """Seed of the env, the warm-up actions, the exploration, the replay sampling and the learner."""
    encoder_updates_per_step: int = 0
    """Fine-tuning steps of MERLION's phi and models (Eq. 6, 26) on replay minibatches per vector step; 0: fixed."""
    encoder_lr: float = 0.0
    """Adam learning rate of those fine-tuning steps; 0: the representation's own training lr."""
    learner: dict[str, Any] = field(default_factory=dict)
    """LatentCQLConfig overrides on top of ONLINE_LEARNER_DEFAULTS (alpha = 0, bc_steps = 0, backup_entropy)."""

    def __post_init__(self) -> None:
        for name in ("env_steps", "n_envs", "warmup_steps", "updates_per_step", "batch_size", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"OnlineConfig.{name}: must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps > self.env_steps:
            raise ValueError(f"OnlineConfig.warmup_steps: {self.warmup_steps} exceeds env_steps {self.env_steps}")
        if self.replay_size < self.n_envs:
            raise ValueError(f"OnlineConfig.replay_size: must be >= n_envs {self.n_envs}, got {self.replay_size}")
        if self.encoder_updates_per_step < 0 or not self.encoder_lr >= 0:
            raise ValueError(
                "OnlineConfig.encoder_updates_per_step, encoder_lr: must be >= 0, "
                f"got {self.encoder_updates_per_step}, {self.encoder_lr}"
            )
        if self.eval_every < 0 or self.seed < 0:
            raise ValueError(f"OnlineConfig.eval_every, seed: must be >= 0, got {self.eval_every}, {self.seed}")
        learner_config(self)  # the learner's overrides are checked with the run's


def learner_config(config: OnlineConfig) -> LatentCQLConfig:
    """The learner's config: LatentCQLConfig defaults, ONLINE_LEARNER_DEFAULTS, ``config.learner``,
    then the run's batch_size and seed; one-line ValueError for an unknown or shared key."""
    if not isinstance(config.learner, Mapping):
        raise ValueError(f"OnlineConfig.learner: a mapping of LatentCQLConfig overrides, got {config.learner!r}")
    names = {f.name for f in dataclasses.fields(LatentCQLConfig)}
    unknown = sorted(set(config.learner) - names)
    shared = sorted(set(config.learner) & set(SHARED_FIELDS))
    if unknown or shared:
        raise ValueError(
            f"OnlineConfig.learner: no LatentCQLConfig option(s) {', '.join(unknown)}"
            if unknown
            else f"OnlineConfig.learner: {', '.join(shared)} are the online run's own fields; set them there"
        )
    values = {**ONLINE_LEARNER_DEFAULTS, **config.learner, "batch_size": config.batch_size, "seed": config.seed}
    if isinstance(values.get("hidden"), list):  # from JSON
        values["hidden"] = tuple(values["hidden"])
    return LatentCQLConfig(**values)


def online_config(options: Mapping[str, Any]) -> OnlineConfig:
    """An OnlineConfig from one flat mapping (the CLI's and the jobs' options): OnlineConfig fields
    as they are, any other LatentCQLConfig field into ``learner`` (a ``learner`` mapping merges)."""
    own = {f.name for f in dataclasses.fields(OnlineConfig)}
    learner_names = {f.name for f in dataclasses.fields(LatentCQLConfig)}
    unknown = sorted(set(options) - own - learner_names)
    if unknown:
        raise ValueError(f"online options: no option(s) {', '.join(unknown)} in OnlineConfig or LatentCQLConfig")
    values = {k: v for k, v in options.items() if k in own and k != "learner"}
    learner = {**dict(options.get("learner") or {}), **{k: v for k, v in options.items() if k not in own}}
    return OnlineConfig(**values, learner=learner)


def vector_steps(transitions: int, n_envs: int) -> int:
    """Vector steps that collect at least ``transitions`` transitions from ``n_envs`` episodes."""
    return -(-int(transitions) // int(n_envs))


class ReplayBuffer:
    """A ring buffer of transitions on one device with :class:`~merlion_core.data.sampler.BatchSampler`'s
    interface (``sample``, ``observations``, ``actions``, ``n``): rows are overwritten oldest first,
    and minibatches are drawn uniformly, with replacement, from the filled rows only (indices from
    a seeded CPU generator, so a seed gives the same batches on every device)."""

    def __init__(self, capacity: int, obs_dim: int, batch_size: int, seed: int = 0, device: str = "cpu") -> None:
        if capacity < 1 or obs_dim < 1 or batch_size < 1:
            raise ValueError(
                f"ReplayBuffer: capacity, obs_dim, batch_size must be >= 1, got {capacity}, {obs_dim}, {batch_size}"
            )
        self.device = resolve_device(device)
        self.capacity, self.batch_size = int(capacity), int(batch_size)
        self._obs = torch.zeros(self.capacity, obs_dim, device=self.device)
        self._act = torch.zeros(self.capacity, dtype=torch.int64, device=self.device)
        self._rew = torch.zeros(self.capacity, device=self.device)
        self._next_obs = torch.zeros(self.capacity, obs_dim, device=self.device)
        self._done = torch.zeros(self.capacity, device=self.device)
        self.n = 0
        """Filled rows (at most ``capacity``)."""
        self.ptr = 0
        """The row the next transition goes to."""
        self.generator = torch.Generator().manual_seed(int(seed))

    def add(self, obs: Any, act: Any, rew: Any, next_obs: Any, done: Any) -> None:
        """Store B transitions (arrays or tensors: f32[B, S], int[B], f32[B], f32[B, S], bool[B])."""
        act_B = torch.as_tensor(np.asarray(act), dtype=torch.int64)
        b = act_B.shape[0]
        if b > self.capacity:
            raise ValueError(f"ReplayBuffer.add: {b} transitions exceed the capacity {self.capacity}")
        rows = host_to_device((self.ptr + torch.arange(b)) % self.capacity, self.device)
        for store, value, dtype in (
            (self._obs, obs, torch.float32),
            (self._act, act_B, torch.int64),
            (self._rew, rew, torch.float32),
            (self._next_obs, next_obs, torch.float32),
            (self._done, done, torch.float32),
        ):
            tensor = torch.as_tensor(np.asarray(value), dtype=dtype).to(self.device)
            if tensor.shape != (b, *store.shape[1:]):
                raise ValueError(
                    f"ReplayBuffer.add: expected [{b}, ...] rows like {tuple(store.shape)}, got {tuple(tensor.shape)}"
                )
            store[rows] = tensor
        self.ptr = (self.ptr + b) % self.capacity
        self.n = min(self.capacity, self.n + b)

    @property
    def observations(self) -> torch.Tensor:
        """f32[n, S]: the filled rows' states (in row order, not time order once wrapped)."""
        return self._obs[: self.n]

    @property
    def actions(self) -> torch.Tensor:
        """i64[n]: the filled rows' executed action ids."""
        return self._act[: self.n]

    def sample(self) -> Batch:
        if self.n == 0:
            raise ValueError("ReplayBuffer.sample: the buffer is empty")
        idx = host_to_device(torch.randint(0, self.n, (self.batch_size,), generator=self.generator), self.device)
        return Batch(
            obs=self._obs[idx],
            act=self._act[idx],
            rew=self._rew[idx],
            next_obs=self._next_obs[idx],
            done=self._done[idx],
        )


@torch.no_grad()
def fit_latent_map(agent: LatentCQL, obs_NS: torch.Tensor, max_states: int = LATENT_FIT_STATES) -> float:
    """Fit the agent's latent map (``latent.fit_latent_bound``) on phi(a; s) of every action at up to
    ``max_states`` of the states ``obs_NS``, evenly spaced; returns the fitted largest half-width (or B)."""
    if obs_NS.ndim != 2 or obs_NS.shape[0] == 0:
        raise ValueError(f"fit_latent_map: expected [N>0, S] states, got {tuple(obs_NS.shape)}")
    n = obs_NS.shape[0]
    idx = torch.linspace(0, n - 1, min(n, max_states), device=obs_NS.device).long()
    e_KAD = agent.representation.embed_all(obs_NS[idx].to(agent.device)).float()
    return agent.fit_latent_bound(e_KAD.reshape(-1, agent.dim))


@torch.no_grad()
def explore(agent: LatentCQL, obs_BS: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """i64[B]: the real action of a sampled latent x ~ pi(. | s) (the actor's ``sample``), looked up
    with the agent's acting rule (L1 nearest, Eq. 1; Wolpertinger over ``knn_k``)."""
    x_BD, _ = agent.actor.sample(obs_BS, agent._bound(), generator)
    return latent.wolpertinger(agent, obs_BS, x_BD, agent.config.knn_k, agent.critic)


@dataclass(frozen=True)
class OnlineStep:
    """What one vector step did (yielded by :func:`interact`)."""

    env_steps: int
    """Transitions collected so far, this step's included."""
    updates: int
    """Gradient steps taken so far."""
    episode_returns: np.ndarray
    """f64[E]: undiscounted returns of the episodes that ended in this step (terminated or timed out)."""
    episode_successes: np.ndarray
    """bool[E]: whether each of those succeeded (StepResult.successes; else: terminated)."""
    losses: tuple[dict[str, torch.Tensor], ...]
    """The detached loss parts of each gradient step taken after this vector step."""
    tuning: tuple[dict[str, torch.Tensor], ...] = ()
    """The detached loss parts of each fine-tuning step of the representation (names prefixed tune_)."""


def _seeds(seed: int) -> tuple[np.random.Generator, np.random.Generator, int, int, int]:
    """Independent streams of one seed: env, warm-up actions (numpy); replay, exploration, fine-tuning
    (torch seeds). The fifth child leaves the first four as they were with four."""
    env_ss, warmup_ss, replay_ss, explore_ss, tune_ss = np.random.SeedSequence(int(seed)).spawn(5)
    replay_seed, explore_seed, tune_seed = (int(ss.generate_state(1)[0]) for ss in (replay_ss, explore_ss, tune_ss))
    return np.random.default_rng(env_ss), np.random.default_rng(warmup_ss), replay_seed, explore_seed, tune_seed


def make_tuner(agent: LatentCQL, config: OnlineConfig, seed: int) -> ReplayTuner | None:
    """The fine-tuner of the agent's representation (None when ``encoder_updates_per_step`` is 0);
    a one-line ValueError for a representation that cannot be tuned."""
    if config.encoder_updates_per_step == 0:
        return None
    rep = check_tunable(agent.representation, "OnlineConfig.encoder_updates_per_step")
    return ReplayTuner(rep, config.encoder_lr or rep.config.lr, seed, "OnlineConfig.encoder_updates_per_step")


def interact(
    agent: LatentCQL, model: Any, config: OnlineConfig, replay: ReplayBuffer | None = None
) -> Iterator[OnlineStep]:
    """Run ``config``'s online loop on the batch ``model``, training ``agent`` in place; yields one
    :class:`OnlineStep` per vector step (the caller may evaluate the agent between them). ``replay``:
    a buffer to fill (default: a fresh one of ``replay_size`` on the agent's device, seeded)."""
    if model.n_actions != agent.n_actions or model.obs_dim != agent.obs_dim:
        raise ValueError(
            f"interact: the env has {model.n_actions} actions / obs_dim {model.obs_dim}, "
            f"the agent {agent.n_actions} / {agent.obs_dim}"
        )
    env_rng, warmup_rng, replay_seed, explore_seed, tune_seed = _seeds(config.seed)
    tuner = make_tuner(agent, config, tune_seed)
    if replay is None:
        replay = ReplayBuffer(config.replay_size, agent.obs_dim, config.batch_size, replay_seed, str(agent.device))
    explore_gen = torch.Generator(device=agent.device).manual_seed(explore_seed)
    n, warmup = config.n_envs, vector_steps(config.warmup_steps, config.n_envs)
    states = model.initial_states(n, env_rng)
    elapsed, returns = np.zeros(n, dtype=np.int64), np.zeros(n)
    updates = 0
    for t in range(vector_steps(config.env_steps, n)):
        obs = np.asarray(observe(model, states), dtype=np.float32)
        if t < warmup:
            chosen = warmup_rng.integers(0, model.n_actions, size=n)
        else:
            obs_BS = torch.as_tensor(obs, device=agent.device)
            chosen = explore(agent, obs_BS, explore_gen).to("cpu").numpy()
        result = model.step(states, chosen, env_rng)
        elapsed += 1
        returns += result.rewards
        next_obs = np.asarray(observe(model, result.next_states), dtype=np.float32)
        replay.add(obs, result.executed_actions, result.rewards, next_obs, result.terminated)
        ended = result.terminated | (elapsed >= model.max_steps)
        success = result.terminated if result.successes is None else result.successes
        finished_returns, finished_success = returns[ended].copy(), np.asarray(success, dtype=bool)[ended]
        states = result.next_states
        if ended.any():  # fresh episodes in the finished rows
            states = states.copy()
            states[ended] = model.initial_states(int(ended.sum()), env_rng)
            elapsed[ended], returns[ended] = 0, 0.0
        losses: list[dict[str, torch.Tensor]] = []
        tuning: tuple[dict[str, torch.Tensor], ...] = ()
        if t >= warmup - 1:
            if t == warmup - 1:  # the warm-up is complete: fit the networks' inputs and the latent map
                agent.prepare_observation_features(replay.observations)
                if not agent.bound_is_set:  # a configured bound (latent_bound > 0) is kept
                    fit_latent_map(agent, replay.observations)
            for _ in range(config.updates_per_step):
                losses.append(agent.update_tensors(replay.sample()))
            updates += config.updates_per_step
            if tuner is not None:
                tuning = tuple(tuner.step(replay.sample()) for _ in range(config.encoder_updates_per_step))
        yield OnlineStep((t + 1) * n, updates, finished_returns, finished_success, tuple(losses), tuning)
