"""MERLION: pseudometric-based action representations (paper 4.2, Algorithm 2, A.3).

``fit`` trains the encoder phi and the three models of Algorithm 2 jointly for ``steps``
gradient steps; ``train_steps`` is the same loop as a generator (the app and the CLI show
its progress); ``warm_start`` continues an existing encoder with a new p and tau for a few
hundred steps, yielding intermediate embeddings (the app's sliders).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from merlion_core.data.dataset import TransitionDataset
from merlion_core.models.cuda_graph import CapturedStep
from merlion_core.models.encoder import ActionEncoder
from merlion_core.models.heads import BehaviourModel, RewardModel, TransitionModel
from merlion_core.models.mlp import host_to_device, resolve_device
from merlion_core.representation import losses
from merlion_core.representation.base import FLOAT_BYTES, MetricWindow, ProgressFn, Representation, check_bytes

REWARD_TARGETS = ("sampled", "model")
BEHAVIOUR_LOSSES = ("full", "sampled")
BEHAVIOUR_HIDDEN = 64
"""Width of G's last hidden layer (the rows of its |A|-way output layer)."""


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
    behaviour_loss: str = "full"
    """J(G) of Eq. 26: 'full' = exact softmax over all |A| (the paper), 'sampled' = sampled softmax (K negatives)."""
    behaviour_samples: int = 1024
    """K: negatives drawn uniformly per step (shared by the batch) when behaviour_loss is 'sampled'."""
    behaviour_chunk: int = 16_384
    """Actions per chunk of the exact max_a G(a|s) scan that I_hat of Eq. 7 needs when behaviour_loss is 'sampled'."""
    sparse_tables: bool = False
    """Train phi's action-id table (and G's output rows if 'sampled') by sparse gradients and lazy Adam (SparseAdam)."""
    max_table_bytes: int = 2**32
    """Cap on one per-action allocation (action tables with Adam state, G's [B, |A|] logits, embed_all); 0 = none."""

    def __post_init__(self) -> None:
        if self.reward_target not in REWARD_TARGETS:
            raise ValueError(f"reward_target: one of {', '.join(REWARD_TARGETS)}, got {self.reward_target!r}")
        if self.behaviour_loss not in BEHAVIOUR_LOSSES:
            raise ValueError(f"behaviour_loss: one of {', '.join(BEHAVIOUR_LOSSES)}, got {self.behaviour_loss!r}")
        for name, least in (("behaviour_samples", 1), ("behaviour_chunk", 1), ("max_table_bytes", 0)):
            if getattr(self, name) < least:
                raise ValueError(f"{name}: must be >= {least}, got {getattr(self, name)}")


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
        self.max_table_bytes = config.max_table_bytes or None
        table_bytes = 4 * n_actions * (config.action_embed_dim + BEHAVIOUR_HIDDEN + 1) * FLOAT_BYTES  # + grad, moments
        check_bytes(
            "max_table_bytes", f"MERLION's action tables for {n_actions} actions", table_bytes, self.max_table_bytes
        )
        hidden = (config.hidden, config.hidden)
        self.encoder = ActionEncoder(n_actions, obs_dim, config.dim, config.action_embed_dim, hidden)
        self.encoder.action_table.sparse = config.sparse_tables
        self.transition_model = TransitionModel(obs_dim, config.dim, hidden)
        self.reward_model = RewardModel(obs_dim, config.dim, hidden)
        self.behaviour_model = BehaviourModel(obs_dim, n_actions, (config.hidden, BEHAVIOUR_HIDDEN))

    def embed(self, obs_BS: torch.Tensor, act_B: torch.Tensor) -> torch.Tensor:
        return self.encoder(obs_BS, act_B)

    def embed_chunk(self, obs_BS: torch.Tensor, actions_C: torch.Tensor) -> torch.Tensor:
        return self.encoder.embed_chunk(obs_BS, actions_C)

    def chunk_bytes(self, n_states: int, n_actions: int) -> int:
        """phi's [B, C, hidden] activations (three at most alive) and the [B, C, dim] output."""
        return n_states * n_actions * (3 * self.config.hidden + self.dim) * FLOAT_BYTES

    @torch.no_grad()
    def relative_behaviour_probs(self, obs_BS: torch.Tensor) -> torch.Tensor:
        """G(a|s) / max_a' G(a'|s) for every action: [B, A] in (0, 1]."""
        needed = 2 * obs_BS.shape[0] * self.n_actions * FLOAT_BYTES
        check_bytes("max_table_bytes", f"G's logits at {obs_BS.shape[0]} states", needed, self.max_table_bytes)
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


def sampled_behaviour_terms(
    rep: MerlionRepresentation, obs, act_i, act_j, negatives_K, config: MerlionConfig, train_models: bool
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """J(G) by the sampled softmax (:func:`losses.sampled_softmax_loss`; None unless ``train_models``), the
    exact I_hat(a_j | s) of Eq. 7 (:func:`losses.ood_indicator_bounded` over G's bounds and chunked max) and
    the share of rows scanned. Choosing rows syncs with the device: on CUDA the step runs eagerly."""
    if negatives_K is None:
        raise ValueError("merlion_losses: behaviour_loss='sampled' needs negatives_K (uniformly drawn action ids)")
    model, sparse = rep.behaviour_model, config.sparse_tables
    with torch.set_grad_enabled(train_models and torch.is_grad_enabled()):
        h_BH = model.features(obs)
        logit_i = model.pair_logits(h_BH, act_i, sparse)
        negative_BK = model.logits_of(h_BH, negatives_K, sparse)
    loss = losses.sampled_softmax_loss(logit_i, negative_BK, act_i, negatives_K, rep.n_actions)
    with torch.no_grad():
        h_BH = h_BH.detach()
        logit_j = model.pair_logits(h_BH, act_j)
        lower = torch.maximum(torch.maximum(logit_i.detach(), logit_j), negative_BK.detach().amax(dim=1))
        row_max = lambda rows_R: model.chunked_max_logit(h_BH[rows_R], config.behaviour_chunk)  # noqa: E731

        def upper(rows_R: torch.Tensor) -> torch.Tensor:  # tried on a schedule: BehaviourModel.upper_bound_due
            bound_R = model.max_logit_upper_bound(h_BH[rows_R])
            model.record_upper_bound(int((logit_j[rows_R] - bound_R > math.log(config.tau)).sum()))
            return bound_R

        due = model.upper_bound_due()
        ood_j, scanned = losses.ood_indicator_bounded(logit_j, lower, upper if due else None, config.tau, row_max)
    return (loss if train_models else None), ood_j, scanned


def merlion_losses(
    rep: MerlionRepresentation,
    obs,
    act_i,
    rew_i,
    next_obs,
    act_j,
    config: MerlionConfig,
    train_models: bool = True,
    negatives_K: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """One step of Algorithm 2: the encoder loss (Eq. 6) and the model losses (Eq. 26).

    ``negatives_K``: the sampled softmax's uniform action ids (needed when ``config.behaviour_loss`` is 'sampled')."""
    rew_i = rew_i * config.reward_scale
    b = obs.shape[0]
    obs_ij = torch.cat([obs, obs])
    e_ij = rep.encoder(obs_ij, torch.cat([act_i, act_j]))  # one pass for e_i and e_j
    e_i, e_j = e_ij[:b], e_ij[b:]
    full = config.behaviour_loss == "full"
    with torch.set_grad_enabled(train_models and torch.is_grad_enabled()):
        # one pass of each model over both actions; the d_hat target below only ever sees
        # these outputs detached, which equals feeding the models stop-gradient e_bar (Eq. 7)
        mu, std = rep.transition_model(obs_ij, e_ij)
        r_hat = rep.reward_model(obs_ij, e_ij)
        logits = rep.behaviour_model(obs) if full else None
    scanned = None  # 'sampled': the share of rows whose exact max G-logit was scanned
    if logits is not None:
        behaviour_loss, max_logit = losses.behaviour_loss_and_max_logit(logits, act_i) if train_models else (None, None)
        with torch.no_grad():
            ood_j = losses.ood_indicator(logits.detach(), act_j, config.tau, max_logit)
    else:
        behaviour_loss, ood_j, scanned = sampled_behaviour_terms(
            rep, obs, act_i, act_j, negatives_K, config, train_models
        )
    with torch.no_grad():
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
    if scanned is not None:
        out["max_scan_share"] = scanned
    return out


def check_step_memory(config: MerlionConfig, n_actions: int) -> None:
    """MemoryCapError when one step's per-action tensors pass ``config.max_table_bytes``: 'full' holds G's
    [B, |A|] logits, exponentials and gradient; 'sampled' [B, K] blocks and one [B, behaviour_chunk] block."""
    b = config.batch_size
    if config.behaviour_loss == "full":
        what, needed = f"G's full softmax over {n_actions} actions (try behaviour_loss='sampled')", 3 * b * n_actions
    else:
        what, needed = "G's sampled softmax and max scan", b * (3 * config.behaviour_samples + config.behaviour_chunk)
    check_bytes("max_table_bytes", what, needed * FLOAT_BYTES, config.max_table_bytes or None)


def sparse_parameters(rep: MerlionRepresentation, config: MerlionConfig, train_models: bool) -> list[nn.Parameter]:
    """The parameters that get sparse gradients under ``config.sparse_tables``: phi's action-id table and,
    when G is trained with the sampled softmax, its output rows W (its bias stays dense)."""
    if not config.sparse_tables:
        return []
    found = [cast(nn.Parameter, rep.encoder.action_table.weight)]
    if train_models and config.behaviour_loss == "sampled":
        found.append(cast(nn.Parameter, rep.behaviour_model.output.weight))
    return found


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
    (models/cuda_graph.py); the learning rate is then a device tensor the scheduler fills.
    With ``config.sparse_tables`` the parameters of :func:`sparse_parameters` are stepped by
    ``torch.optim.SparseAdam`` (lazy Adam: moments of untouched rows wait), the rest by Adam."""
    check_step_memory(config, rep.n_actions)
    dev = resolve_device(device)
    rep.to(dev).train()
    data = dataset_tensors(dataset, dev)
    n = data["act"].shape[0]
    params = list(rep.parameters()) if train_models else list(rep.encoder.parameters())
    sparse = sparse_parameters(rep, config, train_models)
    params = [p for p in params if all(p is not q for q in sparse)]
    sampled = config.behaviour_loss == "sampled"
    graphed = cuda_graph and dev.type == "cuda"
    optimizer = (
        torch.optim.Adam(params, lr=torch.tensor(config.lr, device=dev), fused=True, capturable=True)
        if graphed
        else torch.optim.Adam(params, lr=config.lr, fused=True)
    )
    generator = torch.Generator().manual_seed(config.seed + (0 if train_models else 1))
    total = config.steps if steps is None else steps
    optimizers = [optimizer, torch.optim.SparseAdam(sparse, lr=config.lr)] if sparse else [optimizer]
    schedulers = [
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, total, eta_min=0.1 * config.lr)
        for opt in (optimizers if config.lr_decay else [])
    ]
    window = MetricWindow()
    start = 0
    if checkpoint is not None:  # merlion_core.checkpoints.TrainingCheckpoint: saves at log points, resumes
        states: dict[str, Any] = dict(zip(("optimizer", "sparse_optimizer"), optimizers, strict=False))
        states |= dict(zip(("scheduler", "sparse_scheduler"), schedulers, strict=False))
        checkpoint.attach({"rep": rep, **states}, {"batches": generator})
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
            batch.get("negatives"),
        )
        loss = sum(v for k, v in terms.items() if k.endswith("_loss"))
        if not isinstance(loss, torch.Tensor):  # sum() of no terms is the int 0
            raise RuntimeError("merlion: no loss terms to minimise")
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in optimizers:
            opt.step()
        return terms

    step_fn = CapturedStep(gradient_step, dev, enabled=graphed, params=(*params, *sparse))
    for step in range(start + 1, total + 1):
        idx = torch.randint(0, n, (config.batch_size,), generator=generator)
        act_j = torch.randint(0, rep.n_actions, (config.batch_size,), generator=generator)
        batch = {"idx": host_to_device(idx, dev), "act_j": host_to_device(act_j, dev)}
        if sampled:  # drawn after act_j, so 'full' keeps its stream of batches
            negatives = torch.randint(0, rep.n_actions, (config.behaviour_samples,), generator=generator)
            batch["negatives"] = host_to_device(negatives, dev)
        window.add(step_fn(batch))
        for scheduler in schedulers:
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
