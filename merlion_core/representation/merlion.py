"""MERLION: pseudometric-based action representations (paper 4.2, Algorithm 2, A.3).

``fit`` trains the encoder phi and the three models of Algorithm 2 jointly for ``steps``
gradient steps; ``train_steps`` is the same loop as a generator (the app and the CLI show
its progress); ``warm_start`` continues an existing encoder with a new p and tau for a few
hundred steps, yielding intermediate embeddings (the app's sliders).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from merlion_core.data.dataset import TransitionDataset
from merlion_core.models.cuda_graph import CapturedStep
from merlion_core.models.encoder import ActionEncoder
from merlion_core.models.heads import BehaviourModel, RewardModel, TransitionModel
from merlion_core.models.mlp import host_to_device, resolve_device
from merlion_core.representation import losses
from merlion_core.representation.base import MetricWindow, ProgressFn, Representation

REWARD_TARGETS = ("sampled", "model")


@dataclass(frozen=True)
class MerlionConfig:
    """MERLION representation learning (paper A.3 defaults; per-env dim and p in PAPER_ENV_DEFAULTS)."""

    dim: int = 2
    """|E|: dimension of the action representation (maze 2, multi-step maze 2, recommender 10, dialogue 30)."""
    p: float = 0.01
    """p: out-of-distribution penalty of Eq. 4/7 (maze 0.01, multi-step 0.1, recommender 0.1, dialogue 0.3)."""
    tau: float = 0.3
    """tau: I_hat(a|s) = 1 when G(a|s) / max G <= tau (paper: 0.3 best)."""
    gamma: float = 0.99
    """gamma: discount weighting the W2 term of Eq. 7."""
    steps: int = 10_000
    """T: gradient steps of Algorithm 2 (paper: 10,000)."""
    batch_size: int = 128
    """Batch size (paper: 128)."""
    lr: float = 1e-3
    """Adam learning rate of every model (paper: 1e-2, which diverges or stays flat here: docs/deviations.md)."""
    reward_scale: float = 1.0
    """Factor on rewards inside R_hat and d_hat (1 = the paper; see docs/deviations.md)."""
    reward_target: str = "sampled"
    """r_i of Eq. 7: 'sampled' = the logged reward (the paper), 'model' = R_hat(s, e_bar_i) (noise-free)."""
    hidden: int = 128
    """Hidden width of the encoder and the models."""
    action_embed_dim: int = 32
    """Width of the action-id embedding inside phi."""
    seed: int = 0
    """Seed of initialisation and sampling."""
    lr_decay: bool = True
    """Cosine-anneal the learning rate to 10% over the run (False = constant, as the paper)."""
    log_every: int = 100
    """Report metrics every this many steps."""

    def __post_init__(self) -> None:
        if self.reward_target not in REWARD_TARGETS:
            raise ValueError(f"reward_target: one of {', '.join(REWARD_TARGETS)}, got {self.reward_target!r}")


PAPER_ENV_DEFAULTS: dict[str, dict[str, float]] = {
    # dim and p from the paper (A.3); reward_scale brings the mazes' +100/-20 rewards to O(1) and
    # damps the recommender's random 0-or-length watch rewards (docs/deviations.md)
    "merlion/Maze-v0": {"dim": 2, "p": 0.01, "reward_scale": 0.01},
    "merlion/MultiStepMaze-v0": {"dim": 2, "p": 0.1, "reward_scale": 0.001},
    "merlion/Recommender-v0": {"dim": 10, "p": 0.1, "reward_scale": 0.1},
    "merlion/Dialogue-v0": {"dim": 30, "p": 0.3},
}


def config_for_env(env_id: str | None, **overrides) -> MerlionConfig:
    """The paper's per-environment dim and p, then ``overrides``."""
    return MerlionConfig(**{**PAPER_ENV_DEFAULTS.get(env_id or "", {}), **overrides})


class MerlionRepresentation(Representation):
    """phi(a; s) plus the models it was trained with (kept for warm starts and diagnostics)."""

    method = "merlion"
    step_mode: str
    """How the last :func:`train_steps` ran its gradient steps (set when it finishes; models/cuda_graph.py)."""

    def __init__(self, config: MerlionConfig, n_actions: int, obs_dim: int) -> None:
        super().__init__(n_actions, obs_dim, config.dim)
        self.config = config
        hidden = (config.hidden, config.hidden)
        self.encoder = ActionEncoder(n_actions, obs_dim, config.dim, config.action_embed_dim, hidden)
        self.transition_model = TransitionModel(obs_dim, config.dim, hidden)
        self.reward_model = RewardModel(obs_dim, config.dim, hidden)
        self.behaviour_model = BehaviourModel(obs_dim, n_actions, (config.hidden, 64))

    def embed(self, obs_BS: torch.Tensor, act_B: torch.Tensor) -> torch.Tensor:
        return self.encoder(obs_BS, act_B)

    def embed_chunk(self, obs_BS: torch.Tensor, actions_C: torch.Tensor) -> torch.Tensor:
        return self.encoder.embed_chunk(obs_BS, actions_C)

    @torch.no_grad()
    def relative_behaviour_probs(self, obs_BS: torch.Tensor) -> torch.Tensor:
        """G(a|s) / max_a' G(a'|s) for every action: [B, A] in (0, 1]."""
        logits = self.behaviour_model(obs_BS)
        return torch.exp(logits - logits.max(dim=1, keepdim=True).values)


def build(config: MerlionConfig, n_actions: int, obs_dim: int) -> MerlionRepresentation:
    """An untrained MERLION representation, initialised from ``config.seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return MerlionRepresentation(config, n_actions, obs_dim)


def dataset_tensors(dataset: TransitionDataset, device: torch.device) -> dict[str, torch.Tensor]:
    """The dataset's arrays as tensors on ``device`` (copied once)."""
    return {
        "obs": torch.tensor(np.asarray(dataset.observations), device=device),
        "act": torch.tensor(np.asarray(dataset.actions), device=device),
        "rew": torch.tensor(np.asarray(dataset.rewards), device=device),
        "next_obs": torch.tensor(np.asarray(dataset.next_observations), device=device),
    }


def merlion_losses(
    rep: MerlionRepresentation, obs, act_i, rew_i, next_obs, act_j, config: MerlionConfig, train_models: bool = True
) -> dict[str, torch.Tensor]:
    """One step of Algorithm 2: the encoder loss (Eq. 6) and the model losses (Eq. 26)."""
    rew_i = rew_i * config.reward_scale
    b = obs.shape[0]
    obs_ij = torch.cat([obs, obs])
    e_ij = rep.encoder(obs_ij, torch.cat([act_i, act_j]))  # one pass for e_i and e_j
    e_i, e_j = e_ij[:b], e_ij[b:]
    with torch.set_grad_enabled(train_models and torch.is_grad_enabled()):
        # one pass of each model over both actions; the d_hat target below only ever sees
        # these outputs detached, which equals feeding the models stop-gradient e_bar (Eq. 7)
        mu, std = rep.transition_model(obs_ij, e_ij)
        r_hat = rep.reward_model(obs_ij, e_ij)
        logits = rep.behaviour_model(obs)
    behaviour_loss, max_logit = losses.behaviour_loss_and_max_logit(logits, act_i) if train_models else (None, None)
    with torch.no_grad():
        ood_j = losses.ood_indicator(logits.detach(), act_j, config.tau, max_logit)
        w2_ij = losses.w2_diagonal_gaussians(mu[:b].detach(), std[:b].detach(), mu[b:].detach(), std[b:].detach())
        r_i = r_hat[:b].detach() if config.reward_target == "model" else rew_i
        d_hat = losses.pseudometric_target(r_i, r_hat[b:].detach(), w2_ij, ood_j, config.gamma, config.p)
    out = {"encoder_loss": losses.encoder_loss(e_i, e_j, d_hat)}
    if behaviour_loss is not None:  # train_models
        out["transition_loss"] = losses.transition_loss(mu[:b], std[:b], next_obs)
        out["reward_loss"] = losses.reward_loss(r_hat[:b], rew_i)
        out["behaviour_loss"] = behaviour_loss
    out["ood_share"] = ood_j.mean()
    out["d_hat_mean"] = d_hat.mean()
    return out


def train_steps(
    rep: MerlionRepresentation,
    dataset: TransitionDataset,
    config: MerlionConfig,
    *,
    device: str = "auto",
    train_models: bool = True,
    steps: int | None = None,
    checkpoint: Any = None,
    cuda_graph: bool = True,
) -> Iterator[tuple[int, dict[str, float]]]:
    """Algorithm 2 as a generator of (step, metrics) every ``config.log_every`` steps and at the end.

    On CUDA with ``cuda_graph``, each step after the third is one replayed CUDA graph
    (models/cuda_graph.py); the learning rate is then a device tensor the scheduler fills."""
    dev = resolve_device(device)
    rep.to(dev).train()
    data = dataset_tensors(dataset, dev)
    n = data["act"].shape[0]
    params = list(rep.parameters()) if train_models else list(rep.encoder.parameters())
    graphed = cuda_graph and dev.type == "cuda"
    optimizer = (
        torch.optim.Adam(params, lr=torch.tensor(config.lr, device=dev), fused=True, capturable=True)
        if graphed
        else torch.optim.Adam(params, lr=config.lr, fused=True)
    )
    generator = torch.Generator().manual_seed(config.seed + (0 if train_models else 1))
    total = config.steps if steps is None else steps
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total, eta_min=0.1 * config.lr)
        if config.lr_decay
        else None
    )
    window = MetricWindow()
    start = 0
    if checkpoint is not None:  # merlion_core.checkpoints.TrainingCheckpoint: saves at log points, resumes
        checkpoint.attach({"rep": rep, "optimizer": optimizer, "scheduler": scheduler}, {"batches": generator})
        start = checkpoint.restore()[0]

    def gradient_step(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        idx = batch["idx"]
        terms = merlion_losses(
            rep,
            data["obs"][idx],
            data["act"][idx],
            data["rew"][idx],
            data["next_obs"][idx],
            batch["act_j"],
            config,
            train_models,
        )
        loss = sum(v for k, v in terms.items() if k.endswith("_loss"))
        if not isinstance(loss, torch.Tensor):  # sum() of no terms is the int 0
            raise RuntimeError("merlion: no loss terms to minimise")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return terms

    step_fn = CapturedStep(gradient_step, dev, enabled=graphed, params=tuple(params))
    for step in range(start + 1, total + 1):
        idx = torch.randint(0, n, (config.batch_size,), generator=generator)
        act_j = torch.randint(0, rep.n_actions, (config.batch_size,), generator=generator)
        window.add(step_fn({"idx": host_to_device(idx, dev), "act_j": host_to_device(act_j, dev)}))
        if scheduler is not None:
            scheduler.step()
        if step % config.log_every == 0 or step == total:
            metrics = window.flush()
            if checkpoint is not None:
                checkpoint.maybe_save(step, {})
            yield step, metrics
    rep.eval()
    rep.step_mode = step_fn.status


def fit(
    dataset: TransitionDataset,
    config: MerlionConfig,
    *,
    device: str = "auto",
    progress: ProgressFn | None = None,
    checkpoint: Any = None,
) -> tuple[MerlionRepresentation, dict[str, float]]:
    """Train a MERLION representation on ``dataset`` (Algorithm 2)."""
    rep = build(config, dataset.n_actions, dataset.obs_dim)
    metrics: dict[str, float] = {}
    for step, metrics in train_steps(rep, dataset, config, device=device, checkpoint=checkpoint):
        if progress is not None:
            progress(step, metrics)
    return rep, metrics


@dataclass(frozen=True)
class WarmStartUpdate:
    """An intermediate state of a warm start."""

    step: int
    metrics: dict[str, float]
    embeddings: np.ndarray | None  # e[B, A, d] at the requested states, when requested


def warm_start(
    rep: MerlionRepresentation,
    dataset: TransitionDataset,
    *,
    p: float,
    tau: float,
    steps: int = 300,
    yield_every: int = 50,
    states: np.ndarray | None = None,
    device: str = "auto",
    seed: int = 0,
) -> Iterator[WarmStartUpdate]:
    """Continue training the encoder with a new p and tau (models frozen), yielding as it goes."""
    config = dataclasses.replace(rep.config, p=p, tau=tau, log_every=yield_every, seed=seed)
    rep.config = config
    dev = resolve_device(device)
    obs = None if states is None else torch.as_tensor(np.asarray(states, dtype=np.float32), device=dev)
    for step, metrics in train_steps(rep, dataset, config, device=device, train_models=False, steps=steps):
        embeddings = None
        if obs is not None:
            with torch.no_grad():
                embeddings = rep.embed_all(obs).cpu().numpy()
        yield WarmStartUpdate(step, metrics, embeddings)


def module_parameters(rep: MerlionRepresentation) -> dict[str, list[nn.Parameter]]:
    """Parameters by model, for gradient-flow checks."""
    return {
        name: list(getattr(rep, name).parameters())
        for name in ("encoder", "transition_model", "reward_model", "behaviour_model")
    }
