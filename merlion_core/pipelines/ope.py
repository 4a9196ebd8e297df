"""Off-policy evaluation pipeline: a saved agent + logged data -> estimates on episodes it never trained on.

Entry points: :func:`ope_agent` (``merlion ope`` and the ``ope`` job) and :func:`heldout_part` (which
episodes of a dataset an agent may be judged on). The estimators themselves are numeric and live in
:mod:`merlion_core.ope`; this module reads the folders, checks that agent and data fit, computes the
deployed policy's actions once and turns values into normalised scores.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from merlion_core.config import to_dict
from merlion_core.ope import ALL_ESTIMATORS, ESTIMATORS

ACT_CHUNK = 4096
"""Observations per call of the agent's acting rule (bounds the lookup's memory)."""


@dataclass(frozen=True)
class OPEConfig:
    """Off-policy evaluation of a deployed agent on held-out logged episodes."""

    estimators: tuple[str, ...] = ESTIMATORS
    """Estimators: fqe (fitted Q evaluation), wis (per-decision weighted IS), dr (weighted doubly robust), pdis."""
    gamma: float = 1.0
    """gamma of the estimated value; 1.0 = the undiscounted episode return that normalised scores measure."""
    bootstrap_timeouts: bool = False
    """Bootstrap FQE through time-limit ends (an infinite-horizon value; needs gamma < 1) instead of ending there."""
    fqe_steps: int = 5_000
    """Gradient steps of fitted Q evaluation."""
    fqe_heads: int = 20
    """K: FQE's bootstrap heads, each fitted on an episode resample (its 95% interval)."""
    fqe_hidden: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of each FQE head's MLP."""
    fqe_target_update: int = 50
    """Copy FQE's network into its target every this many steps (one FQE iteration; 0: Polyak averaging)."""
    behaviour_steps: int = 3_000
    """Gradient steps of the fitted behaviour model mu(a|s) (used when the data logs no propensities)."""
    fqe_encoder: str = ""
    """FQE's actions: '', one output per action; an encoder folder (or 'agent', a latent agent's): Q(s, phi(a; s))."""
    n_bootstrap: int = 1_000
    """Episode resamples behind the importance estimators' 95% intervals."""
    min_heldout_episodes: int = 10
    """Fewest held-out episodes accepted: fewer give intervals too wide to rank anything."""
    seed: int = 0
    """Seed of the behaviour model, FQE and the bootstrap."""

    def __post_init__(self) -> None:
        unknown = [e for e in self.estimators if e not in ALL_ESTIMATORS]
        if unknown or not self.estimators:
            raise ValueError(
                f"estimators: unknown {', '.join(unknown)} (known: {', '.join(ALL_ESTIMATORS)})"
                if unknown
                else "estimators: none requested"
            )
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma: must be in (0, 1], got {self.gamma}")
        if self.bootstrap_timeouts and self.gamma >= 1.0:
            raise ValueError("bootstrap_timeouts: needs gamma < 1 (an undiscounted value past a time limit diverges)")
        for name in ("fqe_steps", "behaviour_steps", "min_heldout_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.fqe_heads < 0 or self.n_bootstrap < 0:
            raise ValueError("fqe_heads and n_bootstrap: must be >= 0")


class OPEInputError(ValueError):
    """Agent and data that cannot be paired for off-policy evaluation (one-line message)."""


def heldout_part(info: dict[str, Any], dataset: Any, where: str) -> tuple[np.ndarray, str]:
    """(transition indices, how they were chosen) of the complete episodes of ``dataset`` the agent never
    trained on: the split it recorded when ``dataset`` is its training data, else every complete episode."""
    from merlion_core.ope import split_from_dict

    trained_on = info.get("dataset") or {}
    ends = dataset.episode_ends
    if trained_on.get("digest") == dataset.content_digest():
        if not info.get("holdout"):
            raise OPEInputError(
                f"{where}: the agent trained on every episode of this dataset; off-policy "
                "evaluation needs episodes it never saw: train it with --holdout 0.2, or pass a "
                "dataset of other episodes of the same behaviour"
            )
        try:
            split = split_from_dict(info["holdout"], ends)
        except ValueError as exc:
            raise OPEInputError(f"{where}: {exc}") from None
        return split.heldout_index, "the held-out episodes recorded with the agent"
    if not trained_on.get("digest") and trained_on.get("n_transitions") == dataset.n_transitions:
        raise OPEInputError(
            f"{where}: the agent records no dataset digest and its training data had as many "
            f"transitions ({dataset.n_transitions}) as this dataset; it is probably the same data, "
            "so no episode is known to be held out; retrain the agent with --holdout 0.2"
        )
    return np.arange(int(ends[-1]) + 1, dtype=np.int64), "every episode (a dataset the agent did not train on)"


def policy_actions(agent: Any, observations: np.ndarray) -> np.ndarray:
    """int64[N]: the deployed acting rule (lookup included) at every observation, in chunks."""
    parts = [
        np.asarray(agent.act(observations[i : i + ACT_CHUNK]), dtype=np.int64)
        for i in range(0, observations.shape[0], ACT_CHUNK)
    ]
    return np.concatenate(parts)


def check_pairing(agent: Any, dataset: Any, where: str) -> None:
    """Refuse data whose observation size or action set differ from the agent's."""
    if int(agent.n_actions) != dataset.n_actions:
        raise OPEInputError(
            f"{where}: the agent acts over {agent.n_actions} actions, the dataset has "
            f"{dataset.n_actions}; it was trained on another dataset's action set"
        )
    if int(agent.obs_dim) != dataset.obs_dim:
        raise OPEInputError(
            f"{where}: the agent reads {agent.obs_dim}-dim observations, the dataset has {dataset.obs_dim}"
        )


def embed_pairs(representation: Any, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """f32[N, D]: phi(a_n; s_n) for each (observation, action) pair, in chunks."""
    import torch

    tensors = [*representation.parameters(), *representation.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    parts = []
    with torch.no_grad():
        for i in range(0, obs.shape[0], ACT_CHUNK):
            o = torch.as_tensor(obs[i : i + ACT_CHUNK], dtype=torch.float32, device=device)
            a = torch.as_tensor(actions[i : i + ACT_CHUNK], dtype=torch.int64, device=device)
            parts.append(representation.embed(o, a).float().cpu().numpy())
    return np.concatenate(parts)


def fqe_representation(agent: Any, config: OPEConfig, agent_dir: Any = None) -> Any:
    """The representation FQE reads actions through (None: one output per action id)."""
    if not config.fqe_encoder:
        return None
    if config.fqe_encoder == "agent":
        representation = getattr(agent, "representation", None)
        if representation is None:
            raise OPEInputError(
                f"{agent_dir}: fqe_encoder 'agent': the agent acts on raw actions and has no encoder; "
                "name a representation folder"
            )
        return representation
    from merlion_core.representation.artifacts import load_representation

    representation = load_representation(config.fqe_encoder).representation
    if representation.n_actions != agent.n_actions or representation.obs_dim != agent.obs_dim:
        raise OPEInputError(
            f"fqe_encoder {config.fqe_encoder}: made for {representation.n_actions} actions and "
            f"{representation.obs_dim}-dim observations, the agent has {agent.n_actions} and "
            f"{agent.obs_dim}"
        )
    return representation


def ope_arrays(
    agent: Any,
    dataset: Any,
    index: np.ndarray,
    config: OPEConfig,
    progress: Callable[[int, int], None] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Every estimator of ``config`` for ``agent`` on the transitions ``index`` (complete episodes) of
    ``dataset``: name -> {value, ci95, normalised_score, normalised_ci95, details}."""
    from merlion_core.ope import BehaviourModelConfig, FQEConfig, estimate, fit_behaviour_model

    obs = np.asarray(dataset.observations[index], dtype=np.float32)
    next_obs = np.asarray(dataset.next_observations[index], dtype=np.float32)
    actions = np.asarray(dataset.actions[index], dtype=np.int64)
    terminals = np.asarray(dataset.terminals[index], dtype=bool)
    timeouts = np.asarray(dataset.timeouts[index], dtype=bool)
    propensities = getattr(dataset, "propensities", None)
    if propensities is not None:
        mu, source = np.asarray(propensities[index], dtype=np.float64), "logged propensities"
    else:
        model = fit_behaviour_model(
            obs,
            actions,
            dataset.n_actions,
            BehaviourModelConfig(steps=config.behaviour_steps, seed=config.seed),
            device=device,
        )
        mu, source = model.probability(obs, actions), "fitted G(a|s) on the held-out episodes"
    done = terminals if config.bootstrap_timeouts else terminals | timeouts
    pi, next_pi = policy_actions(agent, obs), policy_actions(agent, next_obs)
    representation = fqe_representation(agent, config)
    features = (
        None
        if representation is None
        else (
            embed_pairs(representation, obs, actions),
            embed_pairs(representation, obs, pi),
            embed_pairs(representation, next_obs, next_pi),
        )
    )
    fqe = FQEConfig(
        gamma=config.gamma,
        steps=config.fqe_steps,
        n_bootstrap=config.fqe_heads,
        seed=config.seed,
        hidden=tuple(config.fqe_hidden),
        hard_update_every=config.fqe_target_update,
    )
    results = estimate(
        obs,
        actions,
        np.asarray(dataset.rewards[index]),
        next_obs,
        done,
        np.zeros_like(done) if not config.bootstrap_timeouts else timeouts,
        dataset.n_actions,
        pi,
        next_pi,
        mu,
        source,
        estimators=tuple(config.estimators),
        gamma=config.gamma,
        fqe_config=fqe,
        n_bootstrap=config.n_bootstrap,
        seed=config.seed,
        progress=progress,
        device=device,
        action_features=features,
    )
    normalisable = (
        config.gamma == 1.0
        and dataset.meta.expert_return is not None
        and dataset.meta.random_return is not None
        and dataset.meta.expert_return != dataset.meta.random_return
    )
    out = {}
    for name, result in results.items():
        ci = [float(result.ci95[0]), float(result.ci95[1])]
        out[name] = {
            "value": float(result.value),
            "ci95": ci,
            "normalised_score": float(dataset.normalised_score(result.value)) if normalisable else None,
            "normalised_ci95": [float(dataset.normalised_score(c)) for c in ci] if normalisable else None,
            "details": result.details,
        }
    return out


def without_details(estimates: dict[str, Any]) -> dict[str, Any]:
    """The estimates without each estimator's details (what a summary, a curve point or a job result shows)."""
    return {name: {k: v for k, v in e.items() if k != "details"} for name, e in estimates.items()}


def ope_agent(
    agent_dir: str | os.PathLike,
    dataset_path: str | os.PathLike,
    config: OPEConfig = OPEConfig(),
    progress: Callable[[int, int], None] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Off-policy estimates of a saved agent's value on the episodes of ``dataset_path`` it never trained on.

    Returns ``{"estimators": {name: {"value", "normalised_score", "ci95", ...}}, "held_out_episodes": N,
    "held_out": how they were chosen, "behaviour_source", "config"}``."""
    from merlion_core.algos.artifacts import load_agent
    from merlion_core.data.io import load_dataset
    from merlion_core.ope import EpisodeTable

    loaded = load_agent(agent_dir, device=device)
    dataset = load_dataset(dataset_path)
    where = f"{agent_dir} on {dataset_path}"
    check_pairing(loaded.agent, dataset, where)
    index, chosen = heldout_part(loaded.info, dataset, where)
    n_episodes = EpisodeTable.from_flags(dataset.terminals[index], dataset.timeouts[index]).n_episodes
    if n_episodes < config.min_heldout_episodes:
        raise OPEInputError(
            f"{where}: {n_episodes} held-out episode(s), fewer than min_heldout_episodes = "
            f"{config.min_heldout_episodes}; hold out more episodes or pass a larger dataset"
        )
    estimates = ope_arrays(loaded.agent, dataset, index, config, progress=progress, device=device)
    behaviour = next(
        (e["details"].get("behaviour_source") for e in estimates.values() if "behaviour_source" in e["details"]), None
    )
    return {
        "agent": str(agent_dir),
        "algo": loaded.algo,
        "dataset": str(dataset_path),
        "estimators": estimates,
        "held_out_episodes": int(n_episodes),
        "held_out_transitions": int(index.size),
        "held_out": chosen,
        "behaviour_source": behaviour,
        "env_id": dataset.meta.env_id,
        "config": to_dict(config),
    }


CURVE_OPE = OPEConfig(fqe_steps=2_000, fqe_heads=10, behaviour_steps=1_500, n_bootstrap=500)
"""The cheaper setting of every evaluation point of a run without a simulator (a full `merlion ope` is
OPEConfig())."""
