"""Seconds per latent CQL / BCQ gradient step at an env's shapes (default: the dialogue's), one torch thread.

Usage: python bench/latent_step.py [--algo cql|bcq] [--obs-dim 377] [--n-actions 1500] [--dim 30]
                                   [--steps 60] [--warmup 10] [--threads 1] [--device cpu] [--label NAME]
The data are random transitions with the given shapes (the step's cost does not depend on their
values) and a fixed random table as phi(a; s); the agent has the benchmark's default config
(CQL: batch 256, hidden 256x256, n_random = n_policy = 10; BCQ: the authors' batch 100, 10 target
samples; 32 Fourier features). Each timed step is one minibatch sample + one gradient update,
after --warmup untimed ones (bench/speed.py's loop); the median of 3 fresh agents is kept. Acting: the median time of
greedy actions in 50 states (an evaluation's batch). Writes bench/results/latent-step.json under
ALGO/LABEL (other entries are kept), so a run with the previous code (PYTHONPATH pointing at an
older checkout) can stand beside it; each entry records the commit of the code it timed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from speed import time_ours  # bench/speed.py: one timed sample + update loop for every bench

from merlion_core.algos.registry import make_algorithm
from merlion_core.data.dataset import TransitionDataset
from merlion_core.representation.random_embeddings import TableRepresentation

if TYPE_CHECKING:  # typing only: the timed merlion_core may be an older checkout (PYTHONPATH)
    from merlion_core.algos.latent_bcq import LatentBCQ
    from merlion_core.algos.latent_cql import LatentCQL

RESULTS = Path(__file__).resolve().parent / "results" / "latent-step.json"


def random_dataset(n: int, obs_dim: int, n_actions: int, seed: int) -> TransitionDataset:
    rng = np.random.default_rng(seed)
    terminals = rng.random(n) < 0.05
    return TransitionDataset(
        observations=rng.random((n, obs_dim), dtype=np.float32),
        actions=rng.integers(0, n_actions, n).astype(np.int64),
        rewards=rng.standard_normal(n).astype(np.float32),
        next_observations=rng.random((n, obs_dim), dtype=np.float32),
        terminals=terminals,
        timeouts=np.zeros(n, dtype=bool),
        n_actions=n_actions,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=("cql", "bcq"), default="cql")
    parser.add_argument("--obs-dim", type=int, default=377)
    parser.add_argument("--n-actions", type=int, default=1500)
    parser.add_argument("--dim", type=int, default=30)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--label", default="current")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = random_dataset(20_000, args.obs_dim, args.n_actions, seed=0)
    table = torch.randn(args.n_actions, args.dim, generator=torch.Generator().manual_seed(0))
    representation = TableRepresentation("rand1", table, args.obs_dim)
    timings = [
        time_ours(args.algo, args.algo, dataset, {}, representation, args.steps, args.warmup, args.device)
        for _ in range(3)
    ]
    seconds = statistics.median(t["seconds"] / t["steps"] for t in timings)
    algo = cast(
        "LatentCQL | LatentBCQ",  # --algo is cql or bcq
        make_algorithm(args.algo, args.n_actions, args.obs_dim, {}, args.device, representation=representation),
    )
    algo.fit_latent_bound(
        algo.embed(
            torch.as_tensor(dataset.observations[:1000], device=algo.device),
            torch.as_tensor(dataset.actions[:1000], device=algo.device),
        )
    )
    obs_50 = torch.as_tensor(dataset.observations[:50], device=algo.device)  # one evaluation's 50 episodes
    act_seconds = []
    with torch.no_grad():
        for _ in range(7):
            start = time.perf_counter()
            algo.greedy(obs_50).cpu()  # .cpu() waits for a GPU to finish
            act_seconds.append(time.perf_counter() - start)
    module_file = sys.modules[type(algo).__module__].__file__
    assert module_file is not None  # a module loaded from a .py file
    code = Path(module_file).parent.parent  # the merlion_core timed
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=code
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "merlion_core"], capture_output=True, text=True, cwd=code
    ).stdout.strip()
    record = {
        "seconds_per_step": seconds,
        "steps_per_second": 1.0 / seconds,
        "act_seconds_50_states": statistics.median(act_seconds[2:]),
        "obs_dim": args.obs_dim,
        "n_actions": args.n_actions,
        "dim": args.dim,
        "steps": args.steps,
        "threads": args.threads,
        "device": args.device,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "commit": commit + ("+changes" if dirty else ""),
        "code": str(code),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[f"{args.algo}/{args.label}"] = {"algo": args.algo, "batch_size": timings[0]["batch_size"], **record}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"{args.algo}/{args.label}: {seconds * 1000:.0f} ms a step ({1.0 / seconds:.2f} steps/s), "
        f"{record['act_seconds_50_states'] * 1000:.1f} ms to act in 50 states, "
        f"obs {args.obs_dim}, |E| {args.dim}, {args.threads} thread(s), {args.device}"
    )


if __name__ == "__main__":
    main()
