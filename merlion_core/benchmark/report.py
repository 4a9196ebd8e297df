"""Benchmark results on disk: per-run JSON, the summary (JSON and a markdown table), the curve plot (SVG).

Scores are normalised, 100 (R - R_random) / (R_expert - R_random). Over seeds: the mean and a
95% confidence interval from Student's t (half-width t_{0.975, n-1} sd / sqrt(n)), for the last
evaluation and for the mean of each run's last three evaluations (``LAST_K``: steadier than one
evaluation). The best evaluation of each run is kept in the JSON as ``best_*`` but not shown in the
table: the maximum over noisy evaluations is biased upward and is not a score.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

SUMMARY_FORMAT = "merlion-bench-summary/1"
LAST_K = 3
"""The table's steady score: the mean of each run's last LAST_K evaluations."""
PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
    "#3182bd",
)


def run_record_path(out_dir: str | os.PathLike, method: str, seed: int) -> Path:
    return Path(out_dir) / "runs" / method / f"seed{seed}.json"


def write_run_record(out_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    path = run_record_path(out_dir, record["method"], record["seed"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, allow_nan=False))
    tmp.replace(path)
    return path


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t interval); the half-width is nan for a single value."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1:
        return float(x[0]), math.nan
    half = float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return float(x.mean()), half


def last3_interval(row: dict[str, Any]) -> tuple[float, float] | None:
    """A summary row's last-3 score as its 95% interval over seeds; None without one (under 2 seeds)."""
    mean, ci = row.get("last3_mean"), row.get("last3_ci95")
    if mean is None or ci is None or math.isnan(ci):
        return None
    return mean - ci, mean + ci


def compare_intervals(a: tuple[float, float] | None, b: tuple[float, float] | None) -> str:
    """'above' / 'below' where interval ``a`` lies wholly above / below ``b``, else 'not resolved'."""
    if a is None or b is None:
        return "not resolved"
    if a[0] > b[1]:
        return "above"
    if a[1] < b[0]:
        return "below"
    return "not resolved"


def last_k_score(record: dict[str, Any], k: int = LAST_K) -> float:
    """The mean normalised score of a run's last ``k`` evaluations (fewer when it has fewer)."""
    scores = [p["normalised_score"] for p in record["curve"] if p.get("normalised_score") is not None]
    return float(np.mean(scores[-k:])) if scores else math.nan


def summarise_method(records: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in records if r.get("last_score") is not None]
    last_mean, last_ci = mean_ci95([r["last_score"] for r in ok])
    best_mean, best_ci = mean_ci95([r["best_score"] for r in ok])
    last_k_mean, last_k_ci = mean_ci95([last_k_score(r) for r in ok])
    steps = sorted({p["step"] for r in ok for p in r["curve"] if "normalised_score" in p})
    curve = []
    for step in steps:
        values = [
            p["normalised_score"] for r in ok for p in r["curve"] if p.get("step") == step and "normalised_score" in p
        ]
        mean, ci = mean_ci95(values)
        curve.append({"step": step, "mean": mean, "ci95": ci, "n": len(values)})
    seconds: list[float] = [r["train_seconds"] for r in ok if r.get("train_seconds") is not None]
    # None where the env has no task success (the recommender): the column then reads "-"
    successes = [r["last_success_rate"] for r in ok if r.get("last_success_rate") is not None]
    return {
        "seeds": len(ok),
        "failed": [{"seed": r["seed"], "error": r.get("error")} for r in records if r.get("last_score") is None],
        "last_mean": last_mean,
        "last_ci95": last_ci,
        "last3_mean": last_k_mean,
        "last3_ci95": last_k_ci,
        "best_mean": best_mean,
        "best_ci95": best_ci,
        "last_success_rate": float(np.mean(successes)) if successes else math.nan,
        "mean_train_seconds": float(np.mean(seconds)) if seconds else None,
        "devices": sorted({str(r.get("device")) for r in ok}),
        # runs from before the precision option trained in fp32
        "precisions": sorted({str(r.get("precision", "fp32")) for r in ok}),
        "curve": curve,
    }


def _clean(value: Any) -> Any:
    """nan -> None, recursively (JSON has no nan)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def same_settings(recorded: dict[str, Any] | None, settings: dict[str, Any]) -> bool:
    """Whether a run record's settings are ``settings``, the benchmark's seed count aside (records
    written before it left the settings key carry it). Datasets compare by content digest, so the
    same dataset given by another path matches; records written before the digest compare by
    resolved path."""
    if recorded is None:
        return False
    config = {k: v for k, v in recorded.get("config", {}).items() if k != "seeds"}
    recorded = {**recorded, "config": config}
    if "dataset_sha256" in recorded and "dataset_sha256" in settings:
        same_data = recorded["dataset_sha256"] == settings["dataset_sha256"]
    else:
        same_data = Path(str(recorded.get("dataset"))).resolve() == Path(str(settings.get("dataset"))).resolve()
    ignored = ("dataset", "dataset_sha256")
    return same_data and (
        {k: v for k, v in recorded.items() if k not in ignored}
        == {k: v for k, v in settings.items() if k not in ignored}
    )


def write_summary(
    out_dir: str | os.PathLike,
    env_id: str,
    methods: list[str],
    config: Any,
    behaviour_score: float,
    settings: dict[str, Any],
    normalisers: dict[str, Any] | None = None,
    reference: dict[str, Any] | None = None,
    config_dict: dict[str, Any] | None = None,
    not_applicable: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Read every run record of ``methods`` and write summary.json, README.md and curves.svg
    (``normalisers``: the expert and random returns the scores are normalised with; ``reference``:
    the behaviour policy without noise on the evaluation episodes, ``benchmark.behaviour_reference``;
    ``not_applicable``: methods of a requested group that do not apply to the env, with the reason)."""
    out = Path(out_dir)
    rows = {}
    for method in methods:
        records = []
        for path in sorted((out / "runs" / method).glob("seed*.json")):
            record = json.loads(path.read_text())
            if same_settings(record.get("settings"), settings) and record.get("seed", 0) < config.seeds:
                records.append(record)
        rows[method] = summarise_method(records)
    from merlion_core.config import to_dict

    summary = _clean(
        {
            "format": SUMMARY_FORMAT,
            "env_id": env_id,
            "settings": settings,
            "config": to_dict(config) if config_dict is None else config_dict,
            "behaviour_score": behaviour_score,
            "normalisers": normalisers,
            "behaviour_reference": reference,
            "methods": rows,
            "not_applicable": {k: v for k, v in (not_applicable or {}).items() if k not in rows},
        }
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "README.md").write_text(markdown_table(summary))
    (out / "curves.svg").write_text(curves_svg(summary))
    return summary


def refresh_summary(out_dir: str | os.PathLike) -> dict[str, Any]:
    """Rewrite summary.json, README.md and curves.svg of a finished benchmark from its run records and
    the settings its summary.json recorded (no dataset needed): for a change of the report's format."""
    from types import SimpleNamespace

    old = json.loads((Path(out_dir) / "summary.json").read_text())
    reference = old.get("behaviour_reference")
    if reference and reference.get("curve"):
        scores = [p["normalised_score"] for p in reference["curve"]]
        reference = {**reference, "last3_score": float(np.mean(scores[-LAST_K:]))}
    config = SimpleNamespace(**old["config"])
    return write_summary(
        out_dir,
        old["env_id"],
        list(old["methods"]),
        config,
        old["behaviour_score"],
        old["settings"],
        old.get("normalisers"),
        reference,
        config_dict=old["config"],
        not_applicable=old.get("not_applicable"),
    )


def _fmt(mean: float | None, ci: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.1f}" if ci is None else f"{mean:.1f} +- {ci:.1f}"


def _normaliser_lines(normalisers: dict[str, Any] | None) -> list[str]:
    if not normalisers:
        return []
    lines = [
        "",
        f"Normalisers (the env's, {normalisers['episodes']} episodes each): expert return "
        f"{normalisers['expert_return']:.2f}, random return {normalisers['random_return']:.2f}.",
    ]
    if not normalisers.get("dataset_agrees", True):
        stored = [normalisers.get(f"dataset_{k}_return") for k in ("expert", "random")]
        shown = ", ".join("none" if v is None else f"{v:.2f}" for v in stored)
        lines.append(
            f"**The dataset's metadata says {shown}**: it was collected with another env config or "
            "version, or brought its own normalisers; scores here use the env's."
        )
    return lines


def markdown_table(summary: dict[str, Any]) -> str:
    config = summary["config"]
    devices = ", ".join(sorted({d for row in summary["methods"].values() for d in row.get("devices", [])})) or "-"
    precisions = ", ".join(sorted({p for row in summary["methods"].values() for p in row.get("precisions", [])})) or "-"
    lines = [
        f"# Benchmark: {summary['env_id']}",
        "",
        f"Dataset: `{summary['settings']['dataset']}` (behaviour policy's normalised score "
        f"{summary['behaviour_score']:.1f}). {config['steps']} gradient steps per agent, evaluation every "
        f"{config['eval_every']} steps over {config['eval_episodes']} episodes, encoders "
        f"{config['encoder_steps']} steps, devices used: {devices}, precisions: {precisions}. "
        "Normalised score, mean +- 95% CI "
        f"(Student's t) over seeds.",
        *_normaliser_lines(summary.get("normalisers")),
        "",
        f"'last 3' is the mean of each run's last {LAST_K} evaluations; the best evaluation is not a score "
        "(a maximum over noisy evaluations is biased upward) and is only in summary.json.",
        "",
        "| method | seeds | last | last 3 | success (last) | train s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| behaviour policy (dataset) | - | {summary['behaviour_score']:.1f} | - | - | - |",
    ]
    reference = summary.get("behaviour_reference")
    if reference:
        success = "-" if reference["last_success_rate"] is None else f"{reference['last_success_rate']:.2f}"
        lines.append(
            f"| {reference['behaviour']} policy without the collection noise, on the agents' evaluation "
            f"episodes | - | {reference['last_score']:.1f} | {_fmt(reference.get('last3_score'), None)} | "
            f"{success} | - |"
        )
    for name, row in summary["methods"].items():
        success = "-" if row["last_success_rate"] is None else f"{row['last_success_rate']:.2f}"
        seconds = "-" if row["mean_train_seconds"] is None else f"{row['mean_train_seconds']:.0f}"
        failed = f" ({len(row['failed'])} failed)" if row["failed"] else " (not run yet)" if not row["seeds"] else ""
        lines.append(
            f"| {name} | {row['seeds']}{failed} | {_fmt(row['last_mean'], row['last_ci95'])} | "
            f"{_fmt(row.get('last3_mean'), row.get('last3_ci95'))} | {success} | {seconds} |"
        )
    for name, reason in (summary.get("not_applicable") or {}).items():
        lines.append(f"| {name} | not applicable: {reason} | - | - | - | - |")
    lines += ["", "Curves: `curves.svg` (mean over seeds, shaded 95% CI); per-run JSON under `runs/`.", ""]
    return "\n".join(lines)


def curves_svg(
    summary: dict[str, Any],
    width: int = 820,
    height: int = 460,
    x_label: str = "gradient steps",
    reference_label: str = "behaviour",
) -> str:
    """Learning curves (mean normalised score, shaded 95% CI) as a standalone SVG; the dashed line is
    ``summary["behaviour_score"]`` (``reference_label``)."""
    left, right, top, bottom = 60, 220, 30, 50
    series = [(name, row["curve"]) for name, row in summary["methods"].items() if row["curve"]]
    points = [(p["step"], p["mean"]) for _, curve in series for p in curve if p["mean"] is not None]
    x_max = max([s for s, _ in points], default=1)
    lows = [p["mean"] - (p["ci95"] or 0) for _, c in series for p in c if p["mean"] is not None]
    highs = [p["mean"] + (p["ci95"] or 0) for _, c in series for p in c if p["mean"] is not None]
    y_min = min([0.0, summary["behaviour_score"], *lows])
    y_max = max([100.0, summary["behaviour_score"], *highs])
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(step: float) -> float:
        return left + plot_w * step / x_max

    def sy(score: float) -> float:
        return top + plot_h * (1 - (score - y_min) / (y_max - y_min))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        f'font-size="12"><rect width="100%" height="100%" fill="white"/>',
        f'<text x="{left}" y="18" font-size="14">{summary["env_id"]}: normalised score</text>',
    ]
    for tick in np.linspace(y_min, y_max, 6):
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(tick):.1f}" y2="{sy(tick):.1f}" stroke="#eee"/>'
            f'<text x="{left - 6}" y="{sy(tick) + 4:.1f}" text-anchor="end">{tick:.0f}</text>'
        )
    for tick in np.linspace(0, x_max, 5):
        parts.append(f'<text x="{sx(tick):.1f}" y="{top + plot_h + 18}" text-anchor="middle">{tick:.0f}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 10}" text-anchor="middle">{x_label}</text>')
    parts.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(summary["behaviour_score"]):.1f}" '
        f'y2="{sy(summary["behaviour_score"]):.1f}" stroke="black" stroke-dasharray="5,4"/>'
    )
    for i, (name, curve) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        valid = [p for p in curve if p["mean"] is not None]
        band = [p for p in valid if p["ci95"] is not None]
        if len(band) > 1:
            upper = " ".join(f"{sx(p['step']):.1f},{sy(p['mean'] + p['ci95']):.1f}" for p in band)
            lower = " ".join(f"{sx(p['step']):.1f},{sy(p['mean'] - p['ci95']):.1f}" for p in reversed(band))
            parts.append(f'<polygon points="{upper} {lower}" fill="{color}" fill-opacity="0.12" stroke="none"/>')
        line = " ".join(f"{sx(p['step']):.1f},{sy(p['mean']):.1f}" for p in valid)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2"/>')
        y_label = top + 14 + 16 * i
        parts.append(
            f'<line x1="{left + plot_w + 12}" x2="{left + plot_w + 32}" y1="{y_label - 4}" '
            f'y2="{y_label - 4}" stroke="{color}" stroke-width="2"/>'
            f'<text x="{left + plot_w + 38}" y="{y_label}">{name}</text>'
        )
    y_label = top + 14 + 16 * len(series)
    parts.append(
        f'<line x1="{left + plot_w + 12}" x2="{left + plot_w + 32}" y1="{y_label - 4}" y2="{y_label - 4}" '
        f'stroke="black" stroke-dasharray="5,4"/><text x="{left + plot_w + 38}" y="{y_label}">{reference_label}</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts)
