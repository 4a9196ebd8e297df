"""The app in a real browser (chromium + playwright): how fast it feels. Writes bench/results/app.json.

Usage: python bench/app.py [--home DIR] [--demo-timeout 1800] [--moves 3]

1. A fresh home and a fresh server with the demo switched on: time to first paint of Home (the
   app opens while the demo is built in the background), then the demo's build time per job.
2. A fresh server on the finished demo: time to first paint of every page by its direct URL
   (cold: the first visit to each page in that server process), and once more (warm).
3. Embeddings on the demo's maze (4096 actions): p slider moves -> re-formed scatter (the first
   changed frame, and the last frame of the 60-step warm start, as the browser shows them), and
   the server side: when the warm-start job was recorded and when its last frame was written.
4. Upload of a 100k-transition npz on the Data page -> its summary on screen.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from browser_support import browser, open_page, scatter_data, server, wait_ready  # noqa: E402

PAGES = [
    ("", "Start with the demo"),
    ("data", "Generate"),
    ("train", "Training jobs"),
    ("embeddings", "Observation"),
    ("pseudometric", "Spearman (this state)"),
    ("runs", "Benchmark tables"),
]


def demo_jobs(home: Path) -> list:
    os.environ["MERLION_STUDIO_HOME"] = str(home)
    from studio import chains

    chain = chains.load(chains.DEMO)
    return [] if chain is None else [job for _, job in chains.step_jobs(chain)]


def wait_for_demo(home: Path, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = demo_jobs(home)
        if jobs and all(j is not None and j.status == "succeeded" for j in jobs):
            return {
                f"{j.kind} {j.config.get('method') or j.config.get('algo') or ''}".strip(): round(
                    j.finished_at - j.started_at, 1
                )
                for j in jobs
            }
        if any(j is not None and j.status in ("failed", "cancelled") for j in jobs):
            raise RuntimeError(f"demo failed: {[(j.kind, j.status, j.exit_reason) for j in jobs if j]}")
        time.sleep(5)
    raise TimeoutError("the demo did not finish in time")


def warm_caption(page) -> str:
    """The text of the warm-start caption under the MERLION scatter ('' before the first move)."""
    return page.evaluate("""() => { const el = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
        .find(e => e.innerText.includes('warm start job #')); return el ? el.innerText : ''; }""")


SETTLE = 3.0
"""Seconds the scatter is watched after the final caption for a later redraw."""


def slider_moves(page, url: str, moves: int) -> list[dict]:
    open_page(page, f"{url}/embeddings", "Observation", timeout=180)
    page.locator('[data-testid="stPlotlyChart"]').nth(1).wait_for()
    time.sleep(15)  # the resident warm-start worker starts (torch import, warm-up) while the user looks
    out = []
    for i in range(moves):
        before, before_caption = scatter_data(page, 1), warm_caption(page)
        slider = page.get_by_role("slider").first
        slider.focus()
        started, wall_started = time.perf_counter(), time.time()
        slider.press("ArrowRight" if i % 2 == 0 else "ArrowLeft")
        # first: the scatter's first change; last: the caption says step 60/60 and the scatter shows
        # its final redraw (the caption can arrive before the remounted chart, so the scatter is
        # watched for SETTLE seconds more and its last change counts)
        first = changed = done = None
        while time.perf_counter() - started < 60:
            now, caption = scatter_data(page, 1), warm_caption(page)
            elapsed = time.perf_counter() - started
            if now and (len(now) != len(before) or not np.allclose(np.concatenate(now), np.concatenate(before))):
                first = elapsed if first is None else first
                changed, before = elapsed, now
            if done is None and caption != before_caption and "step 60/60, succeeded" in caption:
                done = elapsed
            if done is not None and elapsed - done > SETTLE:
                break
            time.sleep(0.02)
        last = None if done is None or changed is None else max(done, changed)
        wait_ready(page)
        from studio import jobs_client

        job = jobs_client.jobs("warm-start")[-1]  # the server side: when the job was recorded and done
        out.append(
            {
                "first_reformed_frame_s": None if first is None else round(first, 3),
                "last_frame_s": None if last is None else round(last, 3),
                "job_recorded_s": round(job.created_at - wall_started, 3),
                "job_done_s": round(job.finished_at - wall_started, 3) if job.finished_at else None,
            }
        )
        time.sleep(1.0)
    return out


def upload_100k(page, url: str, folder: Path) -> tuple[float, int]:
    n, rng = 100_000, np.random.default_rng(0)
    obs = rng.random((n, 3), dtype=np.float32)
    path = folder / "maze-100k.npz"
    buf = io.BytesIO()
    np.savez(
        buf,
        observations=obs,
        actions=rng.integers(0, 4096, n),
        rewards=rng.normal(size=n).astype(np.float32),
        next_observations=obs,
        terminals=np.arange(n) % 60 == 59,
        timeouts=np.zeros(n, bool),
        n_actions=np.array(4096),
    )
    path.write_bytes(buf.getvalue())
    open_page(page, f"{url}/data", "Generate")
    page.get_by_role("tab", name="Upload").click()
    started = time.perf_counter()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(path))
    page.get_by_text("valid npz dataset").wait_for(timeout=120_000)
    wait_ready(page)
    page.get_by_role("tab", name="Summary").click()
    page.locator('[data-testid="stMetric"]', has_text="Transitions").get_by_text("100,000").wait_for(timeout=120_000)
    page.locator('[data-testid="stPlotlyChart"]').last.wait_for()
    return time.perf_counter() - started, path.stat().st_size


def first_start(page, home: Path, demo_timeout: float, result: dict) -> None:
    """Part 1: a fresh server on an empty home opens while the demo builds; then the demo's times."""
    with server(home, demo=True) as url:
        result["home_first_paint_fresh_server_s"] = round(open_page(page, url, "Start with the demo", 120), 3)
        result["home_second_paint_s"] = round(open_page(page, url, "Start with the demo", 120), 3)
        print("home", result["home_first_paint_fresh_server_s"], flush=True)
        started = time.monotonic()
        result["demo_job_seconds"] = wait_for_demo(home, demo_timeout)
        result["demo_total_s"] = round(time.monotonic() - started, 1)
        print("demo", result["demo_job_seconds"], flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", help="studio home to use (default: a new temporary folder)")
    parser.add_argument("--demo-timeout", type=float, default=1800)
    parser.add_argument("--moves", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "app.json"))
    parser.add_argument(
        "--after-demo",
        action="store_true",
        help="reuse --home with its finished demo: keep part 1's numbers from --out, rerun 2-4",
    )
    args = parser.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="studio-bench-"))
    home.mkdir(parents=True, exist_ok=True)
    previous = json.loads(Path(args.out).read_text()) if args.after_demo and Path(args.out).is_file() else {}
    result: dict = {
        **previous,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
            "python": platform.python_version(),
            "browser": "Debian chromium (headless)",
        },
        "home": str(home),
    }
    with browser() as page:
        if args.after_demo:
            wait_for_demo(home, 1.0)  # it must be there already
        else:
            first_start(page, home, args.demo_timeout, result)
        with server(home) as url:
            result["page_first_paint_cold_s"] = {
                path or "home": round(open_page(page, f"{url}/{path}", text, 180), 3) for path, text in PAGES
            }
            result["page_first_paint_warm_s"] = {
                path or "home": round(open_page(page, f"{url}/{path}", text, 180), 3) for path, text in PAGES
            }
            print("pages", result["page_first_paint_cold_s"], flush=True)
            result["slider_moves_maze_4096_actions"] = slider_moves(page, url, args.moves)
            print("slider", result["slider_moves_maze_4096_actions"], flush=True)
            seconds, size = upload_100k(page, url, home)
            result["upload_100k_to_summary_s"] = round(seconds, 3)
            result["upload_100k_bytes"] = size
    result["machine"]["load_average_at_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
