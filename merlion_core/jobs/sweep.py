"""Sweeps: a grid of runs (every combination of the grid's values, once per seed) as job specs.

A sweep spec (YAML or JSON; docs/jobs.md)::

    name: fig2-maze          # optional: tags the jobs (merlion jobs list --sweep fig2-maze)
    kind: train-agent        # one job kind for every run
    config:                  # the config every run shares
      dataset: data/maze-medium
      steps: 20000
    grid:                    # run every combination of these values
      algo: [bc, dcql]
      options.alpha: [0.5, 1.0]   # a dotted key sets a field inside a dict field
    seeds: [0, 1, 2]         # each combination once per seed (default: [0])
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

from merlion_core.jobs.backend import Backend, LocalBackend
from merlion_core.jobs.ray_backend import RayBackend
from merlion_core.jobs.spec import KINDS, JobSpec
from merlion_core.jobs.store import JobStore

MAX_RUNS = 10_000
SPEC_KEYS = ("name", "kind", "config", "grid", "seeds")


@dataclass(frozen=True)
class Sweep:
    """An expanded sweep: its name and one spec per run."""

    name: str
    specs: list[JobSpec]


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    """config[a][b] = value for the key 'a.b' (creating the inner dicts)."""
    *parents, last = key.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"sweep grid: {key}: {part} is not a mapping")
    node[last] = value


def expand(document: Any, default_name: str = "sweep") -> Sweep:
    """The runs of a sweep spec, in grid order (first key slowest), seeds innermost."""
    if not isinstance(document, dict):
        raise ValueError(f"sweep spec: expected a mapping with {', '.join(SPEC_KEYS)}")
    unknown = sorted(set(document) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(f"sweep spec: unknown key(s) {', '.join(unknown)}; known: {', '.join(SPEC_KEYS)}")
    kind = document.get("kind")
    if kind not in KINDS:
        raise ValueError(f"sweep spec: kind: {kind!r} is not one of {', '.join(KINDS)}")
    base = document.get("config") or {}
    grid = document.get("grid") or {}
    seeds = document.get("seeds", [0])
    if not isinstance(base, dict):
        raise ValueError("sweep spec: config: expected a mapping")
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ValueError("sweep spec: grid: expected a mapping of key -> non-empty list of values")
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise ValueError("sweep spec: seeds: expected a non-empty list of integers")
    n_runs = len(seeds)
    for values in grid.values():
        n_runs *= len(values)
    if n_runs > MAX_RUNS:
        raise ValueError(f"sweep spec: {n_runs} runs; at most {MAX_RUNS}")
    specs: list[JobSpec] = []
    for combination in itertools.product(*grid.values()):
        config = copy.deepcopy(base)
        for key, value in zip(grid, combination, strict=True):
            set_dotted(config, str(key), value)
        specs.extend(JobSpec(kind, copy.deepcopy(config), int(seed)) for seed in seeds)
    return Sweep(str(document.get("name") or default_name), specs)


def make_backend(
    name: str,
    store: JobStore,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    start_supervisor: bool = True,
) -> Backend:
    """The backend a sweep runs on: ``local`` (the supervisor) or ``ray`` (a Ray cluster)."""
    if name == "local":
        if address:
            raise ValueError("--address: only with --backend ray")
        return LocalBackend(store, start_supervisor=start_supervisor)
    if name == "ray":
        return RayBackend(store, address=address, num_cpus=num_cpus)
    raise ValueError(f"backend: unknown {name!r}; choose local or ray")
