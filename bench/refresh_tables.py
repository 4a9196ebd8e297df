"""Rewrite the committed benchmark tables (results/ENV/summary.json, README.md, curves.svg) from their
run records, for a change of the report's format (no training, no dataset needed).

Usage: python bench/refresh_tables.py [results/maze results/recommender ...]  (default: every results/*/)
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from merlion_core.benchmark.report import refresh_summary  # noqa: E402


def main() -> None:
    folders = [Path(a) for a in sys.argv[1:]] or sorted(p.parent for p in (REPO / "results").glob("*/summary.json"))
    for folder in folders:
        summary = refresh_summary(folder)
        print(f"{folder}: {len(summary['methods'])} methods rewritten")


if __name__ == "__main__":
    main()
