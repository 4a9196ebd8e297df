"""The benchmark's methods: names, groups, what each needs from the env, and its encoder's settings.

A benchmark method is a representation (or none) plus an offline algorithm (see
:mod:`merlion_core.benchmark.runner`); the groups ``paper``, ``ablations`` and ``peers`` are the rows of
the paper's Fig. 2 (a), (b), Fig. 3 and the d3rlpy peers.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BenchMethod:
    """One benchmark row: a representation (None = raw actions) and an algorithm."""

    name: str
    representation: str | None
    representation_overrides: tuple[tuple[str, Any], ...]
    algo: str
    peer: bool = False
    algo_overrides: tuple[tuple[str, Any], ...] = ()
    """Fields of the algorithm's config that differ from its defaults."""


LEGACY_LATENT_CQL: tuple[tuple[str, Any], ...] = (
    ("latent_normalise", False),
    ("cql_samples", "box"),
    ("bc_steps", 0),
    ("backup_entropy", True),
)
"""Latent CQL's settings in the tables before issue 21 (the earlier defaults)."""


def _fixed_methods() -> dict[str, BenchMethod]:
    methods = {
        "merlion-cql": BenchMethod("merlion-cql", "merlion", (), "cql"),
        "merlion-bcq": BenchMethod("merlion-bcq", "merlion", (), "bcq"),
        "merlion-no-p-cql": BenchMethod("merlion-no-p-cql", "merlion-no-p", (), "cql"),
        "cvae-cql": BenchMethod("cvae-cql", "cvae", (), "cql"),
        # latent CQL as the tables before the authors' settings were restored: SAC backup, cube box,
        # uniform box proposals, no BC start (docs/deviations.md)
        # latent BCQ choosing among real actions that MERLION's G(a|s) allows (no VAE samples, no lookup)
        "merlion-bcq-real": BenchMethod(
            "merlion-bcq-real", "merlion", (), "bcq", algo_overrides=(("candidates", "behaviour"),)
        ),
        "merlion-cql-before": BenchMethod("merlion-cql-before", "merlion", (), "cql", algo_overrides=LEGACY_LATENT_CQL),
    }
    for raw in ("dcql", "dbcq", "bc", "plas", "decqn-cql", "decqn-bcq", "diql"):
        methods[raw] = BenchMethod(raw, None, (), raw)
    # MERLION for catalogue-scale action sets (issue 24): G by a sampled softmax, the action tables by
    # sparse gradients; the same pseudometric and latent CQL
    methods["merlion-sampled-cql"] = BenchMethod(
        "merlion-sampled-cql", "merlion", (("behaviour_loss", "sampled"), ("sparse_tables", True)), "cql"
    )
    # IQL in the latent space of MERLION's representation (issue 25)
    methods["merlion-iql"] = BenchMethod("merlion-iql", "merlion", (), "iql")
    for rep in ("rand1", "rand2", "transition", "reconstruction", "external"):
        methods[f"{rep}-cql"] = BenchMethod(f"{rep}-cql", rep, (), "cql")
        methods[f"{rep}-bcq"] = BenchMethod(f"{rep}-bcq", rep, (), "bcq")
    for peer in ("dcql", "dbcq", "bc"):
        methods[f"d3rlpy-{peer}"] = BenchMethod(f"d3rlpy-{peer}", None, (), peer, peer=True)
    return methods


BENCH_METHODS = _fixed_methods()
PAPER_METHODS = (
    "merlion-cql",
    "merlion-bcq",
    "dcql",
    "dbcq",
    "bc",
    "plas",
    "rand1-cql",
    "rand2-cql",
    "transition-cql",
    "reconstruction-cql",
    "external-cql",
)
ABLATIONS = ("merlion-p0.1-cql", "merlion-p0.3-cql", "merlion-p0.5-cql", "merlion-no-p-cql", "cvae-cql")
PEER_METHODS = ("d3rlpy-dcql", "d3rlpy-dbcq", "d3rlpy-bc")
FIELD_METHODS = ("decqn-cql", "decqn-bcq", "diql", "merlion-iql")
"""The field's stronger peers (issue 25): factorised Q (DecQN, Beeson et al. TMLR 2024; factorised
action spaces only), discrete IQL, and IQL in MERLION's latent space."""

_P_ABLATION = re.compile(r"^merlion-p(\d+(?:\.\d+)?)-(cql|bcq)$")


def bench_method(name: str) -> BenchMethod:
    """The method called ``name``; ``merlion-pX-cql`` / ``-bcq`` sets MERLION's p to X."""
    if name in BENCH_METHODS:
        return BENCH_METHODS[name]
    match = _P_ABLATION.match(name)
    if match:
        return BenchMethod(name, "merlion", (("p", float(match.group(1))),), match.group(2))
    known = ", ".join([*BENCH_METHODS, "merlion-pX-cql", "merlion-pX-bcq"])
    raise ValueError(f"bench: unknown method {name!r}; known: {known}")


def representation_available(representation: str | None, env: str | None) -> bool:
    """Whether ``representation`` exists for ``env`` (External needs hand-made features: none for dialogue)."""
    if representation != "external" or env is None:
        return True
    from merlion_core.representation.external import has_features

    return has_features(env)


def method_unavailable(method: BenchMethod, env: str | None) -> str | None:
    """Why ``method`` does not apply to ``env`` (None: it does): External without hand-made action
    features (dialogue, as in the paper); DecQN without a factorised action space (recommender, dialogue)."""
    if env is None:
        return None
    if not representation_available(method.representation, env):
        return f"{env} has no {method.representation} representation (no hand-made action features, as in the paper)"
    from merlion_core.algos.registry import FACTORISED_ALGORITHMS

    if method.algo in FACTORISED_ALGORITHMS:
        from merlion_core.envs.factors import env_action_factors

        if env_action_factors(env, None) is None:
            return f"{env} declares no factorised action space (DecQN needs sub-actions)"
    return None


def expand_methods(names: str | list[str], env: str | None = None, skipped: dict[str, str] | None = None) -> list[str]:
    """A comma list (or list) of method names; ``paper``, ``ablations``, ``peers`` and ``field`` expand to groups.

    With ``env``, a group leaves out the methods that do not apply to the env (External on dialogue,
    as the paper does; DecQN where the actions are not factorised), recording each in ``skipped``
    (name -> reason) when given; naming such a method is an error."""
    items = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    groups = {"paper": PAPER_METHODS, "ablations": ABLATIONS, "peers": PEER_METHODS, "field": FIELD_METHODS}
    out: list[str] = []
    for item in items:
        for name in groups.get(item, (item,)):
            method = bench_method(name)  # validates
            reason = method_unavailable(method, env)
            if reason is not None:
                if item in groups:
                    if skipped is not None:
                        skipped[name] = reason
                    continue
                raise ValueError(f"bench: {name}: {reason}: not applicable")
            if name not in out:
                out.append(name)
    if not out:
        raise ValueError("bench: no methods given")
    return out


def encoder_key(method: BenchMethod, seed: int) -> str:
    overrides = "".join(f"-{k}{v}" for k, v in method.representation_overrides)
    return f"{method.representation}{overrides}-seed{seed}"


def encoder_overrides(method: BenchMethod, seed: int, encoder_steps: int, env_id: str | None) -> dict[str, Any]:
    """The settings of a run's encoder: the method's own, the run's seed, ``encoder_steps`` and, for
    every learned or random representation, the paper's |E| of the env (MERLION's dim, A.3: the
    baselines use "the same architecture" with other representations; External's size is the env's)."""
    from merlion_core.representation.merlion import PAPER_ENV_DEFAULTS
    from merlion_core.representation.registry import get_method

    assert method.representation is not None
    spec = get_method(method.representation)
    names = {f.name for f in dataclasses.fields(spec.config_cls)}
    overrides: dict[str, Any] = {**dict(method.representation_overrides), "seed": seed}
    if "steps" in names:
        overrides["steps"] = encoder_steps
    paper_dim = PAPER_ENV_DEFAULTS.get(env_id or "", {}).get("dim")
    # MERLION gets it from pipelines.representation_config already; a default dim stays implicit
    own_dim = method.representation.startswith("merlion") or method.representation == "external"
    if paper_dim is not None and "dim" in names and not own_dim and spec.default_config().dim != paper_dim:
        overrides.setdefault("dim", int(paper_dim))
    return overrides


def env_has_task_success(env: str) -> bool:
    """Whether ``env`` defines task success (a batch model with ``has_task_success = False``, the
    recommender, ends episodes without one: its "success rate" would only count terminations)."""
    from merlion_core.envs import get_spec

    return bool(getattr(get_spec(env).model_cls, "has_task_success", True))
