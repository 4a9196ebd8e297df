"""The app under load (issue 26, item 6): many browser sessions at once while jobs train.
Writes bench/results/load/load.json.

Usage: python bench/load.py [--sessions 10] [--rounds 4] [--think 1.0] [--time-limit 2400]

A fresh home (tests/studio_fixture.py: a 64-action maze dataset, encoders, an agent), demo off, one
server (``streamlit run app.py`` on a free loopback port). Then two configurations, one after the
other: 1 session (the single-session figure), then N sessions at once. Each configuration first
submits 2 small training jobs through the jobs API (a latent CQL agent and a MERLION encoder: the
supervisor runs them as worker processes), waits until both train, and then runs its sessions: one
headless Debian chromium, one browser context per session, every session visiting every page
``--rounds`` times (session i starts at page i mod 6; the first visit by the page's URL, then by the
sidebar's links as a user switches pages) and making one widget change per visit (a selectbox,
slider or radio of that page; Home has none). Recorded: each visit's first paint (the navigation
until the page's title and main content are shown and Streamlit is idle, nothing stale or still a skeleton:
tests/browser_support.py's readiness checks), each widget change's rerun, every exception the app
shows (Streamlit's exception element) and every error in the browser's console or an uncaught page
error. After the sessions it waits for the 2 jobs: each must succeed and its artifact exist (not
lost). Everything it started (server, supervisor, job workers, warm-start worker, browser) is
stopped in finally blocks; a hard time limit stops the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for _path in (str(REPO), str(REPO / "tests")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from browser_support import (  # noqa: E402
    APP_PAGES,
    CHROMIUM,
    CHROMIUM_ARGS,
    arm_rerun_async,
    base_path_probe_error,
    external_resource_error,
    open_page_async,
    rerun_done_async,
    seen_exceptions_async,
    server,
    stop_background_processes,
    switch_page_async,
    watch_exceptions_async,
)

OUT = REPO / "bench" / "results" / "load" / "load.json"
GOAL_RATIO = 3.0
"""The goal: p95 first paint with N sessions at most this many times the single-session p95."""

HOW_TO_READ = {
    "first_paint_s": "per visit: from the navigation (page.goto for a session's first visit, a click on the "
    "sidebar's link after that) until the page's title and main content are shown, Streamlit is idle "
    "(data-test-script-state notRunning) and nothing is stale or still a skeleton; p50/p95 over every visit "
    "of every session of the configuration",
    "p95_ratio": "p95 first paint with N sessions / p95 with 1 session (goal: at most 3)",
    "exceptions": "Streamlit exception elements (each distinct one per session and page) + browser console "
    "errors + uncaught page errors; not counted: see each configuration's not_counted",
    "jobs": "every training job a configuration submitted: succeeded with its artifact on disk = not lost",
    "cpu_during_load": "CPU seconds by role while the sessions ran (from /proc); the browsers run on the same "
    "2 cores as the app, so their share is load the app's server did not cause; niceness_by_role: the "
    "niceness its processes ran at (job workers: SupervisorConfig.nice)",
    "warmup": "every page once by 1 session before the measured configurations (untimed in the figures)",
}
"""What the figures mean (written into the JSON)."""

WIDGETS: dict[str, tuple[tuple[str, str], ...]] = {
    "": (),
    "data": (("selectbox", "Behaviour"),),
    "train": (("selectbox", "Method"), ("selectbox", "Dataset")),
    "embeddings": (("slider", "p (OOD penalty)"), ("slider", "tau (OOD threshold)"), ("radio", "Colour by")),
    "pseudometric": (("selectbox", "Representation"),),
    "runs": (("radio", "Metric"), ("selectbox", "Job")),
}
"""The widgets a session changes on each page (kind, label): one, picked at random, per visit."""
TESTIDS = {"selectbox": "stSelectbox", "slider": "stSlider", "radio": "stRadio"}
SHOWN = """() => ({
    labels: [...document.querySelectorAll('[data-testid="stMain"] [data-testid="stWidgetLabel"]')]
        .map(e => e.innerText.trim()),
    path: location.pathname,
    state: (document.querySelector('[data-testid="stApp"]') || {getAttribute: () => null})
        .getAttribute('data-test-script-state'),
    h1: [...document.querySelectorAll('[data-testid="stMain"] h1')].map(e => e.innerText.trim()),
    stale: document.querySelectorAll('[data-stale="true"]').length,
    skeletons: document.querySelectorAll('[data-testid="stSkeleton"]').length,
    exceptions: document.querySelectorAll('[data-testid="stException"]').length,
    text: (document.querySelector('[data-testid="stMain"]') || {innerText: ''}).innerText.slice(0, 300)})"""
"""What a page shows when none of its widgets could be found or it was not painted in time (recorded to
say why)."""
OPEN_LIST_TIMEOUT = 15.0
"""Seconds a selectbox's list gets to open after a click (then the click is tried again, 3 times in all)."""


@dataclass
class Settings:
    sessions: int = 10
    """N: browser sessions at once in the second configuration."""
    rounds: int = 4
    """Each session visits every page this many times (one widget change per visit)."""
    think: float = 1.0
    """Seconds a session waits after each paint and each widget change (a user looking)."""
    stagger: float = 0.5
    """Session i starts i * stagger seconds after the first."""
    single: bool = True
    """Measure 1 session first (the single-session figure)."""
    keep_training: bool = True
    """A job that ends while the sessions still run is followed by a new one of its kind (2 jobs train
    during the whole load); every job submitted must succeed."""
    warmup: bool = True
    """Visit every page once (1 session, widget changes included) before measuring: a fresh server's first
    visits import torch and the pages' modules, which neither configuration should pay."""
    agent_steps: int = 1500
    """Gradient steps of the latent CQL job each configuration submits."""
    encoder_steps: int = 3000
    """Gradient steps of the MERLION encoder job each configuration submits."""
    paint_timeout: float = 120.0
    """Seconds a page may take to be painted (or a widget change to be done) before it counts as a failure."""
    phase_limit: float = 900.0
    """Seconds a configuration's sessions may run; no visit starts after it."""
    job_timeout: float = 900.0
    """Seconds the jobs get to finish after a configuration's sessions."""
    time_limit: float = 2400.0
    """Hard limit on the whole run (seconds)."""
    seed: int = 0
    """Seed of the sessions' widget choices."""
    pin_browsers: bool = False
    """A diagnostic, not the measure: the browsers (and this process) on the last CPU, the app's processes
    (server, supervisor, job workers, warm-start worker) on the others, so the browsers cannot take the
    app's CPU; re-applied to every thread at each CPU sample."""


@contextmanager
def studio_env(home: Path) -> Iterator[None]:
    """``os.environ`` as the app's: home, demo off (the supervisor started by a submit inherits it, so
    ``stop_background_processes(home)`` finds it and its workers)."""
    saved = dict(os.environ)
    os.environ["MERLION_STUDIO_HOME"] = str(home)
    os.environ["MERLION_STUDIO_DEMO"] = "0"
    os.environ.pop("MERLION_RUNS_DIR", None)
    os.environ.pop("MERLION_DATA_DIR", None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def prepare_home(home: Path) -> dict:
    """A small studio home (tests/studio_fixture.py): dataset, encoders, an agent, as succeeded jobs."""
    from studio_fixture import build_home

    home.mkdir(parents=True, exist_ok=True)
    return build_home(home)


JOB_KINDS = ("train-agent", "train-encoder")


def submit_job(home: Path, fixture: dict, settings: Settings, kind: str, tag: str) -> int:
    """One training job through the jobs API (the supervisor starts on demand): a latent CQL agent on
    the fixture's MERLION encoder, or a new MERLION encoder."""
    if kind == "train-agent":
        config = {
            "dataset": fixture["dataset"],
            "algo": "cql",
            "encoder": fixture["encoder"],
            "steps": settings.agent_steps,
            "eval_every": max(1, settings.agent_steps // 4),
            "eval_episodes": 2,
            "options": {"batch_size": 32},
        }
    else:
        config = {
            "dataset": fixture["dataset"],
            "method": "merlion",
            "options": {"steps": settings.encoder_steps, "batch_size": 32},
        }
    with studio_env(home):
        from studio import jobs_client

        return jobs_client.submit(kind, config, tag=tag)


class Trainer:
    """A configuration's 2 training jobs, submitted before its sessions start. With ``keep_training``,
    a job that ends while the sessions still run is followed by a new one of its kind (``top_up``),
    so that 2 jobs train during the whole load; every job submitted is checked at the end."""

    def __init__(self, home: Path, fixture: dict, settings: Settings, tag: str) -> None:
        self.home, self.fixture, self.settings, self.tag = home, fixture, settings, tag
        self.slots = [submit_job(home, fixture, settings, kind, tag) for kind in JOB_KINDS]
        self.ids = list(self.slots)

    def top_up(self) -> None:
        from merlion_core.jobs.store import FINAL

        if not self.settings.keep_training:
            return
        for i, job in enumerate(job_records(self.home, self.slots)):
            if job.status in FINAL:
                self.slots[i] = submit_job(self.home, self.fixture, self.settings, JOB_KINDS[i], self.tag)
                self.ids.append(self.slots[i])


def warm_start_statuses(home: Path, window: tuple[float, float]) -> dict[str, int]:
    """How the warm-start jobs the slider moves recorded in ``window`` ended (superseded ones: cancelled)."""
    from merlion_core.jobs.store import JobStore

    store = JobStore(home / "runs")
    try:
        jobs = [j for j in store.list() if j.kind == "warm-start" and window[0] <= j.created_at <= window[1]]
    finally:
        store.close()
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.status] = counts.get(job.status, 0) + 1
    return counts


def job_records(home: Path, ids: list[int]) -> list:
    from merlion_core.jobs.store import JobStore

    store = JobStore(home / "runs")
    try:
        return [store.get(i) for i in ids]
    finally:
        store.close()


def wait_running(home: Path, ids: list[int], timeout: float) -> float:
    """Seconds until every job left the queue (running or already final)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if all(job.status != "queued" for job in job_records(home, ids)):
            break
        time.sleep(0.5)
    return time.monotonic() - started


def wait_final(home: Path, ids: list[int], timeout: float) -> list:
    from merlion_core.jobs.store import FINAL

    deadline = time.monotonic() + timeout
    while True:
        records = job_records(home, ids)
        if all(job.status in FINAL for job in records) or time.monotonic() > deadline:
            return records
        time.sleep(1.0)


def job_report(job, window: tuple[float, float]) -> dict:
    """One job: status, whether its artifact exists (not lost), its times and its overlap with the load."""
    key = {"train-agent": "agent", "train-encoder": "encoder"}.get(job.kind, "")
    artifact = (job.result or {}).get(key)
    start, end = job.started_at, job.finished_at
    overlap = None
    if start is not None:
        overlap = max(0.0, min(end if end is not None else window[1], window[1]) - max(start, window[0]))
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "exit_reason": job.exit_reason,
        "artifact_exists": isinstance(artifact, str) and Path(artifact).exists(),
        "step": job.step,
        "total": job.total,
        "seconds": None if start is None or end is None else round(end - start, 1),
        "trained_during_load_s": None if overlap is None else round(overlap, 1),
    }


# ---------------------------------------------------------------- where the CPU went
class CpuMeter:
    """CPU seconds used while the sessions run, by role: the app server, the job workers, the
    supervisor and the warm-start worker (processes whose environment names ``home``), the browser
    (chromium and playwright's driver: this process's descendants), this process, and the rest of the
    machine (other work). Sampled from /proc every ``every`` seconds (a process that starts and ends
    between two samples is missed). Also the niceness each role's processes ran at (job workers: the
    supervisor's ``nice``, default 10)."""

    ROLES = (
        (b"streamlit", "app server"),
        (b"merlion_core.jobs.worker", "job workers"),
        (b"merlion_core.jobs.supervisor", "supervisor"),
        (b"studio.warmstart_worker", "warm-start worker"),
    )

    def __init__(self, home: Path, every: float = 2.0, pin: dict[str, set[int]] | None = None) -> None:
        self.marker = f"MERLION_STUDIO_HOME={home}".encode()
        self.pin = pin or {}
        self.every = every
        self.tick = os.sysconf("SC_CLK_TCK")
        self.first: dict[tuple[int, str], float] = {}
        self.last: dict[tuple[int, str], tuple[str, float]] = {}
        self.nice: dict[str, set[int]] = {}
        self.busy0 = self.wall0 = 0.0
        self.starting = False
        self.lock = threading.Lock()

    def _role(self, pid: int, argv: list[bytes], parents: dict[int, int]) -> str | None:
        if pid == os.getpid():
            return "bench (this process)"
        try:
            if self.marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                joined = b" ".join(argv)
                return next((role for key, role in self.ROLES if key in joined), "other of the app")
        except OSError:
            pass
        seen, up = set(), parents.get(pid, 0)
        while up > 1 and up not in seen:  # a descendant of this process: the browser or its driver
            if up == os.getpid():
                return "browser (chromium, playwright)"
            seen.add(up)
            up = parents.get(up, 0)
        return None

    @staticmethod
    def _busy() -> float:
        """Seconds every core was busy since boot (/proc/stat: all but idle and iowait)."""
        fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")

    def sample(self) -> None:
        with self.lock:
            self._sample()

    def _sample(self) -> None:
        stats: dict[int, tuple[int, str, float, int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            cpu = (int(fields[11]) + int(fields[12])) / self.tick
            stats[int(entry.name)] = (int(fields[1]), fields[19], cpu, int(fields[16]))
        parents = {pid: stat[0] for pid, stat in stats.items()}
        for pid, (_, started, cpu, nice) in stats.items():
            key = (pid, started)
            if key in self.last:
                role = self.last[key][0]
            else:
                try:
                    found = self._role(pid, Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"), parents)
                except OSError:
                    continue
                if found is None:
                    continue
                role = found
                self.first[key] = cpu if self.starting else 0.0  # started since: all its time counts
            self.last[key] = (role, cpu)
            self.nice.setdefault(role, set()).add(nice)
            if role in self.pin:
                pin_threads(pid, self.pin[role])

    def start(self) -> None:
        self.starting = True
        self.sample()  # what runs now counts from now on
        self.starting = False
        self.busy0, self.wall0 = self._busy(), time.monotonic()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            await asyncio.to_thread(self.sample)

    def result(self) -> dict:
        self.sample()
        wall = time.monotonic() - self.wall0
        used: dict[str, float] = {}
        with self.lock:
            for key, (role, cpu) in self.last.items():
                used[role] = used.get(role, 0.0) + max(0.0, cpu - self.first.get(key, 0.0))
        busy = self._busy() - self.busy0
        used["rest of the machine (other work)"] = max(0.0, busy - sum(used.values()))
        return {
            "seconds": round(wall, 1),
            "cpu_seconds_by_role": {k: round(v, 1) for k, v in sorted(used.items(), key=lambda kv: -kv[1])},
            "cores_busy_by_role": {k: round(v / wall, 2) for k, v in sorted(used.items(), key=lambda kv: -kv[1])},
            "cores_busy_in_all": round(busy / wall, 2),
            "niceness_by_role": {role: sorted(values) for role, values in sorted(self.nice.items())},
            "cpus_by_role": {role: sorted(cpus) for role, cpus in sorted(self.pin.items())} or None,
        }


def pin_roles(settings: Settings) -> dict[str, set[int]] | None:
    """The CPUs of each role when ``settings.pin_browsers``: the last CPU this process may use for the
    browsers and this process, the others for the app's processes; None when not pinning."""
    if not settings.pin_browsers:
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit(f"bench/load.py: --pin-browsers needs 2 CPUs or more, this process may use {cpus}")
    app, browsers = set(cpus[:-1]), {cpus[-1]}
    pins = {role: app for _, role in CpuMeter.ROLES} | {"other of the app": app}
    return pins | {"browser (chromium, playwright)": browsers, "bench (this process)": browsers}


def pin_threads(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` onto ``cpus`` (Linux affinity is per thread; a thread started later
    inherits its creator's). A process or thread that has ended meanwhile is skipped."""
    try:
        tids = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return
    for tid in tids:
        try:
            if os.sched_getaffinity(tid) != cpus:
                os.sched_setaffinity(tid, cpus)
        except OSError:
            pass


# ---------------------------------------------------------------- one browser session
def _widget(page, kind: str, label: str):
    pattern = re.compile(rf"^\s*{re.escape(label)}\s*$")
    return (
        page.locator(f'[data-testid="stMain"] [data-testid="{TESTIDS[kind]}"]:visible')
        .filter(has=page.locator('[data-testid="stWidgetLabel"]', has_text=pattern))
        .first
    )


async def change_widget(page, kind: str, label: str, rng: random.Random, timeout: float) -> None:
    """One widget change as a user makes it: a selectbox option, a slider step, a radio option."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    box = _widget(page, kind, label)
    ms = timeout * 1000
    if kind == "selectbox":
        options = page.locator('[role="listbox"] [role="option"]')
        for attempt in range(3):  # a rerun of the page (a live fragment's) can close the list under us
            await box.locator('[role="combobox"], input').first.click(timeout=ms)
            try:
                await options.first.wait_for(timeout=OPEN_LIST_TIMEOUT * 1000)
                break
            except PlaywrightTimeout:
                if attempt == 2:
                    raise
                await page.keyboard.press("Escape")
        flags = await options.evaluate_all("els => els.map(e => e.getAttribute('aria-selected') === 'true')")
        choices = [i for i, selected in enumerate(flags) if not selected] or list(range(len(flags)))
        await options.nth(rng.choice(choices)).click(timeout=ms)
    elif kind == "slider":
        thumb = box.get_by_role("slider")
        values = await thumb.evaluate(
            "t => ['aria-valuenow', 'aria-valuemin', 'aria-valuemax'].map(a => Number(t.getAttribute(a)))",
            timeout=ms,
        )
        now, low, high = (float(v) for v in values)
        key = "ArrowRight" if now <= low or (now < high and rng.random() < 0.5) else "ArrowLeft"
        await thumb.focus(timeout=ms)
        await thumb.press(key, timeout=ms)
    else:
        labels = box.locator("label")
        checked = await labels.evaluate_all("els => els.map(e => !!e.querySelector('input:checked'))")
        choices = [i for i, c in enumerate(checked) if not c] or list(range(len(checked)))
        await labels.nth(rng.choice(choices)).click(timeout=ms)


async def act(page, path: str, rng: random.Random, timeout: float) -> tuple[str, float, bool] | None:
    """One widget change on the page at ``path`` (the first of its widgets, in a random order, that
    is shown); (what, seconds until Streamlit is idle again, whether a run was seen), None when the
    page has none."""
    for kind, label in rng.sample(WIDGETS[path], len(WIDGETS[path])):
        if not await _widget(page, kind, label).count():
            continue
        await arm_rerun_async(page)
        started = time.perf_counter()
        await change_widget(page, kind, label, rng, timeout)
        try:
            ran = await rerun_done_async(page, timeout=timeout)
        except Exception as exc:
            raise RerunTimeout(f"{kind} {label}: {_first_line(exc)}") from exc
        return f"{kind} {label}", time.perf_counter() - started, ran
    return None


class RerunTimeout(Exception):
    """The app did not become idle again after a widget change (an app failure, not the driver's)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


async def session(browser, url: str, index: int, settings: Settings, t0: float, deadline: float, rec: dict) -> None:
    """One user: every page ``settings.rounds`` times, a widget change on each; fills ``rec``."""
    rng = random.Random(settings.seed * 1000 + index)
    order = [APP_PAGES[(index + k) % len(APP_PAGES)] for k in range(len(APP_PAGES))]
    rec.update(session=index, paints=[], actions=[], skipped=[], exceptions=[], console_errors=[], failures=[])
    rec["external_resource_errors"] = rec["base_path_probes"] = 0
    rec["page"] = None

    def on_console(msg) -> None:
        if msg.type != "error" or rec.get("closing"):
            return
        where = (msg.location or {}).get("url", "")
        if external_resource_error(msg.text, where, url):
            rec["external_resource_errors"] += 1
        elif base_path_probe_error(msg.text, where, url):
            rec["base_path_probes"] += 1
        else:
            rec["console_errors"].append({"page": rec["page"], "text": msg.text[:500], "url": where})

    def on_page_error(error) -> None:
        if not rec.get("closing"):
            rec["console_errors"].append({"page": rec["page"], "text": f"uncaught: {str(error)[:500]}", "url": ""})

    async def look(path: str, when: str) -> None:
        for text in await seen_exceptions_async(page):
            rec["exceptions"].append({"page": path or "home", "when": when, "text": text[:1000]})

    await asyncio.sleep(index * settings.stagger)
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        await watch_exceptions_async(context)
        page = await context.new_page()
        page.on("console", on_console)
        page.on("pageerror", on_page_error)
        current: str | None = None
        for visit in range(settings.rounds * len(order)):
            if time.monotonic() > deadline:
                rec["stopped_at_phase_limit"] = True
                break
            path, title, marker = order[visit % len(order)]
            name = path or "home"
            rec["page"] = name
            how = "url" if current is None else "sidebar"
            started = time.monotonic()
            try:
                if how == "url":
                    seconds = await open_page_async(page, url, path, title, marker, settings.paint_timeout)
                else:
                    seconds = await switch_page_async(page, path, title, marker, settings.paint_timeout)
            except Exception as exc:  # a timeout or a broken page: recorded, then the next page by its URL
                failure = {"page": name, "what": f"paint ({how})", "error": _first_line(exc)}
                try:
                    failure["shown"] = await page.evaluate(SHOWN)
                except Exception as why:
                    failure["shown"] = _first_line(why)
                rec["failures"].append(failure)
                await look(path, "paint failed")
                current = None
                continue
            current = path
            rec["paints"].append({"page": name, "how": how, "s": round(seconds, 3), "t": round(started - t0, 1)})
            await look(path, "after paint")
            await asyncio.sleep(settings.think)
            try:
                done = await act(page, path, rng, settings.paint_timeout)
            except Exception as exc:  # RerunTimeout: the app's; anything else: the widget could not be driven
                what = "rerun after a widget change" if isinstance(exc, RerunTimeout) else "widget change"
                rec["failures"].append({"page": name, "what": what, "error": _first_line(exc)})
                await look(path, "widget change failed")
                current = None
                continue
            if done is None and WIDGETS[path]:  # none of its widgets shown: say which labels were
                rec["skipped"].append({"page": name, **await page.evaluate(SHOWN)})
            if done is not None:
                what, seconds, ran = done
                rec["actions"].append({"page": name, "what": what, "s": round(seconds, 3), "reran": ran})
                await look(path, f"after {what}")
                await asyncio.sleep(settings.think)
    finally:
        rec["closing"] = True
        rec.pop("page", None)
        await context.close()


async def every(seconds: float, call: Callable[[], None]) -> None:
    while True:
        await asyncio.sleep(seconds)
        call()


async def run_sessions(
    url: str,
    n: int,
    settings: Settings,
    limit: float,
    meter: CpuMeter | None = None,
    during: Callable[[], None] | None = None,
) -> tuple[list[dict], dict]:
    """``n`` sessions at once in one chromium; (their records, facts about the run: with ``meter``,
    where the CPU went while they ran). ``during`` is called every 5 s while they run."""
    from playwright.async_api import async_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM}: no chromium (apt-get install chromium)")
    records: list[dict] = [{} for _ in range(n)]
    facts: dict[str, Any] = {"timed_out": False}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            facts["browser"] = f"Debian chromium {browser.version} (headless, --disable-gpu)"
            t0 = time.monotonic()
            deadline = t0 + limit
            tasks = [session(browser, url, i, settings, t0, deadline, records[i]) for i in range(n)]
            helpers = []
            if meter is not None:
                meter.start()
                helpers.append(asyncio.ensure_future(meter.run()))
            if during is not None:
                helpers.append(asyncio.ensure_future(every(5.0, during)))
            # hard stop: no visit starts after the deadline, and one under way gets paint_timeout more
            try:
                await asyncio.wait_for(asyncio.gather(*tasks), timeout=limit + settings.paint_timeout + 60)
            except TimeoutError:
                facts["timed_out"] = True
            finally:
                for helper in helpers:
                    helper.cancel()
            facts["seconds"] = round(time.monotonic() - t0, 1)
            if meter is not None:
                facts["cpu"] = meter.result()
        finally:
            await browser.close()
    return records, facts


# ---------------------------------------------------------------- figures
def percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    a = np.asarray(values, dtype=float)
    return {
        "n": int(a.size),
        "p50": round(float(np.percentile(a, 50)), 3),
        "p95": round(float(np.percentile(a, 95)), 3),
        "max": round(float(a.max()), 3),
    }


def _first_visits(records: list[dict], first: bool) -> list[dict]:
    """Each session's first visit to each page (``first``) or its later visits: a first visit makes the
    session's browser context load the page's chart code, and its server session build the page."""
    chosen = []
    for r in records:
        seen: set[str] = set()
        for p in r.get("paints", []):
            if (p["page"] not in seen) == first:
                chosen.append(p)
            seen.add(p["page"])
    return chosen


def summarise(records: list[dict]) -> dict:
    paints = [p for r in records for p in r.get("paints", [])]
    actions = [a for r in records for a in r.get("actions", [])]
    exceptions = {(r["session"], e["page"], e["text"]) for r in records for e in r.get("exceptions", [])}
    console = [dict(c, session=r["session"]) for r in records for c in r.get("console_errors", [])]
    pages = [name or "home" for name, _, _ in APP_PAGES]
    failures = [dict(f, session=r["session"]) for r in records for f in r.get("failures", [])]
    return {
        "first_paint_s": percentiles([p["s"] for p in paints]),
        "first_paint_by_page_s": {name: percentiles([p["s"] for p in paints if p["page"] == name]) for name in pages},
        "first_paint_by_url_s": percentiles([p["s"] for p in paints if p["how"] == "url"]),
        "first_paint_by_sidebar_s": percentiles([p["s"] for p in paints if p["how"] == "sidebar"]),
        "first_paint_first_visit_to_page_s": percentiles([p["s"] for p in _first_visits(records, True)]),
        "first_paint_repeat_visits_s": percentiles([p["s"] for p in _first_visits(records, False)]),
        "widget_change_to_idle_s": percentiles([a["s"] for a in actions]),
        "widget_changes": len(actions),
        "widget_changes_skipped": [dict(k, session=r["session"]) for r in records for k in r.get("skipped", [])],
        "app_exceptions": len(exceptions),
        "app_exception_texts": sorted({e[2] for e in exceptions})[:10],
        "console_errors": len(console),
        "console_error_samples": console[:10],
        "not_counted": {
            "external_resource_errors": sum(r.get("external_resource_errors", 0) for r in records),
            "streamlit_base_path_probes": sum(r.get("base_path_probes", 0) for r in records),
            "why": "console errors that are not the app's: resources of other hosts on this offline machine (the "
            "favicon's Material icon from fonts.gstatic.com), and the 404s of Streamlit's client probing "
            "/<page>/_stcore/health and host-config for the base path when a page is opened by its URL",
        },
        "exceptions": len(exceptions) + len(console),
        "failures": failures,
        "paint_failures": sum(f["what"].startswith("paint") for f in failures),
        "rerun_failures": sum(f["what"].startswith("rerun") for f in failures),
        "driver_failures": sum(f["what"] == "widget change" for f in failures),
        "pages_rendered_per_session": [sorted({p["page"] for p in r.get("paints", [])}) for r in records],
        "every_page_rendered_by_every_session": all(
            {p["page"] for p in r.get("paints", [])} == set(pages) for r in records
        ),
        "visits_per_session": [len(r.get("paints", [])) for r in records],
        "stopped_at_phase_limit": sum(bool(r.get("stopped_at_phase_limit")) for r in records),
    }


def run_configuration(
    home: Path,
    url: str,
    fixture: dict,
    n: int,
    settings: Settings,
    deadline: float,
    pins: dict[str, set[int]] | None = None,
) -> dict:
    """Submit the 2 jobs, wait until they train, run ``n`` sessions (2 jobs kept training meanwhile
    with ``settings.keep_training``), wait for every job."""
    trainer = Trainer(home, fixture, settings, tag=f"load:{n}")
    waited = wait_running(home, trainer.ids, timeout=120)
    load_before = os.getloadavg()
    limit = max(10.0, min(settings.phase_limit, deadline - time.monotonic() - settings.paint_timeout - 90))
    wall = time.time()
    meter = CpuMeter(home, pin=pins)
    records, facts = asyncio.run(run_sessions(url, n, settings, limit, meter, trainer.top_up))
    window = (wall, time.time())
    load_after = os.getloadavg()
    ids = trainer.ids
    at_end = job_records(home, ids)
    jobs = wait_final(home, ids, max(5.0, min(settings.job_timeout, deadline - time.monotonic() - 30)))
    reports = [job_report(job, window) for job in jobs]
    return {
        "sessions": n,
        **summarise(records),
        "load_seconds": facts.get("seconds"),
        "hit_hard_limit": facts["timed_out"],
        "browser": facts.get("browser"),
        "cpu_during_load": facts.get("cpu"),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "jobs_waited_to_start_s": round(waited, 1),
        "jobs_running_when_load_ended": sum(job.status == "running" for job in at_end),
        "jobs": reports,
        "jobs_all_succeeded": all(r["status"] == "succeeded" and r["artifact_exists"] for r in reports),
        "warm_start_jobs": warm_start_statuses(home, window),
        "records": records,
    }


def cpu_per_visit(configuration: dict) -> dict[str, float] | None:
    """CPU seconds each role used per page visit while a configuration's sessions ran (the visit's
    widget change and the live fragments' reruns included); None without a CPU record or visits."""
    cpu, visits = configuration.get("cpu_during_load"), configuration.get("first_paint_s", {}).get("n")
    if not cpu or not visits:
        return None
    return {role: round(seconds / visits, 3) for role, seconds in cpu["cpu_seconds_by_role"].items()}


def figures_of(result: dict, sessions: int) -> dict[str, Any]:
    """The headline figures of a run's configurations (1 session against ``sessions``)."""
    configurations = result["configurations"]
    one, many = configurations.get("1"), configurations.get(str(sessions))
    figures: dict[str, Any] = {}
    if one is not None:
        figures["p50_first_paint_1_s"] = one["first_paint_s"]["p50"]
        figures["p95_first_paint_1_s"] = one["first_paint_s"]["p95"]
    if many is not None:
        figures[f"p50_first_paint_{sessions}_s"] = many["first_paint_s"]["p50"]
        figures[f"p95_first_paint_{sessions}_s"] = many["first_paint_s"]["p95"]
    if one is not None and many is not None and one["first_paint_s"]["p95"] and many["first_paint_s"]["p95"]:
        figures["p95_ratio"] = round(many["first_paint_s"]["p95"] / one["first_paint_s"]["p95"], 2)
        figures["goal_ratio_at_most"] = GOAL_RATIO
        figures["ratio_goal_met"] = figures["p95_ratio"] <= GOAL_RATIO
        # the same without each session's first visit (by URL: a new browser context loads the app's
        # JavaScript, the N sessions' first visits all at once): page switches by the sidebar only
        one_s, many_s = one["first_paint_by_sidebar_s"]["p95"], many["first_paint_by_sidebar_s"]["p95"]
        if one_s and many_s:
            figures["p95_first_paint_sidebar_switches_1_s"] = one_s
            figures[f"p95_first_paint_sidebar_switches_{sessions}_s"] = many_s
            figures["p95_ratio_sidebar_switches"] = round(many_s / one_s, 2)
        # and without any session's first visit to a page (its browser context loads that page's chart
        # code, its server session builds the page): the visits of a user who has seen the page before
        one_r, many_r = one["first_paint_repeat_visits_s"]["p95"], many["first_paint_repeat_visits_s"]["p95"]
        if one_r and many_r:
            figures["p95_first_paint_repeat_visits_1_s"] = one_r
            figures[f"p95_first_paint_repeat_visits_{sessions}_s"] = many_r
            figures["p95_ratio_repeat_visits"] = round(many_r / one_r, 2)
    per_visit = {n: cpu_per_visit(c) for n, c in configurations.items()}
    figures["cpu_seconds_per_visit_by_role"] = {n: v for n, v in per_visit.items() if v is not None}
    measured = list(configurations.values()) + ([result["warmup"]] if "warmup" in result else [])
    figures["exceptions"] = sum(c["exceptions"] for c in measured)
    figures["exceptions_in_warmup"] = result["warmup"]["exceptions"] if "warmup" in result else None
    figures["paint_failures"] = sum(c["paint_failures"] for c in measured)
    figures["rerun_failures"] = sum(c["rerun_failures"] for c in measured)
    figures["driver_failures"] = sum(c["driver_failures"] for c in measured)
    figures["every_page_rendered_by_every_session"] = bool(configurations) and all(
        c["every_page_rendered_by_every_session"] for c in configurations.values()
    )
    figures["every_job_succeeded"] = bool(configurations) and all(
        c["jobs_all_succeeded"] for c in configurations.values()
    )
    figures["jobs_submitted"] = sum(len(c["jobs"]) for c in configurations.values())
    return figures


def run(home: Path, settings: Settings) -> dict:
    """The whole measurement (see the module's docstring); returns the result (without writing it)."""
    started = time.monotonic()
    deadline = started + settings.time_limit
    home = home.resolve()
    result: dict[str, Any] = {
        "settings": asdict(settings),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "platform": platform.platform(),
            "commit": _commit(),
        },
        "home": str(home),
    }
    pins = pin_roles(settings)  # once: the meter then pins this process to the browsers' CPU
    fixture = prepare_home(home)
    result["home_built_s"] = round(fixture["seconds"], 1)
    configurations: dict[str, dict] = {}
    try:
        with server(home) as url:
            result["url"] = url
            if settings.warmup:  # every page once, untimed in the figures: both configurations meet a warm server
                warm = replace(settings, rounds=1, think=0.0)
                limit = max(10.0, min(settings.phase_limit, deadline - time.monotonic() - settings.paint_timeout - 90))
                records, facts = asyncio.run(run_sessions(url, 1, warm, limit))
                result["warmup"] = {**summarise(records), "seconds": facts.get("seconds"), "records": records}
            for n in ([1] if settings.single else []) + [settings.sessions]:
                if time.monotonic() > deadline - 60:
                    break
                configurations[str(n)] = run_configuration(home, url, fixture, n, settings, deadline, pins)
                print(f"{n} session(s):", json.dumps(_brief(configurations[str(n)])), flush=True)
    finally:
        stop_background_processes(home)  # server() does it too; once more if it never started
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["configurations"] = configurations
    result["figures"] = figures_of(result, settings.sessions)
    result["how_to_read"] = HOW_TO_READ
    result["total_s"] = round(time.monotonic() - started, 1)
    return result


def _commit() -> str | None:
    """The checkout's commit (read-only: local changes on top of it are not told)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _brief(c: dict) -> dict:
    return {
        "first_paint_s": c["first_paint_s"],
        "exceptions": c["exceptions"],
        "failures": len(c["failures"]),
        "warm_start_jobs": c["warm_start_jobs"],
        "jobs": [(j["status"], j["trained_during_load_s"]) for j in c["jobs"]],
        "load_s": c["load_seconds"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = Settings()
    parser.add_argument("--sessions", type=int, default=defaults.sessions)
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--think", type=float, default=defaults.think)
    parser.add_argument("--agent-steps", type=int, default=defaults.agent_steps)
    parser.add_argument("--encoder-steps", type=int, default=defaults.encoder_steps)
    parser.add_argument("--phase-limit", type=float, default=defaults.phase_limit)
    parser.add_argument("--time-limit", type=float, default=defaults.time_limit)
    parser.add_argument("--no-single", action="store_true", help="skip the 1-session configuration")
    parser.add_argument("--no-warmup", action="store_true", help="measure on a cold server")
    parser.add_argument("--home", help="studio home to build (default: a new temporary folder)")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--keep-records", action="store_true", help="keep every visit's record in the JSON")
    parser.add_argument(
        "--pin-browsers",
        action="store_true",
        help="diagnostic: browsers on the last CPU, the app's processes on the others (Settings.pin_browsers)",
    )
    parser.add_argument(
        "--resummarise",
        metavar="JSON",
        help="measure nothing: recompute the summaries and figures of a JSON written with --keep-records (in place)",
    )
    parser.add_argument(
        "--refigure",
        metavar="JSON",
        help="measure nothing: recompute only the headline figures of a JSON from its summaries (in place)",
    )
    args = parser.parse_args()
    if args.refigure:
        path = Path(args.refigure)
        result = json.loads(path.read_text())
        result["figures"] = figures_of(result, result["settings"]["sessions"])
        path.write_text(json.dumps(result, indent=1))
        print(json.dumps(result["figures"], indent=1))
        return 0
    if args.resummarise:
        path = Path(args.resummarise)
        result = json.loads(path.read_text())
        for name, c in [*result["configurations"].items(), ("warmup", result.get("warmup"))]:
            if c is None:
                continue
            if "records" not in c:
                parser.error(f"{path}: configuration {name} has no records (run with --keep-records)")
            c.update(summarise(c["records"]))
        result["figures"] = figures_of(result, result["settings"]["sessions"])
        path.write_text(json.dumps(result, indent=1))
        print(json.dumps(result["figures"], indent=1))
        return 0
    settings = Settings(
        sessions=args.sessions,
        rounds=args.rounds,
        think=args.think,
        single=not args.no_single,
        warmup=not args.no_warmup,
        agent_steps=args.agent_steps,
        encoder_steps=args.encoder_steps,
        phase_limit=args.phase_limit,
        time_limit=args.time_limit,
        pin_browsers=args.pin_browsers,
    )

    def hard_stop(signum, frame) -> None:
        raise TimeoutError(f"bench/load.py: past its hard time limit ({settings.time_limit:.0f} s + 300 s)")

    pin_roles(settings)  # fails now, not after the fixture, on a machine with one CPU
    signal.signal(signal.SIGALRM, hard_stop)  # the last resort: the finally blocks stop everything
    signal.alarm(int(settings.time_limit) + 300)
    home = Path(args.home or tempfile.mkdtemp(prefix="studio-load-"))
    try:
        result = run(home, settings)
    finally:
        signal.alarm(0)
    if not args.keep_records:
        for c in [*result["configurations"].values(), result.get("warmup", {})]:
            c.pop("records", None)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result["figures"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
