"""Gradient steps per second: latent CQL, latent BCQ, DiscreteCQL and the MERLION encoder in fp32 and
bf16, against d3rlpy's DiscreteCQL, same data, same run.

Usage: python bench/speed.py [--dataset PATH] [--encoder DIR] [--steps 300] [--warmup 30]
                             [--threads 1] [--device cpu] [--d3rlpy-python PATH] [--end-to-end]
                             [--precisions fp32,bf16] [--compiled]
Dataset: --dataset, else the maze medium 50%-noise dataset (100k transitions, seed 0) collected
here. Each timed step is one minibatch sample + one gradient update (no evaluation), after
--warmup untimed steps, torch threads --threads, for:
  * our latent CQL ("cql") on the External representation of the maze (a table lookup, the same
    kind of cost as a trained MERLION encoder's phi) and, with --encoder, on that encoder;
  * our latent BCQ ("bcq") on the same representation, at its default batch;
  * our DiscreteCQL ("dcql");
  * the MERLION encoder (Algorithm 2, all four models, the maze's paper config), its steps/s and
    the seconds 10k steps take at that rate;
  * d3rlpy 2.8.1's DiscreteCQL (alpha 0.5), through merlion_core.peers.d3rlpy_peer, in this
    interpreter if it has d3rlpy, else in its own virtualenv (--d3rlpy-python, else
    $MERLION_D3RLPY_PYTHON, else /work/venv-d3rlpy/bin/python).
Batch sizes: each at its default (latent CQL 256, our dcql 64, d3rlpy 32) and all at 64 (the
equal-batch comparison: our dcql's default and the non-Atari discrete BCQ setting).
Each of ours runs in every --precisions (models/precision.py: networks under bf16 autocast, fp32
master weights and losses); --compiled adds latent CQL at batch 256 with torch.compile'd networks
(models/mlp.py compile_networks) in each precision.
--end-to-end adds the maze pipeline (collect 100k, MERLION encoder 10k steps with the default
config, latent CQL 20k steps, evaluate 50 episodes) at --e2e-precision (default auto), many minutes:
run it on a quiet CPU. Goal (issue 22): 600 s on this machine's 2 cores.
Writes bench/results/speed.json (parts not rerun are kept) and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch

from merlion_core.algos.registry import make_algorithm
from merlion_core.data import collect as collect_module
from merlion_core.data.collect import collect
from merlion_core.data.io import load_dataset, save_dataset
from merlion_core.data.sampler import BatchSampler
from merlion_core.data.summary import dataset_env_overrides
from merlion_core.evaluation import evaluate
from merlion_core.models.mlp import compile_networks, compile_status, resolve_device
from merlion_core.models.precision import PRECISIONS, compute_precision, flush_denormals, resolve_precision
from merlion_core.peers import d3rlpy_peer
from merlion_core.pipelines.encoder import representation_config
from merlion_core.representation import merlion as merlion_method
from merlion_core.representation.base import Representation
from merlion_core.representation.external import ExternalConfig
from merlion_core.representation.external import build as build_external
from merlion_core.representation.registry import get_method

EQUAL_BATCH = 64
E2E_GOAL_SECONDS = 600  # issue 22: the maze pipeline in at most 10 minutes on this machine
VENV_PYTHON = "/work/venv-d3rlpy/bin/python"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ours(
    label: str,
    algo: str,
    dataset: Any,
    overrides: dict,
    representation: Any,
    steps: int,
    warmup: int,
    device: str,
    cuda_graph: bool = True,
    precision: str = "fp32",
    compiled: bool = False,
) -> dict[str, Any]:
    """Steps/s of one of our algorithms: sample + update_tensors (no host sync per step, as training runs)."""
    agent = make_algorithm(algo, dataset.n_actions, dataset.obs_dim, overrides, device, representation=representation)
    agent.cuda_graph = cuda_graph
    agent.precision = precision
    if compiled:
        compile_networks(agent)
    sampler = BatchSampler(dataset, agent.config.batch_size, seed=0, device=str(agent.device))
    for _ in range(warmup):
        agent.update_tensors(sampler.sample())
    sync(agent.device)
    started = time.perf_counter()
    for _ in range(steps):
        parts = agent.update_tensors(sampler.sample())
    float(parts["loss"])  # wait for the last step
    sync(agent.device)
    seconds = time.perf_counter() - started
    return {
        "label": label,
        "algo": algo,
        "batch_size": int(agent.config.batch_size),
        "default_batch": "batch_size" not in overrides,
        "steps": steps,
        "precision": precision,
        "compiled": compile_status(agent) if compiled else "eager",
        "warmup": warmup,
        "seconds": seconds,
        "steps_per_second": steps / seconds,
        "device": str(agent.device),
        "step_mode": agent.step_mode,
    }


def time_encoder(dataset: Any, steps: int, warmup: int, device: str, precision: str) -> dict[str, Any]:
    """Steps/s of the MERLION encoder's training (Algorithm 2, all four models, the env's paper config)."""
    config = representation_config("merlion", dataset.meta.env_id, {})
    config = dataclasses.replace(config, steps=warmup + steps, log_every=warmup)
    rep = merlion_method.build(config, dataset.n_actions, dataset.obs_dim)
    marks = []
    with compute_precision(precision):
        for step, _ in merlion_method.train_steps(rep, dataset, config, device=device):
            marks.append((step, time.perf_counter()))
    (first, t0), (last, t1) = marks[0], marks[-1]
    rate = (last - first) / (t1 - t0)
    return {
        "label": "encoder/merlion",
        "algo": "merlion",
        "batch_size": int(config.batch_size),
        "default_batch": True,
        "steps": last - first,
        "precision": precision,
        "compiled": "eager",
        "warmup": first,
        "seconds": t1 - t0,
        "steps_per_second": rate,
        "seconds_per_10k_steps": 10_000 / rate,
        "device": device,
        "step_mode": rep.step_mode,
    }


class PeerTiming(TypedDict):
    """What time_peer passes to d3rlpy_peer.time_d3rlpy and time_d3rlpy_isolated alike."""

    steps: int
    warmup: int
    seed: int
    device: str
    overrides: dict[str, Any]


def time_peer(
    label: str,
    dataset_path: Path,
    overrides: dict,
    steps: int,
    warmup: int,
    device: str,
    threads: int,
    python: str,
) -> dict[str, Any]:
    kwargs = PeerTiming(steps=steps, warmup=warmup, seed=0, device=device, overrides=overrides)
    if python == sys.executable:
        record = d3rlpy_peer.time_d3rlpy("dcql", dataset_path, **kwargs)
    else:
        record = d3rlpy_peer.time_d3rlpy_isolated("dcql", dataset_path, python=python, threads=threads, **kwargs)
    record.pop("config", None)
    return {"label": label, "default_batch": "batch_size" not in overrides, **record}


def speed_part(args: argparse.Namespace, dataset: Any, dataset_path: Path) -> dict[str, Any]:
    external = build_external(ExternalConfig(env=dataset.meta.env_id or "maze"), dataset.n_actions, dataset.obs_dim)
    reps: dict[str, Representation] = {"external": external}
    if args.encoder:
        from merlion_core.representation.artifacts import load_representation

        reps["merlion"] = load_representation(args.encoder).representation
    records = []

    def add(record: dict) -> None:
        records.append(record)
        print(json.dumps(record), flush=True)

    for precision in args.precisions:
        for name, rep in reps.items():
            for overrides in ({}, {"batch_size": EQUAL_BATCH}):
                add(
                    time_ours(
                        f"latent-cql/{name}",
                        "cql",
                        dataset,
                        overrides,
                        rep,
                        args.steps,
                        args.warmup,
                        args.device,
                        precision=precision,
                    )
                )
            if args.compiled:
                add(
                    time_ours(
                        f"latent-cql/{name}/compiled",
                        "cql",
                        dataset,
                        {},
                        rep,
                        args.steps,
                        args.warmup,
                        args.device,
                        precision=precision,
                        compiled=True,
                    )
                )
            if torch.device(args.device).type == "cuda":  # the same without CUDA graphs, for comparison
                add(
                    time_ours(
                        f"latent-cql/{name}/eager",
                        "cql",
                        dataset,
                        {},
                        rep,
                        args.steps,
                        args.warmup,
                        args.device,
                        cuda_graph=False,
                        precision=precision,
                    )
                )
            add(
                time_ours(
                    f"latent-bcq/{name}",
                    "bcq",
                    dataset,
                    {},
                    rep,
                    args.steps,
                    args.warmup,
                    args.device,
                    precision=precision,
                )
            )
        add(time_ours("dcql", "dcql", dataset, {}, None, args.steps, args.warmup, args.device, precision=precision))
        add(time_encoder(dataset, args.steps, args.warmup, args.device, precision))
    python = args.d3rlpy_python or d3rlpy_peer.d3rlpy_python() or (VENV_PYTHON if Path(VENV_PYTHON).exists() else None)
    if python is None:
        print(f"d3rlpy: skipped ({d3rlpy_peer.INSTALL_HINT})", file=sys.stderr)
    else:
        for overrides in ({}, {"batch_size": EQUAL_BATCH}):
            add(
                time_peer(
                    "d3rlpy-dcql", dataset_path, overrides, args.steps, args.warmup, args.device, args.threads, python
                )
            )
    return {"records": records, "ratios": ratios(records), "d3rlpy_python": python}


def ratios(records: list[dict]) -> dict[str, float]:
    """Our steps/s over d3rlpy DiscreteCQL's, at default batches and at EQUAL_BATCH (goal for latent CQL: >= 2)."""

    def rate(label: str, default: bool, precision: str | None = None) -> float | None:
        rows = [
            r
            for r in records
            if r["label"] == label
            and (r["default_batch"] if default else r["batch_size"] == EQUAL_BATCH)
            and (precision is None or r.get("precision") == precision)
        ]
        return rows[0]["steps_per_second"] if rows else None

    out = {}
    precisions = sorted({r["precision"] for r in records if r.get("precision")})
    for precision in precisions:
        for mine in ("latent-cql/external", "latent-cql/merlion", "dcql"):
            for default, tag in ((True, "default batches"), (False, f"batch {EQUAL_BATCH}")):
                a, b = rate(mine, default, precision), rate("d3rlpy-dcql", default)
                if a is not None and b is not None:
                    out[f"{mine} {precision} / d3rlpy-dcql ({tag})"] = a / b
    if "bf16" in precisions and "fp32" in precisions:
        for mine in (
            "latent-cql/external",
            "latent-cql/merlion",
            "latent-bcq/external",
            "latent-bcq/merlion",
            "dcql",
            "encoder/merlion",
        ):
            a, b = rate(mine, True, "bf16"), rate(mine, True, "fp32")
            if a is not None and b is not None:
                out[f"{mine} bf16 / fp32 (default batch)"] = a / b
    return out


def end_to_end(
    device: str,
    n: int = 100_000,
    encoder_overrides: dict | None = None,
    cql_steps: int = 20_000,
    episodes: int = 50,
    precision: str = "auto",
) -> dict[str, Any]:
    """The maze pipeline, stage by stage, from a cold normaliser cache (smaller sizes: smoke runs only)."""
    precision = resolve_precision(precision, resolve_device(device))
    collect_module._normalisers.cache_clear()
    stages: dict[str, float] = {}
    started = time.perf_counter()
    dataset = collect("maze", "medium", 0.5, n, seed=0)
    stages[f"collect_{n}"] = time.perf_counter() - started
    t = time.perf_counter()
    config = representation_config("merlion", dataset.meta.env_id, encoder_overrides or {})
    with compute_precision(precision):
        rep, _ = get_method("merlion").fit(dataset, config, device=device)
    stages[f"encoder_{config.steps}_steps"] = time.perf_counter() - t
    t = time.perf_counter()
    agent = make_algorithm("cql", dataset.n_actions, dataset.obs_dim, None, device, representation=rep)
    agent.precision = precision
    sampler = BatchSampler(dataset, agent.config.batch_size, seed=0, device=str(agent.device))
    for _ in agent.train_steps(sampler, cql_steps, log_every=cql_steps):
        pass
    stages[f"latent_cql_{cql_steps}_steps"] = time.perf_counter() - t
    step_modes = {"encoder": getattr(rep, "step_mode", "eager"), "latent_cql": agent.step_mode}
    t = time.perf_counter()
    agent.eval()
    env_id = dataset.meta.env_id
    assert env_id is not None  # collect() records its simulator
    result = evaluate(agent, env_id, episodes, seed=0, env_overrides=dataset_env_overrides(dataset))
    stages[f"evaluate_{episodes}_episodes"] = time.perf_counter() - t
    total = time.perf_counter() - started
    return {
        "stages_seconds": stages,
        "total_seconds": total,
        "goal_seconds": E2E_GOAL_SECONDS,
        "meets_goal": total <= E2E_GOAL_SECONDS,
        "precision": precision,
        "normalised_score": result.normalised_score,
        "success_rate": result.success_rate,
        "device": device,
        "step_modes": step_modes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", help="a saved dataset (default: collect maze medium/0.5/100k/seed 0)")
    parser.add_argument("--encoder", help="also time latent CQL on this trained representation folder")
    parser.add_argument("--steps", type=int, default=300, help="timed gradient steps per measurement")
    parser.add_argument("--warmup", type=int, default=30, help="untimed steps before each measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (also for d3rlpy)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (d3rlpy runs on the same)")
    parser.add_argument("--d3rlpy-python", help="interpreter with d3rlpy 2.8.1 (its own virtualenv)")
    parser.add_argument("--end-to-end", action="store_true", help="also time the whole maze pipeline (minutes)")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16")
    parser.add_argument("--compiled", action="store_true", help="also latent CQL with torch.compile'd networks")
    parser.add_argument("--e2e-precision", default="auto", choices=PRECISIONS, help="the pipeline's precision")
    parser.add_argument("--skip-speed", action="store_true", help="with --end-to-end: only the pipeline")
    parser.add_argument("--out", default="bench/results/speed.json")
    args = parser.parse_args()
    args.precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    bad = [p for p in args.precisions if p not in ("fp32", "bf16")]
    if bad or not args.precisions:
        parser.error(f"--precisions: fp32 and/or bf16, got {args.precisions}")
    torch.set_num_threads(args.threads)
    flush_denormals()  # as the training pipelines do
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.exists() else {}
    host = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if not args.skip_speed:  # the host block describes the speed part; the pipeline keeps its own
        report.update(
            {
                "host": host,
                "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
            }
        )
        load_at_start = os.getloadavg()
        with tempfile.TemporaryDirectory(prefix="merlion-speed-") as scratch:
            if args.dataset:
                dataset_path = Path(args.dataset)
                dataset = load_dataset(dataset_path)
            else:
                dataset = collect("maze", "medium", 0.5, 100_000, seed=0)
                dataset_path = save_dataset(dataset, Path(scratch) / "maze-medium-0.5-100k")
            part = speed_part(args, dataset, dataset_path)
        d3rlpy_versions = {r["d3rlpy_version"] for r in part["records"] if "d3rlpy_version" in r}
        report["versions"]["d3rlpy"] = d3rlpy_versions.pop() if d3rlpy_versions else None
        report["speed"] = {
            "dataset": args.dataset or "collect('maze', 'medium', 0.5, 100_000, seed=0)",
            "n_transitions": dataset.n_transitions,
            "n_actions": dataset.n_actions,
            "device": args.device,
            "steps": args.steps,
            "warmup": args.warmup,
            "equal_batch": EQUAL_BATCH,
            **part,
            "load_average": {"start": load_at_start, "end": os.getloadavg()},
        }
    if args.end_to_end:
        load_at_start = os.getloadavg()
        report["end_to_end"] = {
            **end_to_end(args.device, precision=args.e2e_precision),
            "host": host,
            "load_average": {"start": load_at_start, "end": os.getloadavg()},
        }
        print(json.dumps(report["end_to_end"]), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown_table(report))


def markdown_table(report: dict) -> str:
    rows = ["| run | precision | batch | steps/s |", "| --- | --- | ---: | ---: |"]
    for r in report.get("speed", {}).get("records", []):
        rows.append(
            f"| {r['label']} | {r.get('precision', 'fp32')} | {r['batch_size']} | {r['steps_per_second']:.1f} |"
        )
    for name, value in report.get("speed", {}).get("ratios", {}).items():
        rows.append(f"| ratio {name} | | | {value:.2f}x |")
    if "end_to_end" in report:
        e2e = report["end_to_end"]
        rows += [
            f"| end-to-end {k} | {e2e.get('precision', 'fp32')} | | {v:.1f} s |"
            for k, v in e2e["stages_seconds"].items()
        ]
        rows.append(f"| end-to-end total (goal {e2e['goal_seconds']} s) | | | {e2e['total_seconds']:.1f} s |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
