"""Latent CQL as the authors ran it, change by change (issue: latent RL tied to real actions).

Trains one MERLION-CQL agent per (variant, seed) with the benchmark's settings (10,000 steps, an
evaluation of 50 episodes every 2,000, the agent's diagnostics at each) and writes
bench/results/latent-ablation/<env>/<variant>-seed<k>.json; ``--report`` aggregates the folder
into summary.json (last score, mean of the last three evaluations, 95% t intervals over seeds, the
last diagnostics).

Usage:
  python bench/latent_ablation.py --env maze --dataset runs/maze100k --encoder runs/enc-maze-s{seed} \
      --variant all --seed 0
  python bench/latent_ablation.py --env maze --report
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from merlion_core.benchmark.methods import LEGACY_LATENT_CQL  # noqa: E402
from merlion_core.benchmark.report import last_k_score  # noqa: E402

OUT = REPO / "bench" / "results" / "latent-ablation"

BEFORE = dict(LEGACY_LATENT_CQL)
VARIANTS: dict[str, dict] = {
    # the committed tables' setting: SAC backup, cube box from the data, uniform box proposals, no BC start
    "before": BEFORE,
    # change 1 alone: deterministic backup, BC start, per-dimension normalisation (box proposals kept)
    "faithful": {"cql_samples": "box"},
    # change 2 alone: CQL(H) over real actions' phi(a_j; s), everything else as before
    "real": {**BEFORE, "cql_samples": "real"},
    # changes 1 and 2 with real-action proposals only
    "all": {"cql_samples": "real"},
    # "all" less its BC start
    "all-no-bc": {"cql_samples": "real", "bc_steps": 0},
    # "all" with box points added to the real-action proposals (both kinds in the log-sum-exp): the defaults
    "all-both": {"cql_samples": "both"},
    # change 3 alone: the committed setting on an encoder trained with reward_target="model"
    "reward-model": BEFORE,
    # changes 1-3 together: the defaults on an encoder trained with reward_target="model"
    "all-reward-model": {"cql_samples": "both"},
}
MODEL_REWARD_VARIANTS = ("reward-model", "all-reward-model")
"""Variants whose encoder must have been trained with reward_target="model" (every other: "sampled")."""


def check_encoder(variant: str, encoder: str) -> None:
    """Refuse an encoder whose reward_target does not match the variant (a mislabelled run costs an hour)."""
    config = json.loads((Path(encoder) / "config.json").read_text())["config"]
    want = "model" if variant in MODEL_REWARD_VARIANTS else "sampled"
    got = config.get("reward_target", "sampled")
    if got != want:
        raise SystemExit(f"{encoder}: reward_target is {got!r}; variant {variant!r} needs {want!r}")


def t_interval(values: list[float]) -> dict:
    """mean and 95% t interval (benchmark.report.mean_ci95) as a dict; no interval for one value."""
    from merlion_core.benchmark.report import mean_ci95

    mean, half = mean_ci95(values)
    return {"mean": mean, "ci95": None if len(values) < 2 else [mean - half, mean + half], "n": len(values)}


KNN_K = (5, 20)
"""Wolpertinger k scored beside the deployed rule at every evaluation (same episodes, same weights)."""


def other_acting_rules(agent, step: int, args: argparse.Namespace) -> dict:
    """Scores of the Wolpertinger rule at each k of KNN_K and of the critic's argmax over every action,
    on the episodes the deployed rule was just evaluated on (seed = step)."""
    import dataclasses

    from merlion_core.algos.latent_diagnostics import CriticArgmaxPolicy
    from merlion_core.evaluation import evaluate

    deployed = agent.config
    out = {}
    for k in KNN_K:
        agent.config = dataclasses.replace(deployed, knn_k=k)
        out[f"knn{k}_score"] = float(evaluate(agent, args.env_id, args.episodes, seed=step).normalised_score)
    agent.config = deployed
    out["critic_argmax_score"] = float(
        evaluate(CriticArgmaxPolicy(agent), args.env_id, args.episodes, seed=step).normalised_score
    )
    return out


def run(args: argparse.Namespace) -> None:
    import torch

    from merlion_core.data.io import load_dataset
    from merlion_core.pipelines.agent import train_agent

    torch.set_num_threads(1)
    args.env_id = load_dataset(args.dataset).meta.env_id
    check_encoder(args.variant, args.encoder.format(seed=args.seed))
    overrides = {**VARIANTS[args.variant], "seed": args.seed}
    folder = OUT / args.env
    name = args.variant if args.precision == "fp32" else f"{args.variant}-{args.precision}"
    folder.mkdir(parents=True, exist_ok=True)
    agent_dir = REPO / "runs" / "ablation" / args.env / f"{name}-seed{args.seed}"
    started = time.perf_counter()
    result = train_agent(
        args.dataset,
        "cql",
        agent_dir,
        steps=args.steps,
        encoder_dir=args.encoder.format(seed=args.seed),
        overrides=overrides,
        eval_every=args.eval_every,
        eval_episodes=args.episodes,
        device="cpu",
        precision=args.precision,
        extra_evaluation=lambda agent, step: other_acting_rules(agent, step, args),
    )
    curve = json.loads((agent_dir / "metrics.json").read_text())["curve"]
    scores = [p["normalised_score"] for p in curve if "normalised_score" in p]
    record = {
        "env": args.env,
        "variant": name,
        "seed": args.seed,
        "overrides": overrides,
        "precision": result["precision"],
        "encoder": args.encoder.format(seed=args.seed),
        "dataset": args.dataset,
        "steps": args.steps,
        "curve": curve,
        "last_score": scores[-1],
        "last3_mean": last_k_score({"curve": curve}),
        "train_seconds": result["seconds"],
        "wall_seconds": time.perf_counter() - started,
        "torch_threads": torch.get_num_threads(),
    }
    (folder / f"{name}-seed{args.seed}.json").write_text(json.dumps(record, indent=1))
    print(f"{name} seed {args.seed}: last {scores[-1]:.1f}, last-3 mean {record['last3_mean']:.1f}")


OTHER_RULES = ("knn5_score", "knn20_score", "critic_argmax_score")


def last3(record: dict, rule: str) -> float | None:
    """The mean of a run's last three evaluations of another acting rule (None when not recorded)."""
    values = [p.get("diagnostics", {}).get(rule) for p in record["curve"] if "normalised_score" in p][-3:]
    return None if not values or any(v is None for v in values) else float(np.mean(values))


def _ci(cell: dict | None) -> str:
    if not cell or cell.get("mean") is None:
        return "-"
    ci = cell.get("ci95")
    return f"{cell['mean']:.1f}" if ci is None else f"{cell['mean']:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]"


def markdown(env: str, summary: dict) -> str:
    """The ablation table: scores with 95% t intervals over seeds, the last evaluation's diagnostics."""
    lines = [
        f"# Latent CQL ablation: {env}",
        "",
        "Normalised score, mean [95% t interval] over seeds; 'last 3' = mean of each run's last three "
        "evaluations (of 50 episodes, every 2,000 of 10,000 steps). Other acting rules were scored on the "
        "same episodes with the same weights. Diagnostics: the last evaluation, mean over seeds.",
        "",
        "| variant | seeds | last | last 3 | Wolpertinger k=20, last 3 | critic argmax, last 3 | Q(s, e_data) "
        "| MC return | lookup gap | taken OOD | temperature | actor / data latent L1 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for variant, row in summary.items():
        d = row.get("diagnostics_last", {})

        def num(key: str, digits: int = 2, d: dict = d) -> str:
            return "-" if d.get(key) is None else f"{d[key]:.{digits}f}"

        l1 = "-" if d.get("actor_latent_l1") is None else f"{d['actor_latent_l1']:.2f} / {d['data_latent_l1']:.2f}"
        lines.append(
            f"| {variant} | {','.join(map(str, row['seeds']))} | {_ci(row['last_score'])} | "
            f"{_ci(row['last3_mean'])} | {_ci(row.get('knn20_score_last3_mean'))} | "
            f"{_ci(row.get('critic_argmax_score_last3_mean'))} | {num('q_data', 1)} | {num('mc_return', 1)} | "
            f"{num('lookup_gap')} | {num('taken_ood_share')} | {num('entropy_alpha')} | {l1} |"
        )
    return "\n".join(lines) + "\n"


def precision_comparisons(summary: dict, records: list[dict]) -> dict:
    """bf16 against fp32 for every variant run in both: the per-seed differences (bf16 - fp32, same
    seed, same encoder and data) of the last score and the last-3 mean, with their 95% t interval,
    and each precision's distribution side by side."""
    out = {}
    for variant in VARIANTS:
        bf16 = {r["seed"]: r for r in records if r["variant"] == f"{variant}-bf16"}
        fp32 = {r["seed"]: r for r in records if r["variant"] == variant}
        seeds = sorted(set(bf16) & set(fp32))
        if len(seeds) < 2:
            continue
        cell: dict[str, object] = {"seeds": seeds}
        for measure in ("last_score", "last3_mean"):
            cell[measure] = {
                "fp32": t_interval([fp32[s][measure] for s in seeds]),
                "bf16": t_interval([bf16[s][measure] for s in seeds]),
                "difference_bf16_minus_fp32": t_interval([bf16[s][measure] - fp32[s][measure] for s in seeds]),
                "per_seed": {s: {"fp32": fp32[s][measure], "bf16": bf16[s][measure]} for s in seeds},
            }
        cell["train_seconds_median"] = {
            "fp32": float(np.median([fp32[s]["train_seconds"] for s in seeds])),
            "bf16": float(np.median([bf16[s]["train_seconds"] for s in seeds])),
        }
        out[variant] = cell
    return out


def precision_markdown(comparisons: dict) -> str:
    """bf16 against fp32: both distributions and the paired difference with its 95% t interval."""
    if not comparisons:
        return ""
    lines = [
        "",
        "## bf16 against fp32 (same seeds, encoders and data)",
        "",
        "A difference whose interval covers 0 is not resolved: bf16 did not measurably change learning "
        "at this many seeds. Train seconds are medians of runs that shared the 2 cores with other work.",
        "",
        "| variant | seeds | measure | fp32 | bf16 | bf16 - fp32 | train s fp32 / bf16 |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for variant, cell in comparisons.items():
        secs = cell["train_seconds_median"]
        for measure in ("last_score", "last3_mean"):
            m = cell[measure]
            lines.append(
                f"| {variant} | {','.join(map(str, cell['seeds']))} | {measure} | {_ci(m['fp32'])} | "
                f"{_ci(m['bf16'])} | {_ci(m['difference_bf16_minus_fp32'])} | "
                f"{secs['fp32']:.0f} / {secs['bf16']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def report(env: str) -> None:
    folder = OUT / env
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*-seed*.json"))]
    if not records:
        raise SystemExit(f"{folder}: no run records to report")
    summary = {}
    for variant in [*VARIANTS, *(f"{v}-bf16" for v in VARIANTS)]:  # bf16 records are named <variant>-bf16
        rows = [r for r in records if r["variant"] == variant]
        if not rows:
            continue
        last_diag = [r["curve"][-1].get("diagnostics", {}) for r in rows]
        keys = (
            "q_data",
            "mc_return",
            "lookup_gap",
            "taken_ood_share",
            "entropy_alpha",
            "critic_argmax_score",
            "knn5_score",
            "knn20_score",
            "actor_latent_l1",
            "data_latent_l1",
            "distinct_taken_actions",
        )
        summary[variant] = {
            "overrides": rows[0]["overrides"] | {"seed": None},
            "seeds": sorted(r["seed"] for r in rows),
            "last_score": t_interval([r["last_score"] for r in rows]),
            "last3_mean": t_interval([r["last3_mean"] for r in rows]),
            "per_seed_last": {r["seed"]: r["last_score"] for r in rows},
            **{
                f"{rule}_last3_mean": t_interval([v for v in (last3(r, rule) for r in rows) if v is not None])
                for rule in OTHER_RULES
                if all(last3(r, rule) is not None for r in rows)
            },
            "diagnostics_last": {
                k: float(np.mean([d[k] for d in last_diag if d.get(k) is not None]))
                for k in keys
                if any(d.get(k) is not None for d in last_diag)
            },
        }
    table_runs = sorted((REPO / "results" / env / "runs" / "merlion-cql").glob("seed*.json"))
    if table_runs:  # the committed table's MERLION-CQL rows: the earlier setting at 5 seeds, no diagnostics
        rows = [json.loads(p.read_text()) for p in table_runs]
        summary["before (committed table)"] = {
            "seeds": sorted(r["seed"] for r in rows),
            "last_score": t_interval([r["last_score"] for r in rows]),
            "last3_mean": t_interval([last_k_score(r) for r in rows]),
            "diagnostics_last": {},
        }
    comparisons = precision_comparisons(summary, records)
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    (folder / "precision.json").write_text(json.dumps(comparisons, indent=1))
    (folder / "README.md").write_text(markdown(env, summary) + precision_markdown(comparisons))
    for variant, row in summary.items():
        ci = row["last3_mean"]["ci95"]
        print(
            f"{variant:>10}: seeds {row['seeds']} last-3 mean {row['last3_mean']['mean']:.1f} "
            f"{'' if ci is None else f'[{ci[0]:.1f}, {ci[1]:.1f}]'} diag {row['diagnostics_last']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", required=True)
    parser.add_argument("--dataset")
    parser.add_argument("--encoder", help="encoder folder; {seed} is replaced by the seed")
    parser.add_argument("--variant", choices=sorted(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--eval-every", type=int, default=2_000)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="networks' precision in gradient steps; bf16 runs are recorded as <variant>-bf16",
    )
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if args.report:
        report(args.env)
    elif not (args.dataset and args.encoder and args.variant):
        parser.error("--dataset, --encoder and --variant are needed to train")
    else:
        run(args)


if __name__ == "__main__":
    main()
