"""``merlion/Dialogue-v0``: task-oriented dialogue on MultiWOZ with 1500 composite system acts.

MERLION Studio's own agenda-based user simulator (ConvLab-2, which the paper used, cannot be
installed on Python 3.11) on the real MultiWOZ 2.1 databases, goal model and act counts; see
docs/dialogue.md. The files come from ``DialogueConfig.data_dir`` or $MERLION_MULTIWOZ_DIR.

- actions: the ``n_actions`` most frequent composite system acts (actions.py);
- observation (float32 in [0, 1]): the user's acts this turn (multi-hot), the last system act
  (multi-hot over its atoms), the belief state (which slots the user has given), the pending
  requests, a database pointer per domain (one-hot count bins 0, 1, 2, 3-5, 6-10, 11+), booked
  and entity-offered flags per domain, the domain under discussion, turn / max_turns, terminal;
- reward: ``turn_reward`` every turn, plus ``success_reward`` or ``failure_reward`` when the
  dialogue ends (the user says bye, or hangs up at ``max_turns``: a terminal state, not a
  truncation, since the turn count is observed);
- the state row also holds the hidden goal and agenda (simulator.py); ``observe`` slices off
  the observation. The user's only randomness (how many acts it says per turn) comes from the
  ``rng`` of ``step``; ``true_step`` uses a user that always says as much as it may.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from merlion_core.data.multiwoz_io import load_multiwoz, resolve_data_dir
from merlion_core.envs.dialogue.actions import (
    ActionTable,
    build_action_table,
    top_composites,
)
from merlion_core.envs.dialogue.goals import Goals, sample_goals
from merlion_core.envs.dialogue.policies import make_rule_behaviour
from merlion_core.envs.dialogue.schema import DialogueSchema, build_schema
from merlion_core.envs.dialogue.simulator import UserSimulator
from merlion_core.envs.model import StepResult
from merlion_core.envs.model_env import ModelEnv


@dataclass(frozen=True)
class DialogueConfig:
    """Dialogue settings (paper A.4: ConvLab's MultiWOZ domain, 1500 actions)."""

    data_dir: str = ""
    """Folder with the MultiWOZ files (ConvLab-2 data/multiwoz); empty: the MERLION_MULTIWOZ_DIR variable."""
    n_actions: int = 1500
    """|A|: the most frequent composite system acts used as actions (paper: 1500)."""
    max_turns: int = 20
    """Turn limit: the user hangs up (failure) after this many system turns."""
    turn_reward: float = -1.0
    """Reward of every system turn."""
    success_reward: float = 40.0
    """Bonus when the dialogue ends with the user's goal met (2 x max_turns, ConvLab-2's scale)."""
    failure_reward: float = -20.0
    """Penalty when the dialogue ends with the goal not met (-max_turns)."""
    max_user_acts: int = 3
    """The user says 1..max_user_acts acts a turn (uniform), all about one domain."""
    patience: int = 2
    """How often the user asks again for an unfinished domain before giving it up."""
    relax_probability: float = 0.5
    """For a goal matching no entity: probability of dropping a constraint (else changing it)."""

    def __post_init__(self) -> None:
        checks = [
            (self.n_actions >= 2, "n_actions must be >= 2"),
            (self.max_turns >= 1, "max_turns must be >= 1"),
            (self.max_user_acts >= 1, "max_user_acts must be >= 1"),
            (self.patience >= 0, "patience must be >= 0"),
            (0.0 <= self.relax_probability <= 1.0, "relax_probability must be in [0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"DialogueConfig: {message}")


@functools.lru_cache(maxsize=8)
def _tables(data_dir: str, n_actions: int) -> tuple[DialogueSchema, ActionTable, str]:
    data = load_multiwoz(data_dir)
    schema = build_schema(data)
    composites, counts = top_composites(data.composite_counts, n_actions)
    return schema, build_action_table(schema, composites, counts), data.root


class DialogueModel:
    """The dialogue simulator as a batch model (numpy in, numpy out; no loop over dialogues)."""

    def __init__(self, config: DialogueConfig = DialogueConfig()) -> None:
        self.config = config
        root = resolve_data_dir(config.data_dir)  # before the cache: the variable may change
        self.schema, self.actions, self.data_root = _tables(str(root), config.n_actions)
        self.simulator = UserSimulator(
            self.schema, self.actions, config.max_turns, config.max_user_acts, config.patience
        )
        self.n_actions = config.n_actions
        self.obs_dim = self.simulator.obs_dim
        self.state_dim = self.simulator.state_dim
        self.max_steps = config.max_turns

    def initial_states(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """float32 [n, state_dim]: fresh goals and the user's opening turn (``rng`` None: seed 0)."""
        rng = rng if rng is not None else np.random.default_rng(0)
        return self.states_for_goals(sample_goals(self.schema, n, rng, self.config.relax_probability), rng)

    def states_for_goals(self, goals: Goals, rng: np.random.Generator, deterministic: bool = False) -> np.ndarray:
        """float32 [n, state_dim]: dialogues with the given goals after the user's opening turn
        (``deterministic``: the user says as much as it may, as in ``true_step``)."""
        state, user_acts = self.simulator.initial(goals, rng, deterministic)
        n = len(goals.rank)
        atoms = np.zeros((n, len(self.actions.atoms)), dtype=np.float32)
        return self.simulator.pack(state, user_acts, atoms, np.zeros(n, dtype=bool))

    def _step(
        self, states: np.ndarray, actions: np.ndarray, rng: np.random.Generator, deterministic: bool
    ) -> StepResult:
        states = np.asarray(states, dtype=np.float32)
        actions = np.asarray(actions, dtype=np.int64)
        if states.ndim != 2 or states.shape[1] != self.state_dim:
            raise ValueError(f"DialogueModel.step: states must be [B, {self.state_dim}], got {list(states.shape)}")
        if actions.shape != (states.shape[0],) or (
            actions.size and (actions.min() < 0 or actions.max() >= self.n_actions)
        ):
            raise ValueError(f"DialogueModel.step: actions must be int[{states.shape[0]}] in [0, {self.n_actions})")
        state = self.simulator.unpack(states)
        user_acts, atoms, ended, success = self.simulator.step(state, actions, rng, deterministic)
        cfg = self.config
        rewards = cfg.turn_reward + np.where(ended, np.where(success, cfg.success_reward, cfg.failure_reward), 0.0)
        next_states = self.simulator.pack(state, user_acts, atoms, ended)
        return StepResult(next_states, rewards.astype(np.float32), ended, actions, successes=ended & success)

    def step(self, states: np.ndarray, actions: np.ndarray, rng: np.random.Generator) -> StepResult:
        """One system turn for a batch of dialogues; the user's act counts are drawn from ``rng``."""
        return self._step(states, actions, rng, deterministic=False)

    def true_step(self, states: np.ndarray, actions: np.ndarray) -> StepResult:
        """The turn with a deterministic user (it always says up to ``max_user_acts`` acts)."""
        return self._step(states, actions, np.random.default_rng(0), deterministic=True)

    def observe(self, states: np.ndarray) -> np.ndarray:
        """float32 [B, obs_dim]: what the system sees (the hidden goal and agenda cut off)."""
        return np.ascontiguousarray(np.asarray(states, dtype=np.float32)[:, : self.obs_dim])

    def behaviour(self, name: str):
        """The env's own behaviours: ``expert`` (rule-based system policy) and ``medium``."""
        return make_rule_behaviour(self, name)

    def info(self) -> dict[str, Any]:
        return {
            "n_atoms": len(self.actions.atoms),
            "state_dim": self.state_dim,
            "data_dir": self.data_root,
            "corpus_share_of_actions": float(self.actions.counts.sum() / max(1, self._corpus_total())),
        }

    def _corpus_total(self) -> int:
        return int(sum(c for _, c in load_multiwoz(self.data_root).composite_counts))


class DialogueEnv(ModelEnv):
    """Gymnasium env ``merlion/Dialogue-v0`` over :class:`DialogueModel`."""

    config_cls = DialogueConfig
    model_cls = DialogueModel
