"""Resumable training checkpoints: ``step-<N>.pt`` files holding state_dicts, RNG states and a
small JSON-like ``extra`` (the learning curve so far), written atomically, loaded without
unpickling (``torch.load(weights_only=True)``).

A :class:`TrainingCheckpoint` is given the objects whose state makes a run resumable (the
model and its optimizer: anything with ``state_dict`` / ``load_state_dict``; the torch
generators that draw batches and noise) and a ``fingerprint`` of the run (algorithm, config,
data size). ``restore`` returns the saved step and ``extra`` (0 and {} when there is none);
a checkpoint from a different run is refused with a one-line error.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

PATTERN = re.compile(r"^step-(\d{9})\.pt$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (one-line message naming the file)."""


def checkpoint_steps(folder: str | os.PathLike) -> list[int]:
    """Steps of the checkpoints in ``folder``, oldest first."""
    path = Path(folder)
    if not path.is_dir():
        return []
    return sorted(int(m.group(1)) for m in (PATTERN.match(p.name) for p in path.iterdir()) if m)


def checkpoint_path(folder: str | os.PathLike, step: int) -> Path:
    return Path(folder) / f"step-{int(step):09d}.pt"


class TrainingCheckpoint:
    """Save every ``every`` steps into ``folder`` (keeping the last ``keep``); restore the latest."""

    def __init__(
        self,
        folder: str | os.PathLike,
        every: int,
        *,
        fingerprint: dict[str, Any],
        resume: bool = False,
        states: dict[str, Any] | None = None,
        generators: dict[str, torch.Generator | None] | None = None,
        keep: int = 2,
    ) -> None:
        if every < 0:
            raise ValueError(f"checkpoint_every: must be >= 0, got {every}")
        self.folder, self.every, self.keep = Path(folder), int(every), max(1, int(keep))
        self.fingerprint, self.resume = fingerprint, bool(resume)
        self.attach(states or {}, generators or {})
        self.last_saved = 0

    def attach(self, states: dict[str, Any], generators: dict[str, torch.Generator | None]) -> None:
        """Name the objects to save and restore (a training loop that builds its own optimizer calls this)."""
        self.states = {name: obj for name, obj in states.items() if obj is not None}
        self.generators = {name: gen for name, gen in generators.items() if gen is not None}

    def save(self, step: int, extra: dict[str, Any]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        document = {
            "step": int(step),
            "fingerprint": self.fingerprint,
            "extra": extra,
            "states": {name: obj.state_dict() for name, obj in self.states.items()},
            "generators": {name: gen.get_state() for name, gen in self.generators.items()},
        }
        path = checkpoint_path(self.folder, step)
        tmp = path.with_suffix(".tmp")
        torch.save(document, tmp)
        os.replace(tmp, path)  # a kill mid-write never leaves a half checkpoint under the real name
        for old in checkpoint_steps(self.folder)[: -self.keep]:
            checkpoint_path(self.folder, old).unlink(missing_ok=True)
        self.last_saved = int(step)
        return path

    def maybe_save(self, step: int, extra: dict[str, Any]) -> bool:
        """Save when ``every`` steps have passed since the last checkpoint."""
        if self.every and step - self.last_saved >= self.every:
            self.save(step, extra)
            return True
        return False

    def restore(self) -> tuple[int, dict[str, Any]]:
        """Load the latest checkpoint into the objects; (step, extra), or (0, {}) without one or
        when this run does not resume."""
        steps = checkpoint_steps(self.folder)
        if not steps or not self.resume:
            return 0, {}
        path = checkpoint_path(self.folder, steps[-1])
        try:
            document = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unreadable file: one line, no traceback
            raise CheckpointError(f"{path}: cannot load ({str(exc).splitlines()[0][:200]})") from None
        if document.get("fingerprint") != self.fingerprint:
            raise CheckpointError(f"{path}: belongs to a different run (algorithm, config or data changed)")
        for name, obj in self.states.items():
            obj.load_state_dict(document["states"][name])
        for name, gen in self.generators.items():
            gen.set_state(document["generators"][name])
        self.last_saved = int(document["step"])
        return self.last_saved, document.get("extra", {})


def agent_checkpoint(
    folder: str | os.PathLike,
    every: int,
    resume: bool,
    agent: Any,
    sampler: Any,
    algo: str,
    config: Any,
    n_transitions: int,
    steps: int,
    eval_every: int,
) -> TrainingCheckpoint:
    """The checkpoint of an offline RL run: the agent (its networks, targets included), its
    optimizer, the batch sampler's generator and the agent's own noise generator, if any."""
    from merlion_core.config import to_dict

    return TrainingCheckpoint(
        folder,
        every,
        resume=resume,
        states={"agent": agent, "optimizer": agent.optimizer},
        generators={"sampler": sampler.generator, "agent": getattr(agent, "generator", None)},
        fingerprint={
            "algo": algo,
            "config": to_dict(config),
            "n_transitions": int(n_transitions),
            "steps": int(steps),
            "eval_every": int(eval_every),
        },
    )


def encoder_checkpoint(
    folder: str | os.PathLike, every: int, resume: bool, method: str, config: Any, n_transitions: int
) -> TrainingCheckpoint:
    """The checkpoint of a representation run; its training loop attaches the model, optimizer,
    learning-rate schedule and batch generator it builds."""
    from merlion_core.config import to_dict

    return TrainingCheckpoint(
        folder,
        every,
        resume=resume,
        fingerprint={"method": method, "config": to_dict(config), "n_transitions": int(n_transitions)},
    )
