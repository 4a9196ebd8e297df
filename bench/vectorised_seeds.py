"""Many seeds in one step: the MERLION encoder's training step for S seeds as one vmapped model.

Usage: python bench/vectorised_seeds.py [--dataset PATH] [--seeds 5] [--steps 200] [--warmup 20]
                                        [--precisions fp32,bf16] [--threads 1]

Builds S MERLION representations (seeds 0..S-1, the env's paper config), stacks their weights
with ``torch.func.stack_module_state`` and runs Algorithm 2's losses (representation/merlion.py
``merlion_losses``) under ``torch.func.vmap`` over the seed axis, each seed with its own batch
stream (the same draws, in the same order, as a separate run of that seed), one fused Adam over
the stacked weights. Times, per precision: one separate eager step of one seed, one vmapped step
of one seed, one vmapped step of S seeds. Checks that vmapped seed k equals a separate run of
seed k (the largest loss difference over the timed steps). The cosine learning-rate decay is left
out of both (constant lr), which does not change a step's cost.
Writes bench/results/vectorised-seeds.json and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import cast

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from merlion_core.data.collect import collect
from merlion_core.data.io import load_dataset
from merlion_core.models.precision import compute_precision
from merlion_core.pipelines.encoder import representation_config
from merlion_core.representation import merlion as merlion_method


class LossOfOneSeed(nn.Module):
    """Algorithm 2's summed loss for one seed's representation (what vmap maps over)."""

    def __init__(self, rep: merlion_method.MerlionRepresentation, data: dict, config) -> None:
        super().__init__()
        self.rep, self.data, self.config = rep, data, config

    def forward(self, idx: torch.Tensor, act_j: torch.Tensor) -> torch.Tensor:
        d = self.data
        terms = merlion_method.merlion_losses(
            self.rep, d["obs"][idx], d["act"][idx], d["rew"][idx], d["next_obs"][idx], act_j, self.config
        )
        return cast(torch.Tensor, sum(v for k, v in terms.items() if k.endswith("_loss")))  # never empty


def draws(generator: torch.Generator, n: int, n_actions: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's batch indices and comparison actions, in train_steps' order."""
    idx = torch.randint(0, n, (batch,), generator=generator)
    return idx, torch.randint(0, n_actions, (batch,), generator=generator)


def separate_losses(dataset, config, data, steps: int, precision: str) -> tuple[list[float], float]:
    """A separate eager run of ``config.seed``: its losses and its seconds per step."""
    rep = merlion_method.build(config, dataset.n_actions, dataset.obs_dim)
    model = LossOfOneSeed(rep, data, config)
    optimizer = torch.optim.Adam(rep.parameters(), lr=config.lr, fused=True)
    generator = torch.Generator().manual_seed(config.seed)
    losses, started = [], time.perf_counter()
    for _ in range(steps):
        with compute_precision(precision):
            loss = model(*draws(generator, len(data["act"]), dataset.n_actions, config.batch_size))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    return losses, (time.perf_counter() - started) / steps


def vmapped_losses(
    dataset, config, data, seeds: int, steps: int, warmup: int, precision: str
) -> tuple[list[list[float]], float]:
    """``seeds`` seeds as one vmapped model: each step's losses per seed and the seconds per timed step."""
    reps = [
        merlion_method.build(dataclasses.replace(config, seed=s), dataset.n_actions, dataset.obs_dim)
        for s in range(seeds)
    ]
    params, buffers = stack_module_state(reps)
    model = LossOfOneSeed(reps[0], data, config)
    prefix = "rep."
    optimizer = torch.optim.Adam(list(params.values()), lr=config.lr, fused=True)
    generators = [torch.Generator().manual_seed(s) for s in range(seeds)]

    def one(p, b, idx, act_j):
        state = {prefix + k: v for k, v in {**p, **b}.items()}
        return functional_call(model, state, (idx, act_j))

    losses, started = [], None
    for step in range(warmup + steps):
        if step == warmup:
            started = time.perf_counter()
        pairs = [draws(g, len(data["act"]), dataset.n_actions, config.batch_size) for g in generators]
        idx, act_j = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
        with compute_precision(precision):
            loss = vmap(one)(params, buffers, idx, act_j)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
        losses.append(loss.detach().tolist())
    assert started is not None  # set at step == warmup: the timed steps ran
    return losses, (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", help="a saved dataset (default: collect maze medium/0.5/100k/seed 0)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="bench/results/vectorised-seeds.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = load_dataset(args.dataset) if args.dataset else collect("maze", "medium", 0.5, 100_000, seed=0)
    config = dataclasses.replace(representation_config("merlion", dataset.meta.env_id, {}), lr_decay=False)
    data = merlion_method.dataset_tensors(dataset, torch.device("cpu"))
    load_at_start = os.getloadavg()
    rows = []
    for precision in [p.strip() for p in args.precisions.split(",") if p.strip()]:
        total = args.warmup + args.steps
        sep = {
            s: separate_losses(dataset, dataclasses.replace(config, seed=s), data, total, precision)
            for s in range(args.seeds)
        }
        one_losses, one_seconds = vmapped_losses(dataset, config, data, 1, args.steps, args.warmup, precision)
        many_losses, many_seconds = vmapped_losses(
            dataset, config, data, args.seeds, args.steps, args.warmup, precision
        )
        separate_seconds = sum(v[1] for v in sep.values()) / args.seeds
        gap = max(abs(many_losses[t][s] - sep[s][0][t]) for s in range(args.seeds) for t in range(total))
        first_gap = max(abs(many_losses[0][s] - sep[s][0][0]) for s in range(args.seeds))
        rows.append(
            {
                "precision": precision,
                "seeds": args.seeds,
                "steps": args.steps,
                "warmup": args.warmup,
                "separate_ms_per_step_one_seed": 1000 * separate_seconds,
                "vmapped_ms_per_step_one_seed": 1000 * one_seconds,
                "vmapped_ms_per_step_all_seeds": 1000 * many_seconds,
                "all_seeds_vmapped_over_one_separate": many_seconds / separate_seconds,
                "all_seeds_separate_over_vmapped": args.seeds * separate_seconds / many_seconds,
                "max_loss_gap_vmapped_vs_separate_first_step": first_gap,
                "max_loss_gap_vmapped_vs_separate_all_steps": gap,
                "final_losses_vmapped": many_losses[-1],
                "final_losses_separate": [sep[s][0][-1] for s in range(args.seeds)],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    report = {
        "what": "MERLION encoder step (Algorithm 2, maze paper config, batch 128), S seeds vmapped",
        "host": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "dataset": args.dataset or "collect('maze', 'medium', 0.5, 100_000, seed=0)",
        "rows": rows,
        "load_average": {"start": load_at_start, "end": os.getloadavg()},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        "| precision | one seed, separate (ms) | one seed, vmapped (ms) | "
        f"{args.seeds} seeds, vmapped (ms) | vmapped / one separate |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['precision']} | {r['separate_ms_per_step_one_seed']:.1f} | {r['vmapped_ms_per_step_one_seed']:.1f} "
            f"| {r['vmapped_ms_per_step_all_seeds']:.1f} | {r['all_seeds_vmapped_over_one_separate']:.2f}x |"
        )


if __name__ == "__main__":
    main()
