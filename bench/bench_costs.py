"""What `merlion bench` costs per env: agent steps/s, encoder time, evaluation time, and CPU-hours.

Usage: python bench/bench_costs.py [--envs maze,multistep-maze,recommender,dialogue] [--steps 250]
           [--warmup 20] [--encoder-steps 1000] [--eval-episodes 50] [--n-transitions 20000]
           [--device cpu] [--threads 1] [--precision fp32|bf16] [--out bench/results/bench-costs.json]
For each env, in one process with torch threads --threads: collect a medium 50%-noise dataset
(--n-transitions; the step cost does not depend on the dataset's size) and measure
  * the env's normalisers (1000 expert + 1000 random episodes, once per process; every
    evaluation reuses them) and the collection time;
  * each learned representation's training time for --encoder-steps steps at the bench's
    settings (the paper's |E| of the env, default batch);
  * gradient steps/s of latent CQL and latent BCQ (on the trained MERLION encoder), DiscreteCQL,
    DiscreteBCQ, BC and PLAS, each at its default batch size: --steps timed steps after
    --warmup, sample + update only (bench/speed.py's timer);
  * the time of one evaluation of --eval-episodes episodes of each trained agent (and of latent
    CQL on a Rand-1 table, the cheap lookup), with its mean episode length: evaluation time
    grows with the episode length, which a learned policy changes.
Encoders and agents train in --precision (models/precision.py; the benchmark's ``auto`` is bf16 on
a CPU with bf16 matrix units); evaluation always runs in fp32.
os.getloadavg() is recorded with every number (the machine is shared). The estimate: CPU-hours
of the 5-seed tables at 20,000 steps per agent, an evaluation of 50 episodes every 2,000 steps
(10 per run) and 10,000-step encoders, for the paper group and for the ablations. Writes --out
(envs not rerun are kept) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import time_ours  # noqa: E402  (bench/speed.py: sample + update_tensors, no host sync)

from merlion_core.benchmark.methods import bench_method, encoder_overrides, expand_methods  # noqa: E402
from merlion_core.data.collect import collect, env_normalisers  # noqa: E402
from merlion_core.data.summary import dataset_env_overrides
from merlion_core.evaluation import evaluate  # noqa: E402
from merlion_core.models.precision import compute_precision  # noqa: E402
from merlion_core.pipelines.encoder import representation_config  # noqa: E402
from merlion_core.representation.registry import get_method  # noqa: E402

AGENTS = ("cql", "bcq", "dcql", "dbcq", "bc", "plas")
LEARNED = ("merlion", "transition", "reconstruction", "cvae")
FULL = {"seeds": 5, "steps": 20_000, "eval_every": 2_000, "eval_episodes": 50, "encoder_steps": 10_000}


def load() -> float:
    return round(os.getloadavg()[0], 2)


def train_representation(
    method: str, dataset: Any, env_id: str, steps: int, device: str, precision: str = "fp32"
) -> tuple[Any, dict]:
    overrides = encoder_overrides(bench_method(f"{method}-cql"), 0, steps, env_id)
    config = representation_config(method, env_id, overrides)
    before = load()
    started = time.perf_counter()
    with compute_precision(precision):
        rep, _ = get_method(method).fit(dataset, config, device=device)
    seconds = time.perf_counter() - started
    return rep, {
        "method": method,
        "steps": steps,
        "dim": int(rep.dim),
        "seconds": round(seconds, 3),
        "seconds_per_1000_steps": round(1000 * seconds / steps, 3),
        "load_before": before,
        "load_after": load(),
    }


def time_evaluation(agent: Any, env_id: str, episodes: int, env_overrides: Any) -> dict[str, Any]:
    agent.eval()
    before = load()
    started = time.perf_counter()
    result = evaluate(agent, env_id, episodes, seed=0, env_overrides=env_overrides)
    seconds = time.perf_counter() - started
    agent.train()
    return {
        "episodes": episodes,
        "seconds": round(seconds, 3),
        "mean_length": float(result.lengths.mean()),
        "normalised_score": round(result.normalised_score, 2),
        "load_before": before,
        "load_after": load(),
    }


def measure_env(env: str, args: argparse.Namespace) -> dict[str, Any]:
    from merlion_core.algos.registry import make_algorithm
    from merlion_core.data.sampler import BatchSampler
    from merlion_core.envs import make_model, resolve_env_id

    env_id = resolve_env_id(env)
    out: dict[str, Any] = {"env_id": env_id, "n_transitions": args.n_transitions}
    started = time.perf_counter()
    expert, random = env_normalisers(env_id)
    out["normalisers"] = {
        "expert_return": expert,
        "random_return": random,
        "seconds": round(time.perf_counter() - started, 3),
        "load": load(),
    }
    started = time.perf_counter()
    dataset = collect(env_id, "medium", 0.5, args.n_transitions, 0)
    out["collect_seconds"] = round(time.perf_counter() - started, 3)
    env_overrides = dataset_env_overrides(dataset)
    model = make_model(env_id, env_overrides)
    out.update(n_actions=int(model.n_actions), obs_dim=int(model.obs_dim), max_steps=int(model.max_steps))
    print(
        f"{env_id}: normalisers {out['normalisers']['seconds']:.1f} s, collect {out['collect_seconds']:.1f} s",
        flush=True,
    )

    encoders, representations = [], {}
    for method in LEARNED:
        rep, record = train_representation(method, dataset, env_id, args.encoder_steps, args.device, args.precision)
        representations[method] = rep
        encoders.append(record)
        print(
            f"  encoder {method} (dim {record['dim']}): {record['seconds_per_1000_steps']:.1f} s / 1000 steps",
            flush=True,
        )
    out["encoders"] = encoders
    table_rep, _ = get_method("rand1").fit(
        dataset,
        representation_config("rand1", env_id, encoder_overrides(bench_method("rand1-cql"), 0, 0, env_id)),
        device=args.device,
    )

    agents = []
    for algo in AGENTS:
        representation = representations["merlion"] if algo in ("cql", "bcq") else None
        before = load()
        record = time_ours(
            algo, algo, dataset, {}, representation, args.steps, args.warmup, args.device, precision=args.precision
        )
        record.update(load_before=before, load_after=load(), representation="merlion" if representation else None)
        agent = make_algorithm(algo, dataset.n_actions, dataset.obs_dim, {}, args.device, representation=representation)
        sampler = BatchSampler(dataset, agent.config.batch_size, seed=0, device=str(agent.device))
        for _ in range(args.warmup):  # a few updates, so the policy is not the initial one
            agent.update_tensors(sampler.sample())
        record["evaluation"] = time_evaluation(agent, env_id, args.eval_episodes, env_overrides)
        agents.append(record)
        print(
            f"  {algo:5s} batch {record['batch_size']:4d}: {record['steps_per_second']:7.1f} steps/s, "
            f"eval {record['evaluation']['seconds']:6.1f} s (mean length {record['evaluation']['mean_length']:.1f}), "
            f"load {record['load_before']}",
            flush=True,
        )
    cql_table = make_algorithm("cql", dataset.n_actions, dataset.obs_dim, {}, args.device, representation=table_rep)
    sampler = BatchSampler(dataset, cql_table.config.batch_size, seed=0, device=str(cql_table.device))
    for _ in range(args.warmup):
        cql_table.update_tensors(sampler.sample())
    out["evaluation_cql_on_rand1"] = time_evaluation(cql_table, env_id, args.eval_episodes, env_overrides)
    out["agents"] = agents
    out["estimate"] = estimate(env_id, out)
    return out


def run_cost(record: dict[str, Any], algo: str, table: bool, longest: bool) -> tuple[float, float]:
    """(train, evaluation) seconds of one full run of ``algo`` from the measured numbers; ``longest``:
    every evaluation episode runs to the env's step limit (evaluation time scaled by length)."""
    agent = next(a for a in record["agents"] if a["algo"] == algo)
    evaluation = record["evaluation_cql_on_rand1"] if table else agent["evaluation"]
    scale = FULL["eval_episodes"] / evaluation["episodes"]
    if longest:
        scale *= record["max_steps"] / max(evaluation["mean_length"], 1.0)
    n_evals = FULL["steps"] // FULL["eval_every"]
    return FULL["steps"] / agent["steps_per_second"], n_evals * scale * evaluation["seconds"]


def estimate(env_id: str, record: dict[str, Any]) -> dict[str, Any]:
    """CPU-hours (one thread per run) of the paper group and of the ablations, 5 seeds each."""
    encoder_seconds = {
        e["method"]: e["seconds_per_1000_steps"] * FULL["encoder_steps"] / 1000 for e in record["encoders"]
    }
    encoder_seconds.update({"merlion-no-p": encoder_seconds["merlion"]})
    groups = {}
    for group, methods, longest in (
        ("paper", "paper", False),
        ("ablations", "ablations", False),
        ("paper_longest_episodes", "paper", True),
    ):
        total, parts = 0.0, {}
        encoders_done: set[str] = set()
        for name in expand_methods(methods, env_id):  # the group as the bench runs it (no External on dialogue)
            method = bench_method(name)
            table = method.representation in ("rand1", "rand2", "external", "transition")
            train, evaluation = run_cost(record, method.algo, table, longest)
            seconds = FULL["seeds"] * (train + evaluation)
            key = method.name if method.representation_overrides else (method.representation or "")
            if method.representation in encoder_seconds or method.representation_overrides:
                if key not in encoders_done:
                    encoders_done.add(key)
                    seconds += (
                        FULL["seeds"]
                        * encoder_seconds["merlion" if method.representation_overrides else method.representation]
                    )
            parts[name] = round(seconds / 3600, 2)
            total += seconds
        groups[group] = {"cpu_hours": round(total / 3600, 1), "per_method_cpu_hours": parts}
    return {
        "settings": FULL,
        "note": "one torch thread per run; latent runs on state-independent tables (rand1, "
        "rand2, external, transition) use the Rand-1 evaluation time, the others the MERLION one; train steps/s "
        "of every latent run = the MERLION-encoder one; evaluation time at the measured episode lengths "
        "(paper_longest_episodes: every episode runs to the step limit)",
        **groups,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="maze,multistep-maze,recommender,dialogue")
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--encoder-steps", type=int, default=1000)
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--n-transitions", type=int, default=20_000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "bench-costs.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out_path = Path(args.out)
    document = json.loads(out_path.read_text()) if out_path.exists() else {}
    document.update(
        {
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "torch": torch.__version__,
                "threads": args.threads,
                "device": args.device,
                "precision": args.precision,
            },
            "settings": {k: v for k, v in vars(args).items() if k not in ("envs", "out")},
        }
    )
    document.setdefault("envs", {})
    for env in [e.strip() for e in args.envs.split(",") if e.strip()]:
        record = measure_env(env, args)
        document["envs"][record["env_id"]] = record
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(document, indent=1) + "\n")
        est = record["estimate"]
        print(
            f"  estimate: paper group {est['paper']['cpu_hours']} CPU-h, ablations {est['ablations']['cpu_hours']} "
            "CPU-h (5 seeds)",
            flush=True,
        )


if __name__ == "__main__":
    main()
