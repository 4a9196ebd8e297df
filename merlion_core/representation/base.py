"""The one interface every action representation implements.

Downstream code (latent offline RL, lookup, diagnostics, the app) only ever sees a
:class:`Representation`: ``embed(obs_BS, act_B) -> e_BD`` for logged actions and
``embed_all(obs_BS) -> e_BAD`` for every action at once (chunked over actions, so memory
stays bounded for large action sets). State-independent representations simply ignore
the state. A representation is an ``nn.Module``: its weights are its ``state_dict``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

DEFAULT_CHUNK = 1024
FLOAT_BYTES = 4
"""Bytes of one float32: the element size the memory caps count in."""


class MemoryCapError(ValueError):
    """An allocation would pass a configured memory cap (raised before allocating, instead of an
    out-of-memory crash); the message names the cap's field and the size needed."""


def check_bytes(field: str, what: str, needed: int, cap: int | None) -> None:
    """Raise :class:`MemoryCapError` when ``needed`` bytes for ``what`` pass ``cap`` (None or 0: no cap)."""
    if cap and needed > cap:
        raise MemoryCapError(
            f"{what} needs {needed} bytes ({needed / 2**20:.1f} MiB), over {field}={cap} "
            f"({cap / 2**20:.1f} MiB): raise {field} or use fewer states / smaller chunks"
        )


class Representation(nn.Module):
    """Base class: phi(a; s) -> e in R^dim for a finite action set of ``n_actions``."""

    method: str = "base"
    max_table_bytes: int | None = None
    """Cap on one per-action allocation (``embed_all``'s [B, A, D] plus a chunk's work); None: no cap."""

    def __init__(self, n_actions: int, obs_dim: int, dim: int) -> None:
        super().__init__()
        self.n_actions = int(n_actions)
        self.obs_dim = int(obs_dim)
        self.dim = int(dim)

    def embed(self, obs_BS: torch.Tensor, act_B: torch.Tensor) -> torch.Tensor:
        """e_BD: the representation of each (state, action) pair."""
        raise NotImplementedError

    def embed_chunk(self, obs_BS: torch.Tensor, actions_C: torch.Tensor) -> torch.Tensor:
        """e_BCD: the representations of the actions ``actions_C`` at every state.

        The default repeats the states; subclasses override it with something cheaper.
        """
        b, c = obs_BS.shape[0], actions_C.shape[0]
        obs = obs_BS[:, None, :].expand(b, c, obs_BS.shape[1]).reshape(b * c, -1)
        act = actions_C[None, :].expand(b, c).reshape(-1)
        return self.embed(obs, act).reshape(b, c, self.dim)

    def chunk_bytes(self, n_states: int, n_actions: int) -> int:
        """Bytes :meth:`embed_chunk` holds at most for ``n_states`` x ``n_actions`` (an estimate for the
        memory caps: the default counts the repeated states and the output)."""
        return n_states * n_actions * (self.obs_dim + self.dim) * FLOAT_BYTES

    def embed_all(self, obs_BS: torch.Tensor, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
        """e_BAD: every action's representation at every state, computed ``chunk`` actions at a time.

        Raises :class:`MemoryCapError` first when the table and one chunk's work pass ``max_table_bytes``."""
        b = obs_BS.shape[0]
        needed = b * self.n_actions * self.dim * FLOAT_BYTES + self.chunk_bytes(b, min(chunk, self.n_actions))
        check_bytes(
            "max_table_bytes", f"embed_all of {b} states x {self.n_actions} actions", needed, self.max_table_bytes
        )
        device = obs_BS.device
        parts = [
            self.embed_chunk(obs_BS, torch.arange(start, min(start + chunk, self.n_actions), device=device))
            for start in range(0, self.n_actions, chunk)
        ]
        return torch.cat(parts, dim=1)


ProgressFn = Callable[[int, dict[str, float]], None]
"""Training progress: called with (step, metrics) every few steps."""


def iterate_minibatches(n: int, batch_size: int, steps: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """``steps`` index batches drawn uniformly with replacement from range(n)."""
    for _ in range(steps):
        yield torch.randint(0, n, (batch_size,), generator=generator)


def describe(rep: Representation) -> dict[str, Any]:
    return {"method": rep.method, "n_actions": rep.n_actions, "obs_dim": rep.obs_dim, "dim": rep.dim}


class MetricWindow:
    """Means of per-step loss terms since the last report (kept as tensors: no sync per step)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor | float] = {}
        self.count = 0

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        for key, value in terms.items():
            self.sums[key] = self.sums.get(key, 0.0) + value.detach()
        self.count += 1

    def flush(self) -> dict[str, float]:
        means = {key: float(value) / max(self.count, 1) for key, value in self.sums.items()}
        self.sums, self.count = {}, 0
        return means


def train_loop(
    rep: nn.Module,
    loss_fn: Callable[[Any, torch.Generator], dict[str, torch.Tensor]],
    n: int,
    config: Any,
    progress: ProgressFn | None = None,
    report_every: int = 100,
    checkpoint: Any = None,
) -> dict[str, float]:
    """Adam (``config.lr``) on ``loss_fn(indices, generator)["loss"]`` for ``config.steps`` uniformly
    sampled minibatches of ``config.batch_size``; returns the last window's mean metrics.

    ``checkpoint`` (merlion_core.checkpoints.TrainingCheckpoint) saves at report points and resumes."""
    optimizer = torch.optim.Adam(rep.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    metrics: dict[str, float] = {}
    window = MetricWindow()
    start = 0
    if checkpoint is not None:
        checkpoint.attach({"rep": rep, "optimizer": optimizer}, {"batches": generator})
        start = checkpoint.restore()[0]
    for step, idx in enumerate(iterate_minibatches(n, config.batch_size, config.steps - start, generator), start + 1):
        parts = loss_fn(idx.numpy(), generator)
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        optimizer.step()
        window.add(parts)  # metrics are means over the steps since the last report
        if step % report_every == 0 or step == config.steps:
            metrics = window.flush()
            if checkpoint is not None:
                checkpoint.maybe_save(step, {})
            if progress is not None:
                progress(step, dict(metrics))
    if not metrics and progress is not None:
        progress(0, {})
    return metrics
