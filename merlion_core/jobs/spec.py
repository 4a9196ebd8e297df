"""Job specs: a kind, its config (one frozen dataclass per kind, JSON in the store) and a seed.

Each kind maps to one pipeline entry point (see ``merlion_core.jobs.runner``). Configs are
checked when a job is submitted (unknown keys, wrong types, missing inputs), so a typo fails
at ``merlion jobs submit`` and not minutes later in a worker. Input paths are made absolute at
submission, because the worker may run elsewhere (another folder, a Ray node).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from merlion_core.config import ConfigError, from_dict, to_dict
from merlion_core.models.precision import PRECISIONS


@dataclass(frozen=True)
class CollectJob:
    """``collect``: a logged dataset (merlion_core.data.collect.collect + save_dataset)."""

    env: str = "maze"
    """Environment: short name (maze, multistep-maze) or full id."""
    behaviour: str = "medium"
    """Behaviour policy pi_beta: expert, medium or random."""
    noise: float = 0.5
    """Share of actions replaced by uniform random ones."""
    n: int = 100_000
    """Number of transitions N."""
    n_envs: int = 256
    """Environments stepped side by side."""
    env_config: dict[str, Any] | None = None
    """Env config overrides (a JSON object), or null for the env's defaults."""
    format: str = "native"
    """Output format of artifacts/dataset (native, npz, d4rl, minari, d3rlpy)."""


@dataclass(frozen=True)
class TrainEncoderJob:
    """``train-encoder``: an action representation (merlion_core.pipelines.train_encoder)."""

    dataset: str = ""
    """Dataset path (any supported format)."""
    method: str = "merlion"
    """Representation method (merlion, merlion-no-p, cvae, rand1, rand2, transition, reconstruction, external)."""
    options: dict[str, Any] = field(default_factory=dict)
    """The method's config overrides (its seed is the job's seed)."""
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda[:N]."""
    precision: str = "auto"
    """Networks' precision in gradient steps: auto (bf16 where the CPU or GPU has bf16 matrix units), fp32, bf16."""
    checkpoint_every: int = 1000
    """Save a resumable checkpoint every K steps, at reporting points (0: never; methods that train)."""


@dataclass(frozen=True)
class TrainAgentJob:
    """``train-agent``: an offline RL agent with a learning curve (merlion_core.pipelines.agent.train_agent)."""

    dataset: str = ""
    """Dataset path (any supported format)."""
    algo: str = "bc"
    """Algorithm (bc, dcql, dbcq, cql, bcq)."""
    encoder: str | None = None
    """Representation folder (latent algorithms cql and bcq only)."""
    steps: int = 20_000
    """Gradient steps."""
    eval_every: int = 0
    """Evaluate every K steps (0: only at the end)."""
    eval_episodes: int = 20
    """Episodes per evaluation."""
    options: dict[str, Any] = field(default_factory=dict)
    """The algorithm's config overrides (its seed is the job's seed)."""
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda[:N]."""
    precision: str = "auto"
    """Networks' precision in gradient steps: auto (bf16 where the CPU or GPU has bf16 matrix units), fp32, bf16."""
    checkpoint_every: int = 1000
    """Save a resumable checkpoint every K steps, at logging points (0: never)."""
    holdout: float | None = None
    """Share of whole episodes kept out of training for off-policy evaluation (null: 0, or 0.2 without a simulator)."""
    holdout_seed: int = 0
    """Seed of the held-out episodes' choice (shared by every seed of a method, so their estimates compare)."""


@dataclass(frozen=True)
class TrainOnlineJob:
    """``train-online``: a latent agent trained online in a fixed representation's space
    (merlion_core.pipelines.online.train_online; progress counts env steps)."""

    encoder: str = ""
    """Representation folder (kept fixed while the agent trains)."""
    env: str | None = None
    """Environment: short name or id (null: the one the encoder records)."""
    env_config: dict[str, Any] | None = None
    """Env config overrides (a JSON object; those of the encoder's data), or null for the env's defaults."""
    options: dict[str, Any] = field(default_factory=dict)
    """algos.online.OnlineConfig fields (env_steps, n_envs, eval_every, ...) and LatentCQLConfig overrides
    (its seed is the job's seed)."""
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda[:N]."""
    precision: str = "auto"
    """Networks' precision in gradient steps: auto (bf16 where the CPU or GPU has bf16 matrix units), fp32, bf16."""


@dataclass(frozen=True)
class EvaluateJob:
    """``evaluate``: a saved agent in its environment (merlion_core.pipelines.agent.evaluate_agent)."""

    agent: str = ""
    """Agent folder from train-agent."""
    episodes: int = 50
    """Evaluation episodes (the env noise seed is the job's seed)."""


@dataclass(frozen=True)
class OPEJob:
    """``ope``: off-policy evaluation of a saved agent on logged episodes it never trained on
    (merlion_core.pipelines.ope.ope_agent)."""

    agent: str = ""
    """Agent folder from train-agent."""
    dataset: str = ""
    """Logged data: the agent's own dataset (its recorded held-out episodes) or other episodes."""
    options: dict[str, Any] = field(default_factory=dict)
    """pipelines.ope.OPEConfig overrides (estimators, gamma, fqe_steps, ...; its seed is the job's seed)."""
    device: str = "cpu"
    """cpu or cuda[:N]."""


@dataclass(frozen=True)
class BenchJob:
    """``bench``: the benchmark (merlion_core.benchmark.run_benchmark) for one env and seed."""

    env: str = "maze"
    """Environment: short name or full id."""
    methods: tuple[str, ...] = ("merlion-cql",)
    """Benchmark methods or groups (benchmark.methods: paper, ablations, peers, field, merlion-cql, dcql, ...)."""
    seeds: int = 5
    """Seeds per method (0 .. seeds-1; the paper: 5)."""
    steps: int = 20_000
    """Gradient steps of every agent."""
    options: dict[str, Any] = field(default_factory=dict)
    """Further keyword arguments of run_benchmark."""


@dataclass(frozen=True)
class WarmStartJob:
    """``warm-start``: re-train a MERLION encoder with a new p and tau (Eq. 7), models frozen
    (merlion_core.representation.merlion.warm_start), writing the embeddings at one state as frames."""

    encoder: str = ""
    """MERLION representation folder to start from."""
    dataset: str | None = None
    """Dataset the encoder is re-trained on (null: the one it was trained on)."""
    p: float = 0.01
    """p: out-of-distribution penalty of Eq. 4/7."""
    tau: float = 0.3
    """tau: I_hat(a|s) = 1 when G(a|s) / max G <= tau."""
    steps: int = 60
    """Gradient steps of the warm start (about 1 s on one CPU thread for the maze)."""
    frame_every: int = 10
    """Write the embeddings every this many steps (one frame)."""
    state: tuple[float, ...] = ()
    """The observation whose action embeddings are written (empty: the dataset's first observation)."""
    save_encoder: bool = True
    """Write the warm-started encoder to artifacts/encoder (the app's slider jobs write frames only)."""


@dataclass(frozen=True)
class UmapJob:
    """``umap``: a 2-D UMAP view of every action's embedding at chosen dataset states (merlion_core.projection)."""

    encoder: str = ""
    """Representation folder whose embeddings phi(a; s) are projected."""
    dataset: str | None = None
    """Dataset the states come from (null: the one the encoder was trained on)."""
    rows: tuple[int, ...] = (0,)
    """Dataset row indices of the states; all |A| actions at each (|A| x len(rows) points, one UMAP)."""
    n_neighbors: int = 15
    """UMAP's n_neighbors: size of the local neighbourhood (larger: more global structure)."""
    min_dist: float = 0.1
    """UMAP's min_dist: how tightly points may pack in the 2-D view."""


KINDS: dict[str, type] = {
    "collect": CollectJob,
    "train-encoder": TrainEncoderJob,
    "train-agent": TrainAgentJob,
    "train-online": TrainOnlineJob,
    "evaluate": EvaluateJob,
    "ope": OPEJob,
    "bench": BenchJob,
    "warm-start": WarmStartJob,
    "umap": UmapJob,
}
INPUT_PATHS = ("dataset", "encoder", "agent")
"""Config fields naming an input that must exist at submission."""
LOWER_BOUNDS = {
    "n": 1,
    "steps": 1,
    "episodes": 1,
    "eval_episodes": 1,
    "frame_every": 1,
    "n_neighbors": 2,
    "eval_every": 0,
    "checkpoint_every": 0,
    "p": 0,
    "tau": 0,
    "min_dist": 0,
}
"""Least value of numeric config fields, by name (any kind)."""
UPPER_BOUNDS = {"tau": 1}
"""Largest value of numeric config fields, by name (any kind)."""
TORCH_KINDS = frozenset(
    {"train-encoder", "train-agent", "train-online", "evaluate", "ope", "bench", "warm-start", "umap"}
)
"""Kinds that run PyTorch (the worker sets torch's thread count for them)."""
GPU_KINDS = frozenset({"train-encoder", "train-agent", "train-online", "bench"})
"""Kinds that use a GPU when one is free and their device allows it."""


@dataclass(frozen=True)
class JobSpec:
    """What to run: ``kind``, its ``config`` (a JSON object of that kind's fields) and ``seed``."""

    kind: str
    config: dict[str, Any]
    seed: int = 0


def parse_config(kind: str, config: dict[str, Any]) -> Any:
    """The kind's config dataclass from a JSON object; one-line errors naming the bad key."""
    if kind not in KINDS:
        raise ValueError(f"kind: unknown {kind!r}; choose one of {', '.join(KINDS)}")
    if not isinstance(config, dict):
        raise ConfigError(f"{kind} config: expected a JSON object, got {type(config).__name__}")
    return from_dict(KINDS[kind], config)


def validate(spec: JobSpec, *, base: str | Path | None = None, check_inputs: bool = True) -> JobSpec:
    """The spec with its config complete (defaults filled in) and input paths absolute.

    ``base`` is the folder relative paths are taken from (default: the current one)."""
    if isinstance(spec.seed, bool) or not isinstance(spec.seed, int) or spec.seed < 0:
        raise ValueError(f"seed: must be an integer >= 0, got {spec.seed!r}")
    config = parse_config(spec.kind, spec.config)
    if "seed" in getattr(config, "options", {}):
        raise ValueError(f"{spec.kind} config: options.seed: give the job's seed instead (--seed)")
    changes: dict[str, Any] = {}
    for name in INPUT_PATHS:
        value = getattr(config, name, None)
        if value is None or not hasattr(config, name):
            continue
        if not value:
            raise ValueError(f"{spec.kind} config: {name}: required (a path)")
        path = Path(value).expanduser()
        path = path if path.is_absolute() else Path(base or Path.cwd()) / path
        if check_inputs and not path.exists():
            raise FileNotFoundError(f"{spec.kind} config: {name}: {path} does not exist")
        changes[name] = str(path.resolve())
    for name, low in LOWER_BOUNDS.items():
        if hasattr(config, name) and not getattr(config, name) >= low:  # NaN fails too
            raise ValueError(f"{spec.kind} config: {name}: must be >= {low}, got {getattr(config, name)}")
    for name, high in UPPER_BOUNDS.items():
        if hasattr(config, name) and getattr(config, name) > high:
            raise ValueError(f"{spec.kind} config: {name}: must be <= {high}, got {getattr(config, name)}")
    if hasattr(config, "precision") and config.precision not in PRECISIONS:
        raise ValueError(f"{spec.kind} config: precision: one of {', '.join(PRECISIONS)}, got {config.precision!r}")
    if holdout := getattr(config, "holdout", None):
        if not 0.0 < holdout < 1.0:
            raise ValueError(f"{spec.kind} config: holdout: a share of episodes in (0, 1), got {holdout}")
    if spec.kind == "ope":
        from merlion_core.pipelines.ope import OPEConfig

        try:
            from_dict(OPEConfig, config.options)
        except (ConfigError, TypeError, ValueError) as exc:
            raise ValueError(f"ope config: options: {str(exc).splitlines()[0]}") from None
    if spec.kind == "train-online":
        from merlion_core.algos.online import online_config

        try:
            online_config(config.options)
        except (ConfigError, TypeError, ValueError) as exc:
            raise ValueError(f"train-online config: options: {str(exc).splitlines()[0]}") from None
    if not getattr(config, "rows", (0,)) or min(getattr(config, "rows", (0,))) < 0:
        raise ValueError(f"{spec.kind} config: rows: need at least one dataset row index >= 0, got {config.rows!r}")
    config = dataclasses.replace(config, **changes)
    return JobSpec(spec.kind, to_dict(config), int(spec.seed))


def wants_gpu(kind: str, config: dict[str, Any]) -> bool:
    """Whether a job of this kind and config should be given a GPU (when there is one)."""
    return kind in GPU_KINDS and str(config.get("device", "auto")).split(":")[0] in ("auto", "cuda")
