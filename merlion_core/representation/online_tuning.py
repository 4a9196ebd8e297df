"""Fine-tuning a MERLION representation while an agent acts with it (MERLION paper, App. A.6, uses
Chandak et al.'s (2019) online scheme, and Chandak et al. keep adapting the representation as data
comes in).

One tuning step is one step of Algorithm 2 on a replay minibatch instead of a dataset minibatch: the
encoder loss (Eq. 6) against the pseudometric target (Eq. 7), and the models' losses (Eq. 26), so the
reward, transition and behaviour models follow the data the agent now collects (G then models the
replay's own mix of actions, which the OOD indicator of Eq. 7 reads). The a_j of Eq. 7 are drawn
uniformly from A, as in offline training; with ``behaviour_loss='sampled'`` so are G's negatives.
Only MERLION representations are tuned (the others keep their own training code and stay fixed).
"""

from __future__ import annotations

from typing import Any

import torch

from merlion_core.models.mlp import host_to_device
from merlion_core.representation.base import Representation
from merlion_core.representation.merlion import (
    MerlionRepresentation,
    check_step_memory,
    merlion_losses,
    sparse_parameters,
)

PREFIX = "tune_"
"""Prefix of the tuning step's loss parts in a run's metrics (tune_encoder_loss, tune_ood_share, ...)."""


def check_tunable(rep: Representation, field: str) -> MerlionRepresentation:
    """The representation if online tuning supports it, else a one-line ValueError naming ``field``."""
    if not isinstance(rep, MerlionRepresentation):
        raise ValueError(
            f"{field}: online fine-tuning is built for MERLION representations only; "
            f"the {getattr(rep, 'method', type(rep).__name__)} representation stays fixed (set it to 0)"
        )
    return rep


class ReplayTuner:
    """Gradient steps of Algorithm 2's losses on minibatches ``(obs, act, rew, next_obs)`` (any object
    with those tensor attributes, e.g. :class:`~merlion_core.data.sampler.Batch`), with its own Adam
    (SparseAdam for the sparse tables under ``sparse_tables``) at learning rate ``lr`` and its own
    seeded stream for the uniform a_j and G's negatives. The representation is left in eval mode."""

    def __init__(self, rep: Representation, lr: float, seed: int, field: str = "encoder_updates_per_step") -> None:
        if not lr > 0:
            raise ValueError(f"ReplayTuner: lr must be > 0, got {lr}")
        self.rep = check_tunable(rep, field)
        config = self.rep.config
        check_step_memory(config, self.rep.n_actions)
        for parameter in self.rep.parameters():
            parameter.requires_grad_(True)
        sparse = sparse_parameters(self.rep, config, train_models=True)
        dense = [p for p in self.rep.parameters() if all(p is not q for q in sparse)]
        self.optimizers: list[torch.optim.Optimizer] = [torch.optim.Adam(dense, lr=lr)]
        if sparse:
            self.optimizers.append(torch.optim.SparseAdam(sparse, lr=lr))
        self.generator = torch.Generator().manual_seed(int(seed))
        self.steps = 0
        """Tuning steps taken."""

    def step(self, batch: Any) -> dict[str, torch.Tensor]:
        """One tuning step; returns its detached loss parts, each name prefixed by :data:`PREFIX`."""
        rep, config = self.rep, self.rep.config
        device = batch.obs.device
        b = batch.obs.shape[0]
        act_j = host_to_device(torch.randint(0, rep.n_actions, (b,), generator=self.generator), device)
        negatives = None
        if config.behaviour_loss == "sampled":
            drawn = torch.randint(0, rep.n_actions, (config.behaviour_samples,), generator=self.generator)
            negatives = host_to_device(drawn, device)
        rep.train()
        try:
            with torch.enable_grad():
                terms = merlion_losses(
                    rep, batch.obs, batch.act, batch.rew, batch.next_obs, act_j, config, True, negatives
                )
                loss = sum(v for k, v in terms.items() if k.endswith("_loss"))
                if not isinstance(loss, torch.Tensor):
                    raise RuntimeError("ReplayTuner: no loss terms to minimise")
                for optimizer in self.optimizers:
                    optimizer.zero_grad(set_to_none=True)
                loss.backward()
                for optimizer in self.optimizers:
                    optimizer.step()
        finally:
            rep.eval()
        self.steps += 1
        return {PREFIX + k: v.detach() for k, v in terms.items()}
