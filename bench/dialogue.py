"""Dialogue env numbers: action-set coverage of the real dialogues, the rule policy, behaviours,
collection speed.

Usage: MERLION_MULTIWOZ_DIR=../shared/data/multiwoz python bench/dialogue.py
       [--episodes 1000] [--n 100000] [--out bench/results/dialogue.json]
The collection is timed in a fresh process, so its time includes loading the MultiWOZ files
and measuring the env's normalisers, as a user's first `merlion collect --env dialogue` does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections import Counter
from pathlib import Path

import numpy as np
from foundation import behaviour_table, collection_entry  # bench/foundation.py: the maze tables

from merlion_core.data.collect import collect
from merlion_core.data.multiwoz_io import load_multiwoz, read_system_turns
from merlion_core.envs import make_model
from merlion_core.envs.dialogue.actions import act_coverage, top_composites


def convlab_key(triples) -> str:
    """The turn's key as da_slot_cnt.json writes it (annotation order, value index per slot)."""
    seen: Counter = Counter()
    parts = []
    for domain, intent, slot in triples:
        if intent == "Request":
            value = "?"
        elif slot == "none":
            value = "none"
        else:
            seen[(domain, intent, slot)] += 1
            value = str(seen[(domain, intent, slot)])
        parts.append(f"{domain}-{intent}-{slot}-{value}")
    return ";".join(parts)


def coverage_table(n_actions: int) -> dict:
    data = load_multiwoz()
    turns = read_system_turns()
    composites, counts = top_composites(data.composite_counts, n_actions)
    share, n_turns = act_coverage(turns, composites)
    total = sum(c for _, c in data.composite_counts)
    raw_top = {k for k, _ in sorted(data.composite_counts, key=lambda kv: (-kv[1], kv[0]))[:n_actions]}
    by_size = {}
    for n in (500, 1000, 1500, 2000, 3000, 5000):
        by_size[str(n)] = act_coverage(turns, top_composites(data.composite_counts, n)[0])[0]
    return {
        "n_actions": n_actions,
        "system_turns": n_turns,
        "unannotated_turns": sum(1 for t in turns if not t),
        "share_of_turns_in_action_set": share,
        "share_of_corpus_counts_in_action_set": float(counts.sum() / total),
        "share_if_composites_kept_convlab_order_and_value_index": sum(convlab_key(t) in raw_top for t in turns)
        / n_turns,
        "share_by_action_set_size": by_size,
        "goal": 0.95,
    }


def goal_statistics(n: int) -> dict:
    from merlion_core.envs.dialogue.goals import sample_goals

    schema = make_model("dialogue").schema
    goals = sample_goals(schema, n, np.random.default_rng(0))
    domains = (goals.rank >= 0).sum(axis=1)
    return {
        "domains_per_goal": {str(k): float((domains == k).mean()) for k in range(1, domains.max() + 1)},
        "share_with_a_booking": float(goals.has_book.any(axis=1).mean()),
        "share_that_must_change_a_constraint": float((goals.initial != goals.final).any(axis=1).mean()),
        "mean_requests": float(goals.requests.sum(axis=1).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    for flag, default in (("--episodes", 1000), ("--n", 100_000), ("--out", "bench/results/dialogue.json")):
        parser.add_argument(flag, type=type(default), default=default)
    args = parser.parse_args()
    model = make_model("dialogue")
    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "env": {
            "id": "merlion/Dialogue-v0",
            "n_actions": model.n_actions,
            "obs_dim": model.obs_dim,
            "max_turns": model.max_steps,
            **model.info(),
        },
        "coverage": coverage_table(model.n_actions),
        "goals": goal_statistics(10_000),
    }
    results.update(behaviour_table("dialogue", args.episodes))  # success = the goal met; mean_length = turns
    results.update(collection_entry("dialogue", args.n))
    # every dialogue ends in a terminal state: a success on -1 + 40, a failure on -1 - 20
    ds = collect("dialogue", "medium", 0.5, args.n, seed=0)
    results["medium_noise0.5_dataset"]["success_rate"] = float((ds.rewards[ds.episode_ends] > 0).mean())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
