"""Driving the app in a real browser: Debian's chromium through pip playwright (never
``playwright install``). Used by tests/test_app_browser.py and bench/app.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("MERLION_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
READY = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(home: Path, *, demo: bool = False, extra_env: dict | None = None) -> Iterator[str]:
    """``streamlit run app.py`` on a free port with its files under ``home``; yields the base URL."""
    port = free_port()
    env = dict(
        os.environ,
        MERLION_STUDIO_HOME=str(home),
        MERLION_STUDIO_DEMO="1" if demo else "0",
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        **(extra_env or {}),
    )
    env.pop("MERLION_RUNS_DIR", None)
    env.pop("MERLION_DATA_DIR", None)
    log = open(home / f"streamlit-{port}.log", "wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(REPO / "app.py"),
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--server.fileWatcherType",
            "none",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=str(REPO),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not start: {(home / f'streamlit-{port}.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        stop_background_processes(home)


def stop_background_processes(home: Path) -> list[int]:
    """Stop what the app started for ``home`` and left running by design (the jobs supervisor,
    its workers, the warm-start worker: detached so that jobs outlive the server): every process
    whose environment has MERLION_STUDIO_HOME=home. Returns their pids."""
    marker = f"MERLION_STUDIO_HOME={home}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if sig == signal.SIGTERM:
            time.sleep(1.0)
    return pids


@contextmanager
def browser() -> Iterator[object]:
    """A headless chromium page (1400 x 1000)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM}: no chromium (apt-get install chromium); the browser tests need it")
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = instance.new_page(viewport={"width": 1400, "height": 1000})
            yield page
        finally:
            instance.close()


def wait_ready(page, text: str | None = None, timeout: float = 60.0) -> None:
    """The script finished its run, and ``text`` (if given) is on the page."""
    page.wait_for_selector(READY, timeout=timeout * 1000)
    if text is not None:
        page.get_by_text(text).first.wait_for(timeout=timeout * 1000)


def open_page(page, url: str, text: str, timeout: float = 60.0) -> float:
    """Open ``url``; seconds until the app has run and shows ``text`` (time to first paint)."""
    started = time.perf_counter()
    page.goto(url)
    wait_ready(page, text, timeout)
    return time.perf_counter() - started


def scatter_data(page, index: int = 0) -> list:
    """The x values of every trace of the index-th scatter chart on the page (read from plotly's graph div)."""
    return page.evaluate(
        """(i) => { const plots = [...document.querySelectorAll('.js-plotly-plot')]
        .filter(p => p.data && p.data.some(t => t.type === 'scattergl'));
        const gd = plots[i]; return gd ? (gd._fullData || gd.data).filter(t => t.type === 'scattergl')
            .map(t => Array.from(t.x || [])) : null; }""",
        index,
    )
