"""Explicit registry of representation methods: name -> config class, builder, trainer.

Every method module exports a frozen config dataclass (fields with defaults and one-line
docstrings naming the paper's symbol; at least ``dim``, ``steps``, ``batch_size``, ``lr``,
``seed``), ``build(config, n_actions, obs_dim) -> Representation`` (an untrained network of
the right shape, used to load saved weights) and ``fit(dataset, config, *, device, progress)
-> (Representation, final_metrics)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from merlion_core.representation import cvae, external, merlion, random_embeddings, reconstruction, transition


@dataclass(frozen=True)
class MethodSpec:
    """One representation method."""

    name: str
    config_cls: type
    build: Callable[..., Any]
    fit: Callable[..., Any]
    description: str
    config_defaults: dict[str, Any] = dataclasses.field(default_factory=dict)

    def default_config(self, **overrides: Any) -> Any:
        return self.config_cls(**{**self.config_defaults, **overrides})


METHODS: dict[str, MethodSpec] = {
    "merlion": MethodSpec(
        "merlion",
        merlion.MerlionConfig,
        merlion.build,
        merlion.fit,
        "pseudometric-based representation (paper Eq. 6-7, Alg. 2)",
    ),
    "merlion-no-p": MethodSpec(
        "merlion-no-p",
        merlion.MerlionConfig,
        merlion.build,
        merlion.fit,
        "MERLION without the out-of-distribution penalty (p = 0)",
        {"p": 0.0},
    ),
    "cvae": MethodSpec(
        "cvae", cvae.CVAEConfig, cvae.build, cvae.fit, "conditional VAE, no distance objective (paper ablation)"
    ),
    "rand1": MethodSpec(
        "rand1",
        random_embeddings.Rand1Config,
        random_embeddings.build_rand1,
        random_embeddings.fit_rand1,
        "random vectors in [-1, 1]^d",
    ),
    "rand2": MethodSpec(
        "rand2",
        random_embeddings.Rand2Config,
        random_embeddings.build_rand2,
        random_embeddings.fit_rand2,
        "random vectors with every pairwise L1 distance above a margin",
    ),
    "transition": MethodSpec(
        "transition",
        transition.TransitionConfig,
        transition.build,
        transition.fit,
        "inverse-dynamics action embeddings (Chandak et al. 2019)",
    ),
    "reconstruction": MethodSpec(
        "reconstruction",
        reconstruction.ReconstructionConfig,
        reconstruction.build,
        reconstruction.fit,
        "encoder-decoder predicting next state and reward",
    ),
    "external": MethodSpec(
        "external",
        external.ExternalConfig,
        external.build,
        external.fit,
        "hand-made features (maze: movement vector; multi-step maze: moves; "
        "recommender: type one-hot, quality, length)",
    ),
}


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise ValueError(f"unknown representation method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]
