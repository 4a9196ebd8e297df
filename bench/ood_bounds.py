"""How tight the bounds on max_a G(a | s) are on a trained MERLION encoder (issue 24).

The exact OOD indicator of Eq. 7 (``losses.ood_indicator_bounded``) scans every action's logit for
the rows that the bounds leave open. This script measures, at logged states of a dataset and uniform
a_j (as in training), the true max logit, the upper bound the training step uses
(``BehaviourModel.max_logit_upper_bound``), its excess over the true max against the margin
-log(tau) that would decide a row, and the share of rows each bound decides.

Usage: python bench/ood_bounds.py --encoder DIR --dataset DIR [--states 2048] [--seed 0]
  [--out bench/results/ood-bounds.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--states", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--clusters", default="80,316", help="k-means cluster counts of per-cluster bounds to measure too (empty: none)"
    )
    parser.add_argument("--out", default="bench/results/ood-bounds.json")
    args = parser.parse_args()

    import torch

    from merlion_core.data.io import load_dataset
    from merlion_core.models.heads import BehaviourModel
    from merlion_core.representation.artifacts import load_representation
    from merlion_core.representation.merlion import MerlionRepresentation

    torch.set_num_threads(1)
    loaded = load_representation(args.encoder)
    rep = loaded.representation
    if not isinstance(rep, MerlionRepresentation):
        parser.error(f"--encoder: a MERLION representation is needed, got {loaded.method}")
    model: BehaviourModel = rep.behaviour_model
    tau = float(rep.config.tau)
    data = load_dataset(args.dataset)
    g = torch.Generator().manual_seed(args.seed)
    rows = torch.randint(0, len(data.actions), (args.states,), generator=g)
    act_j = torch.randint(0, data.n_actions, (args.states,), generator=g)
    with torch.no_grad():
        h = model.features(torch.tensor(data.observations[rows.numpy()]))
        exact_max = model.chunked_max_logit(h, 16_384)
        upper = model.max_logit_upper_bound(h)
        logit_j = model.pair_logits(h, act_j)
        logit_logged = model.pair_logits(h, torch.tensor(data.actions[rows.numpy()]))
    margin = -math.log(tau)
    excess = upper - exact_max
    ood = logit_j - exact_max <= math.log(tau)
    lower = torch.maximum(logit_j, logit_logged)  # the training step's lower bound also has the negatives
    result = {
        "encoder": args.encoder,
        "dataset": args.dataset,
        "n_actions": data.n_actions,
        "states": args.states,
        "tau": tau,
        "margin_that_decides": margin,
        "upper_bound_excess_mean": float(excess.mean()),
        "upper_bound_excess_min": float(excess.min()),
        "upper_decides_share": float((logit_j - upper > math.log(tau)).float().mean()),
        "lower_decides_share": float((logit_j - lower <= math.log(tau)).float().mean()),
        "ood_share_exact": float(ood.float().mean()),
        "h_norm_mean": float(h.norm(dim=1).mean()),
        "max_logit_mean": float(exact_max.mean()),
        "load": os.getloadavg(),
    }
    from merlion_core.lookup_index import kmeans

    weight, bias = model.output.weight.detach(), model.output.bias.detach()
    result["cluster_bounds"] = {}
    for k in (int(x) for x in args.clusters.split(",") if x.strip()):
        centres, assign = kmeans(weight, k, 3, args.seed)  # bound: max_k h.c_k + ||h|| r_k + max b
        radius = torch.zeros(k).scatter_reduce(
            0, assign, (weight - centres[assign]).norm(dim=1), "amax", include_self=False
        )
        cluster_upper = (h @ centres.T + h.norm(dim=1, keepdim=True) * radius).amax(dim=1) + bias.max()
        result["cluster_bounds"][str(k)] = {
            "excess_mean": float((cluster_upper - exact_max).mean()),
            "excess_min": float((cluster_upper - exact_max).min()),
            "decides_share": float((logit_j - cluster_upper > math.log(tau)).float().mean()),
        }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
