"""Issue 25's rows beside the paper's, from the four committed benchmark tables (results/ENV/summary.json):
each new method's last-3 score (mean and 95% interval over seeds) against the behaviour policy, BC,
MERLION-CQL and discrete CQL, with every comparison "resolved" only where the two 95% intervals separate.

Usage: python bench/field_table.py   -> bench/results/field-peers.json and a markdown table on stdout
(after `bash bench/field_rows.sh ENV` has added the rows; no training here).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from merlion_core.benchmark.methods import FIELD_METHODS  # noqa: E402
from merlion_core.benchmark.report import compare_intervals, last3_interval, mean_ci95  # noqa: E402

ENVS = ("maze", "multistep-maze", "recommender", "dialogue")
BASELINES = ("bc", "merlion-cql", "dcql")
"""Rows every new method is compared with (besides the behaviour policy's score)."""


def env_rows(summary: dict[str, Any]) -> dict[str, Any]:
    methods = summary["methods"]
    behaviour = summary["behaviour_score"]
    out: dict[str, Any] = {}
    for name in FIELD_METHODS:
        if name in (summary.get("not_applicable") or {}):
            out[name] = {"not_applicable": summary["not_applicable"][name]}
            continue
        row = methods.get(name)
        if not row or not row.get("seeds"):
            out[name] = {"seeds": 0}
            continue
        mine = last3_interval(row)
        vs = {"behaviour": compare_intervals(mine, (behaviour, behaviour))}
        for base in BASELINES:
            if base in methods and methods[base].get("seeds"):
                vs[base] = compare_intervals(mine, last3_interval(methods[base]))
        out[name] = {
            "seeds": row["seeds"],
            "last3_mean": row["last3_mean"],
            "last3_ci95": row["last3_ci95"],
            "last_mean": row["last_mean"],
            "last_ci95": row["last_ci95"],
            "vs": vs,
        }
    return {
        "behaviour_score": behaviour,
        "baselines": {
            b: {"last3_mean": methods[b]["last3_mean"], "last3_ci95": methods[b]["last3_ci95"]}
            for b in BASELINES
            if b in methods and methods[b].get("seeds")
        },
        "rows": out,
    }


def critic_rule(env: str, method: str) -> dict[str, Any] | None:
    """For a latent method: at the last evaluation of each seed, the deployed rule's score and the
    critic's argmax over every real action on the same episodes (``critic_argmax_score``), with the
    mean and 95% interval of each and of their paired difference; None without such records."""
    deployed, argmax = [], []
    for path in sorted((REPO / "results" / env / "runs" / method).glob("seed*.json")):
        last = json.loads(path.read_text())["curve"][-1]
        score = (last.get("diagnostics") or {}).get("critic_argmax_score")
        if score is not None:
            deployed.append(last["normalised_score"])
            argmax.append(score)
    if len(argmax) < 2:
        return None
    out: dict[str, Any] = {"seeds": len(argmax)}
    for name, values in (
        ("deployed", deployed),
        ("critic_argmax", argmax),
        ("argmax_minus_deployed", [a - d for a, d in zip(argmax, deployed, strict=True)]),
    ):
        mean, ci = mean_ci95(values)
        out[name] = {"mean": mean, "ci95": ci, "values": values}
    return out


def main() -> None:
    report = {}
    for env in ENVS:
        path = REPO / "results" / env / "summary.json"
        if path.exists():
            report[env] = env_rows(json.loads(path.read_text()))
            for name in FIELD_METHODS:
                rule = critic_rule(env, name)
                if rule is not None:
                    report[env]["rows"][name]["critic_rule_last_eval"] = rule
    out = REPO / "bench" / "results" / "field-peers.json"
    out.write_text(json.dumps(report, indent=1))
    print("| env | method | seeds | last 3 | vs behaviour | vs bc | vs merlion-cql | vs dcql |")
    print("| --- | --- | ---: | ---: | --- | --- | --- | --- |")
    for env, data in report.items():
        for name, row in data["rows"].items():
            if "not_applicable" in row:
                print(f"| {env} | {name} | - | not applicable | | | | |")
            elif row["seeds"]:
                vs = row["vs"]
                cells = " | ".join(vs.get(k, "-") for k in ("behaviour", *BASELINES))
                print(
                    f"| {env} | {name} | {row['seeds']} | {row['last3_mean']:.1f} +- {row['last3_ci95'] or 0:.1f} | "
                    f"{cells} |"
                )

    print()
    print("| env | method | seeds | deployed (last) | critic's argmax over all actions | difference (paired) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for env, data in report.items():
        for name, row in data["rows"].items():
            rule = row.get("critic_rule_last_eval")
            if rule:
                cells = " | ".join(
                    f"{rule[k]['mean']:.1f} +- {rule[k]['ci95']:.1f}"
                    for k in ("deployed", "critic_argmax", "argmax_minus_deployed")
                )
                print(f"| {env} | {name} | {rule['seeds']} | {cells} |")


if __name__ == "__main__":
    main()
