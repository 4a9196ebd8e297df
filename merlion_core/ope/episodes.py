"""Episodes of a flat transition array, padded views of them, and the held-out episode split.

A dataset's transitions are stored episode after episode; ``episode_ends`` are the indices of
the last transition of each complete episode (``terminals | timeouts``). Episode ``e`` spans
``ends[e - 1] + 1 .. ends[e]``; transitions after the last end (a cut episode) belong to none.

:func:`holdout_split` holds out whole episodes for off-policy evaluation: a seeded permutation
of the episode ids, the first ``round(fraction * E)`` of them held out. Ids and transition indices
are returned sorted, so the held-out transitions keep the dataset's order and are themselves a
sequence of complete episodes (their table is :meth:`EpisodeTable.from_lengths`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class EpisodeTable:
    """Start and end (inclusive) transition index of each complete episode."""

    starts: np.ndarray
    """i64[E]: index of each episode's first transition."""
    ends: np.ndarray
    """i64[E]: index of each episode's last transition."""

    def __post_init__(self) -> None:
        if self.starts.shape != self.ends.shape or self.starts.ndim != 1:
            raise ValueError(
                f"EpisodeTable: starts {self.starts.shape} and ends {self.ends.shape} must be equal 1-D shapes"
            )
        if self.starts.size == 0:
            raise ValueError("EpisodeTable: no complete episode")
        if np.any(self.ends < self.starts):
            raise ValueError("EpisodeTable: an episode ends before it starts")

    @classmethod
    def from_ends(cls, episode_ends: Any) -> EpisodeTable:
        """The table of the episodes ending at the sorted indices ``episode_ends``."""
        ends = np.asarray(episode_ends, dtype=np.int64)
        if ends.ndim != 1 or ends.size == 0:
            raise ValueError(f"episode_ends: expected a non-empty 1-D array, got shape {ends.shape}")
        if ends[0] < 0 or np.any(np.diff(ends) <= 0):
            raise ValueError("episode_ends: must be non-negative and strictly increasing")
        return cls(starts=np.concatenate(([0], ends[:-1] + 1)).astype(np.int64), ends=ends)

    @classmethod
    def from_flags(cls, terminals: Any, timeouts: Any) -> EpisodeTable:
        """The table of the complete episodes of flat arrays (``terminals | timeouts`` ends one)."""
        return cls.from_ends(np.flatnonzero(np.asarray(terminals, bool) | np.asarray(timeouts, bool)))

    @classmethod
    def from_lengths(cls, lengths: Any) -> EpisodeTable:
        """The table of back-to-back episodes of the given lengths, the first starting at 0."""
        return cls.from_ends(np.cumsum(np.asarray(lengths, dtype=np.int64)) - 1)

    @property
    def n_episodes(self) -> int:
        return int(self.starts.size)

    @property
    def lengths(self) -> np.ndarray:
        """i64[E]: transitions per episode."""
        return self.ends - self.starts + 1

    @property
    def max_length(self) -> int:
        return int(self.lengths.max())

    @property
    def n_transitions(self) -> int:
        """Transitions inside complete episodes."""
        return int(self.lengths.sum())

    def transition_index(self) -> np.ndarray:
        """i64[sum of lengths]: the indices of every episode's transitions, episode after episode."""
        return ranges(self.starts, self.lengths)

    def episode_of_transition(self) -> np.ndarray:
        """i64[sum of lengths]: the episode id of each transition of :meth:`transition_index`."""
        return np.repeat(np.arange(self.n_episodes, dtype=np.int64), self.lengths)


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """i64: concatenation of ``arange(s, s + n)`` for each (s, n), by index arithmetic."""
    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths
    total = int(lengths.sum())
    starts = np.asarray(starts, dtype=np.int64)
    return np.arange(total, dtype=np.int64) + np.repeat(starts - offsets, lengths)


def to_padded(values_N: Any, table: EpisodeTable, fill: Any = 0) -> tuple[np.ndarray, np.ndarray]:
    """([E, T_max, ...] values, bool[E, T_max] mask): row e holds episode e's values, ``fill`` past its end."""
    values_N = np.asarray(values_N)
    if values_N.shape[0] <= int(table.ends[-1]):
        raise ValueError(
            f"values_N: {values_N.shape[0]} rows, the episode table needs at least {int(table.ends[-1]) + 1}"
        )
    steps_T = np.arange(table.max_length, dtype=np.int64)
    mask_ET = steps_T[None, :] < table.lengths[:, None]
    index_ET = np.minimum(table.starts[:, None] + steps_T[None, :], table.ends[:, None])
    gathered = values_N[index_ET]
    mask = mask_ET.reshape(mask_ET.shape + (1,) * (values_N.ndim - 1))
    return np.where(mask, gathered, np.asarray(fill, dtype=values_N.dtype)), mask_ET


@dataclass(frozen=True, eq=False)
class HoldoutSplit:
    """Whole episodes held out for evaluation; the rest for training."""

    fraction: float
    """Requested fraction of episodes held out."""
    seed: int
    """Seed of the permutation of episode ids."""
    n_episodes: int
    """Complete episodes in the dataset when the split was made."""
    train_episodes: np.ndarray
    """i64[E_train]: sorted ids of the training episodes."""
    heldout_episodes: np.ndarray
    """i64[E_heldout]: sorted ids of the held-out episodes."""
    train_index: np.ndarray
    """i64: transition indices of the training episodes, in dataset order."""
    heldout_index: np.ndarray
    """i64: transition indices of the held-out episodes, in dataset order."""

    def heldout_table(self, episode_ends: Any) -> EpisodeTable:
        """The held-out episodes' table in the indexing of ``dataset[heldout_index]``."""
        return EpisodeTable.from_lengths(EpisodeTable.from_ends(episode_ends).lengths[self.heldout_episodes])


def _check_fraction(fraction: float) -> None:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction: must be in (0, 1), got {fraction}")


def _split_from_ids(episode_ends: Any, heldout: np.ndarray, fraction: float, seed: int) -> HoldoutSplit:
    table = EpisodeTable.from_ends(episode_ends)
    is_heldout = np.zeros(table.n_episodes, dtype=bool)
    is_heldout[heldout] = True
    train, held = np.flatnonzero(~is_heldout), np.flatnonzero(is_heldout)
    return HoldoutSplit(
        fraction=float(fraction),
        seed=int(seed),
        n_episodes=table.n_episodes,
        train_episodes=train.astype(np.int64),
        heldout_episodes=held.astype(np.int64),
        train_index=ranges(table.starts[train], table.lengths[train]),
        heldout_index=ranges(table.starts[held], table.lengths[held]),
    )


def holdout_split(episode_ends: Any, fraction: float, seed: int, min_episodes: int = 10) -> HoldoutSplit:
    """Hold out ``round(fraction * E)`` whole episodes chosen by a seeded permutation of the E episode ids."""
    _check_fraction(fraction)
    n_episodes = EpisodeTable.from_ends(episode_ends).n_episodes
    n_heldout = int(round(fraction * n_episodes))
    if n_heldout < min_episodes or n_episodes - n_heldout < 1:
        raise ValueError(
            f"holdout_split: fraction {fraction} of {n_episodes} episodes holds out {n_heldout} "
            f"and trains on {n_episodes - n_heldout}; need >= {min_episodes} held out and >= 1 train"
        )
    permutation = np.random.default_rng(seed).permutation(n_episodes)
    return _split_from_ids(episode_ends, np.sort(permutation[:n_heldout]), fraction, seed)


def ids_digest(ids: Any) -> str:
    """sha256 (hex) of the episode ids as little-endian int64."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(ids, dtype="<i8")).tobytes()).hexdigest()


def split_to_dict(split: HoldoutSplit) -> dict[str, Any]:
    """A JSON-ready record of the split: settings, episode count, held-out ids and their sha256."""
    return {
        "fraction": split.fraction,
        "seed": split.seed,
        "n_episodes": split.n_episodes,
        "n_heldout": int(split.heldout_episodes.size),
        "heldout_sha256": ids_digest(split.heldout_episodes),
        "heldout_episodes": [int(i) for i in split.heldout_episodes],
    }


def check_split_record(record: Any, episode_ends: Any) -> None:
    """Raise ValueError unless ``record`` (from :func:`split_to_dict`) fits a dataset with these episode ends."""
    if not isinstance(record, dict):
        raise ValueError(f"split record: expected a dict, got {type(record).__name__}")
    missing = [k for k in ("fraction", "seed", "n_episodes", "heldout_sha256", "heldout_episodes") if k not in record]
    if missing:
        raise ValueError(f"split record: missing key(s) {', '.join(missing)}")
    n_episodes = EpisodeTable.from_ends(episode_ends).n_episodes
    if int(record["n_episodes"]) != n_episodes:
        raise ValueError(f"split record: made for {record['n_episodes']} episodes, the dataset has {n_episodes}")
    ids = np.asarray(record["heldout_episodes"], dtype=np.int64)
    if ids.ndim != 1 or ids.size == 0 or np.any(np.diff(ids) <= 0) or ids[0] < 0 or ids[-1] >= n_episodes:
        raise ValueError(f"split record: heldout_episodes must be sorted distinct ids in [0, {n_episodes})")
    if ids_digest(ids) != record["heldout_sha256"]:
        raise ValueError("split record: heldout_sha256 does not match heldout_episodes")
    if ids.size >= n_episodes:
        raise ValueError(f"split record: all {n_episodes} episodes held out, none left to train on")


def split_from_dict(record: Any, episode_ends: Any) -> HoldoutSplit:
    """The split recorded by :func:`split_to_dict`, rebuilt from its held-out ids after :func:`check_split_record`."""
    check_split_record(record, episode_ends)
    _check_fraction(float(record["fraction"]))
    return _split_from_ids(
        episode_ends,
        np.asarray(record["heldout_episodes"], dtype=np.int64),
        float(record["fraction"]),
        int(record["seed"]),
    )
