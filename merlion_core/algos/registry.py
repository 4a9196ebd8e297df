"""Every offline RL algorithm by name: ``ALGORITHMS[name] = (ConfigClass, AlgorithmClass)``.

To add one, import its config and class here and add one entry; the shared test harness
(tests/test_algos_harness.py) then covers it automatically.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from merlion_core.algos.base import OfflineAlgorithm
from merlion_core.algos.bc import BC, BCConfig
from merlion_core.algos.decqn import DecQNBCQ, DecQNBCQConfig, DecQNCQL, DecQNCQLConfig
from merlion_core.algos.discrete_bcq import DiscreteBCQ, DiscreteBCQConfig
from merlion_core.algos.discrete_cql import DiscreteCQL, DiscreteCQLConfig
from merlion_core.algos.discrete_iql import DiscreteIQL, DiscreteIQLConfig
from merlion_core.algos.latent_bcq import LatentBCQ, LatentBCQConfig
from merlion_core.algos.latent_cql import LatentCQL, LatentCQLConfig
from merlion_core.algos.latent_iql import LatentIQL, LatentIQLConfig
from merlion_core.algos.plas import PLAS, PLASConfig
from merlion_core.config import from_dict

ALGORITHMS: dict[str, tuple[type, type[OfflineAlgorithm]]] = {
    "bc": (BCConfig, BC),
    "dcql": (DiscreteCQLConfig, DiscreteCQL),
    "dbcq": (DiscreteBCQConfig, DiscreteBCQ),
    "decqn-cql": (DecQNCQLConfig, DecQNCQL),
    "decqn-bcq": (DecQNBCQConfig, DecQNBCQ),
    "plas": (PLASConfig, PLAS),
    "cql": (LatentCQLConfig, LatentCQL),
    "bcq": (LatentBCQConfig, LatentBCQ),
    "diql": (DiscreteIQLConfig, DiscreteIQL),
    "iql": (LatentIQLConfig, LatentIQL),
}
LATENT_ALGORITHMS = frozenset({"cql", "bcq", "iql"})
"""Algorithms that act in a representation's latent space (they need ``representation=``)."""
FACTORISED_ALGORITHMS = frozenset({"decqn-cql", "decqn-bcq"})
"""Algorithms that need the action space as a product of sub-actions (``action_factors``: given, or
declared by the dataset's env, merlion_core.envs.factors.env_action_factors)."""


def make_algorithm(
    name: str, n_actions: int, obs_dim: int, config: Any = None, device: str = "auto", representation: Any = None
) -> OfflineAlgorithm:
    """A fresh algorithm; ``config`` is its config dataclass, a dict of overrides, or None (defaults)."""
    if name not in ALGORITHMS:
        raise ValueError(f"algorithm: unknown {name!r}; known: {', '.join(ALGORITHMS)}")
    config_cls, algo_cls = ALGORITHMS[name]
    if config is None:
        config = config_cls()
    elif isinstance(config, Mapping):
        config = from_dict(config_cls, dict(config))
    elif not isinstance(config, config_cls):
        raise TypeError(f"config: {name!r} expects {config_cls.__name__}, got {type(config).__name__}")
    if name in LATENT_ALGORITHMS:
        if representation is None:
            raise ValueError(f"{name}: acts in a representation's latent space; pass a representation (--encoder)")
        if not issubclass(algo_cls, (LatentCQL, LatentBCQ, LatentIQL)):
            raise TypeError(f"{name}: listed as a latent algorithm, but {algo_cls.__name__} takes no representation")
        return algo_cls(config, n_actions, obs_dim, device, representation=representation)
    if representation is not None:
        raise ValueError(f"{name}: acts on raw actions; drop the representation (--encoder)")
    return algo_cls(config, n_actions, obs_dim, device)
