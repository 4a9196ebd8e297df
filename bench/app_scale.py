"""The Embeddings and Pseudometric pages at catalogue scale (issue 24, item 4): server-side render time in
AppTest (the whole script run: loads, embed_all, Q, OOD, the figure's serialisation) on an untrained
MERLION encoder (hidden 128, the recommender's dim 10) with an untrained latent CQL agent, over the
recommender datasets in runs/recommender-N. Writes bench/results/app-scale.json.

Usage: python bench/app_scale.py [--sizes 100000 1000000] [--out bench/results/app-scale.json]

Each size runs in its own process (cold caches, its own peak RSS): the first paint of Embeddings, a
second state (the dataset row changed: embed_all and Q again), a zoom region, then the Pseudometric
page's first paint. The browser's own drawing is not included (bench/app.py measures that).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def quiet_app(home: Path) -> None:
    """What tests/studio_fixture.quiet_app does, without pytest: the app points at ``home`` and starts
    no supervisor, warm-start worker or chain thread."""
    import merlion_core.jobs.backend as backend
    from studio import chains, jobs_client, warmstart

    os.environ["MERLION_STUDIO_HOME"] = str(home)
    os.environ.pop("MERLION_RUNS_DIR", None)
    os.environ.pop("MERLION_DATA_DIR", None)
    os.environ["MERLION_STUDIO_DEMO"] = "0"
    backend.ensure_supervisor = lambda *a, **k: 0
    jobs_client.ensure_supervisor = lambda *a, **k: 0
    warmstart.ensure_worker = lambda *a, **k: 0
    chains.start_advancer = lambda: None


def points_drawn(at) -> int:
    """Scatter points in the Embeddings page's charts (every scattergl trace of every chart)."""
    import numpy as np
    from test_app import array

    total = 0
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        total += sum(len(np.atleast_1d(array(t["x"]))) for t in spec["data"] if t["type"] == "scattergl")
    return total


def one_size(n_actions: int) -> dict:
    import torch
    from streamlit.testing.v1 import AppTest
    from test_app_scale import build_scale_home

    torch.set_num_threads(1)
    dataset = REPO / "runs" / f"recommender-{n_actions}"
    with tempfile.TemporaryDirectory(prefix="app-scale-") as tmp:
        started = time.perf_counter()
        home = build_scale_home(
            Path(tmp), n_actions, str(dataset) if dataset.is_dir() else None, hidden=128, agent=True
        )
        out: dict = {"n_actions": n_actions, "dataset": home["dataset"], "build_home_s": time.perf_counter() - started}
        quiet_app(Path(tmp))
        at = AppTest.from_file(str(REPO / "pages" / "embeddings.py"), default_timeout=900)
        started = time.perf_counter()
        at.run()
        out["embeddings_first_paint_s"] = time.perf_counter() - started
        out["exception"] = [e.message for e in at.exception]
        out["points_drawn"] = points_drawn(at)
        out["chart_spec_bytes"] = sum(len(c.proto.spec) for c in at.get("plotly_chart"))  # what the browser gets
        out["captions"] = [c.value for c in at.caption if c.value.startswith(("showing", "Out of"))]
        started = time.perf_counter()
        at.number_input(key="emb.row").set_value(1).run()
        out["embeddings_new_state_s"] = time.perf_counter() - started
        if [n for n in at.number_input if n.key == "emb.region.x0.left"]:  # zoom on the middle 10% x 10%
            for axis in ("x", "y"):
                low, high = (float(at.session_state[f"emb.region.{axis}{i}.left"]) for i in (0, 1))
                middle, half = (low + high) / 2, (high - low) / 20
                at.number_input(key=f"emb.region.{axis}0.left").set_value(round(middle - half, 4))
                at.number_input(key=f"emb.region.{axis}1.left").set_value(round(middle + half, 4))
            at.checkbox(key="emb.region.on.left").check()
            started = time.perf_counter()
            at.run()
            out["embeddings_zoom_s"] = time.perf_counter() - started
            out["zoom_points_drawn"] = points_drawn(at)
        pm = AppTest.from_file(str(REPO / "pages" / "pseudometric.py"), default_timeout=900)
        started = time.perf_counter()
        pm.run()
        out["pseudometric_first_paint_s"] = time.perf_counter() - started
        out["pseudometric_exception"] = [e.message for e in pm.exception]
        out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "app-scale.json"))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process: one size, JSON on stdout
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_size(args.one)))
        return
    result: dict = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()},
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "sizes": [],
    }
    for n in args.sizes:
        child = subprocess.run(
            [sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True, cwd=REPO
        )
        result["sizes"].append(json.loads(child.stdout.strip().splitlines()[-1]))
    result["machine"]["load_average_at_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
