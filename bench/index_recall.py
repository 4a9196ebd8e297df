"""Recall of the approximate lookup index on a *trained* encoder (issue 24).

bench/scale.py measures the index on untrained encoders over synthetic data; this script asks the same
question of an encoder trained on a real dataset (e.g. the 10^5-video recommender's MERLION encoder
from bench/scale_row.sh): queries are phi(a; s) of logged actions at logged states plus Gaussian noise
of ``--noise`` x the per-dimension spread (scale.py's queries), the reference states that key the
index are other logged states. Per candidate count C: query seconds, recall@1 against the exact L1
lookup, and how much farther the index's answer is than the exact one (median and 95th percentile
of (d_index - d_exact) / d_exact; 0 where they agree). One torch thread; the load average is recorded.

Usage: python bench/index_recall.py --encoder DIR --dataset DIR [--queries 256] [--reference-states 16]
  [--candidates 512,2048,8192] [--seed 0] [--out bench/results/index-recall.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed(fn) -> tuple[Any, dict[str, Any]]:
    load_start = os.getloadavg()
    started = time.perf_counter()
    out = fn()
    return out, {"seconds": time.perf_counter() - started, "load_start": load_start, "load_end": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", required=True, help="a trained representation folder")
    parser.add_argument("--dataset", required=True, help="the dataset it was trained on (queries and reference states)")
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--reference-states", type=int, default=16)
    parser.add_argument("--candidates", default="512,2048,8192")
    parser.add_argument("--noise", type=float, default=0.1, help="query noise, in units of each dimension's spread")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/index-recall.json")
    args = parser.parse_args()

    import torch

    from merlion_core.data.io import load_dataset
    from merlion_core.lookup import l1_nearest
    from merlion_core.lookup_index import IndexConfig, action_keys, build_index, query_index, recall_at_k
    from merlion_core.models.precision import flush_denormals
    from merlion_core.representation.artifacts import load_representation

    torch.set_num_threads(1)
    flush_denormals()
    loaded = load_representation(args.encoder)
    rep = loaded.representation.eval()
    data = load_dataset(args.dataset)
    if data.n_actions != rep.n_actions:
        parser.error(f"--dataset has {data.n_actions} actions, --encoder {rep.n_actions}")
    g = torch.Generator().manual_seed(args.seed)
    obs_all = torch.tensor(data.observations)
    act_all = torch.tensor(data.actions)
    rows = torch.randint(0, len(obs_all), (args.queries,), generator=g)
    obs, act = obs_all[rows], act_all[rows]
    with torch.no_grad():
        e = rep.embed(obs, act)
        query = e + args.noise * e.std(0) * torch.randn(e.shape, generator=g)
    (exact_idx, exact_dist), exact_time = timed(lambda: l1_nearest(query, representation=rep, obs_BS=obs, k=1))
    reference = obs_all[torch.randint(0, len(obs_all), (args.reference_states,), generator=g)]
    index_config = IndexConfig(seed=args.seed)
    with torch.no_grad():
        index, build_time = timed(lambda: build_index(action_keys(rep, reference), index_config))
    result: dict[str, Any] = {
        "encoder": args.encoder,
        "encoder_method": loaded.method,
        "encoder_config": dataclasses.asdict(loaded.config),
        "dataset": args.dataset,
        "n_actions": rep.n_actions,
        "queries": args.queries,
        "noise": args.noise,
        "reference_states": args.reference_states,
        "seed": args.seed,
        "index_config": dataclasses.asdict(index_config),
        "clusters": int(index.sizes_M.shape[0]),
        "distinct_exact_answers": int(exact_idx.unique().numel()),
        "exact_lookup": exact_time,
        "index_build": build_time,
        "index_queries": {},
        "cpus": os.cpu_count(),
    }
    for c in (int(x) for x in args.candidates.split(",")):
        probe = dataclasses.replace(index, config=dataclasses.replace(index_config, candidates=c))
        (idx, dist), query_time = timed(lambda probe=probe: query_index(probe, rep, query, obs, k=1))
        excess = ((dist - exact_dist) / exact_dist.clamp_min(1e-12)).flatten()
        result["index_queries"][str(c)] = {
            **query_time,
            "recall_at_1": recall_at_k(idx, exact_idx),
            "distance_excess_median": float(excess.median()),
            "distance_excess_p95": float(excess.quantile(0.95)),
        }
        print(f"C={c}: recall@1 {result['index_queries'][str(c)]['recall_at_1']:.3f}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"exact {exact_time['seconds']:.2f} s; wrote {out}")


if __name__ == "__main__":
    main()
