"""Chains of jobs: a job whose input is another job's output (dataset -> encoder -> agent).

The jobs runner checks inputs at submission, so a chain submits each step once the steps it
reads from have succeeded. A chain is a small JSON file under RUNS/studio/chains/; ``advance``
submits every step whose inputs are ready and is called on each page run and by one
background thread per server process (``start_advancer``), so a chain keeps moving while no
page is open. An flock serialises advancing across processes (two servers, one runs folder).

The demo (maze medium dataset -> MERLION encoder -> short MERLION-CQL run) is one chain.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from studio import jobs_client, settings

DEMO = "demo"
ADVANCE_SECONDS = 1.5


@dataclass
class Step:
    """One job of a chain; ``inputs`` maps a config field to (step index, result key)."""

    kind: str
    config: dict[str, Any]
    seed: int = 0
    inputs: dict[str, tuple[int, str]] = field(default_factory=dict)
    job: int | None = None
    error: str | None = None


@dataclass
class Chain:
    name: str
    steps: list[Step]
    created: float = 0.0


def chains_dir() -> Path:
    return settings.studio_dir() / "chains"


@contextmanager
def _locked() -> Iterator[None]:
    folder = chains_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _path(name: str) -> Path:
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"chain name: letters, digits, - and _ only, got {name!r}")
    return chains_dir() / f"{name}.json"


def save(chain: Chain) -> None:
    path = _path(chain.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(chain), indent=1))
    os.replace(tmp, path)


def load(name: str) -> Chain | None:
    path = _path(name)
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    steps = [
        Step(
            s["kind"],
            s["config"],
            s.get("seed", 0),
            {k: (int(v[0]), str(v[1])) for k, v in s["inputs"].items()},
            s.get("job"),
            s.get("error"),
        )
        for s in doc["steps"]
    ]
    return Chain(doc["name"], steps, doc.get("created", 0.0))


def names() -> list[str]:
    folder = chains_dir()
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def create(name: str, steps: list[Step]) -> Chain:
    """Write a new chain (replacing one of that name) and submit its first ready steps."""
    with _locked():
        chain = Chain(name, steps, time.time())
        save(chain)
    advance(name)
    return chain


def advance(name: str) -> Chain | None:
    """Submit every step whose inputs have succeeded; returns the updated chain."""
    with _locked():
        chain = load(name)
        if chain is None:
            return None
        jobs = {job.id: job for job in jobs_client.jobs()}
        changed = False
        for step in chain.steps:
            if step.job is not None or step.error:
                continue
            config, ready = dict(step.config), True
            for key, (index, result_key) in step.inputs.items():
                upstream = chain.steps[index]
                job = jobs.get(upstream.job) if upstream.job is not None else None
                if job is None or job.status != "succeeded":
                    ready = False
                    break
                config[key] = (job.result or {}).get(result_key)
            if not ready:
                continue
            try:
                step.job = jobs_client.submit(step.kind, config, step.seed, tag=f"studio:{name}")
                step.config = config
            except (ValueError, OSError) as exc:
                step.error = str(exc).splitlines()[0]
            changed = True
        if changed:
            save(chain)
        return chain


def status(chain: Chain | None) -> str:
    """'missing', 'done', 'failed' (a step failed or could not be submitted) or 'building'."""
    if chain is None:
        return "missing"
    jobs = {job.id: job for job in jobs_client.jobs()}
    states = [
        ("error" if step.error else jobs[step.job].status if step.job in jobs else "waiting") for step in chain.steps
    ]
    if all(s == "succeeded" for s in states):
        return "done"
    if any(s in ("error", "failed", "cancelled") for s in states):
        return "failed"
    return "building"


def step_jobs(chain: Chain) -> list[tuple[Step, Any]]:
    """Each step with its job record (None while it waits for its inputs)."""
    jobs = {job.id: job for job in jobs_client.jobs()}
    return [(step, jobs.get(step.job) if step.job is not None else None) for step in chain.steps]


# ---------------------------------------------------------------------------- the demo
def demo_steps() -> list[Step]:
    """Maze medium dataset -> MERLION encoder -> short MERLION-CQL run, and a Transition encoder
    (Chandak et al.'s inverse dynamics) to show beside MERLION (sizes in studio.settings)."""
    return [
        Step(
            "collect",
            {"env": settings.DEMO_ENV_NAME, "behaviour": "medium", "noise": 0.5, "n": settings.DEMO_TRANSITIONS},
        ),
        Step(
            "train-encoder",
            {"method": "merlion", "options": {"steps": settings.DEMO_ENCODER_STEPS, "batch_size": settings.DEMO_BATCH}},
            inputs={"dataset": (0, "dataset")},
        ),
        Step(
            "train-agent",
            {
                "algo": "cql",
                "steps": settings.DEMO_AGENT_STEPS,
                "eval_every": settings.DEMO_EVAL_EVERY,
                "eval_episodes": settings.DEMO_EVAL_EPISODES,
                "options": {"batch_size": settings.DEMO_BATCH},
            },
            inputs={"dataset": (0, "dataset"), "encoder": (1, "encoder")},
        ),
        Step(
            "train-encoder",
            {
                "method": "transition",
                "options": {"steps": settings.DEMO_ENCODER_STEPS, "batch_size": settings.DEMO_BATCH},
            },
            inputs={"dataset": (0, "dataset")},
        ),
    ]


def ensure_demo() -> Chain | None:
    """Start building the demo when it was never started (and the demo is enabled)."""
    if not settings.demo_enabled():
        return load(DEMO)
    chain = load(DEMO)
    if chain is None:
        chain = create(DEMO, demo_steps())
    return chain


def rebuild_demo() -> Chain:
    return create(DEMO, demo_steps())


# ---------------------------------------------------------------------------- the background advancer
_advancer: threading.Thread | None = None
_advancer_lock = threading.Lock()


def pending() -> list[str]:
    """Chains that still have steps to submit (not blocked by a failure)."""
    return [name for name in names() if status(load(name)) == "building"]


def _advance_loop() -> None:
    global _advancer
    while True:
        waiting = pending()
        if not waiting:
            break
        for name in waiting:
            try:
                advance(name)
            except Exception:  # noqa: BLE001 - a broken chain file must not kill the thread; the page shows it
                pass
        time.sleep(ADVANCE_SECONDS)
    with _advancer_lock:
        _advancer = None


def start_advancer() -> None:
    """One daemon thread per process that advances chains until none is pending (only
    bookkeeping: it submits jobs; the jobs run in the runner's worker processes)."""
    global _advancer
    with _advancer_lock:
        if _advancer is not None and _advancer.is_alive():
            return
        if not pending():
            return
        _advancer = threading.Thread(target=_advance_loop, name="studio-chains", daemon=True)
        _advancer.start()
