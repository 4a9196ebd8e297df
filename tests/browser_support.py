"""Driving the app in a real browser: Debian's chromium through pip playwright (never
``playwright install``). Used by tests/test_app_browser.py and bench/app.py."""

from __future__ import annotations

import os
import re
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


# ---------------------------------------------------------------- many sessions at once (async playwright)
# Used by bench/load.py and tests/test_app_load.py: one chromium, one browser context per session, driven
# from one asyncio loop (the sync helpers above block, so they cannot share a browser between sessions).

APP_PAGES = (
    ("", "MERLION Studio", "Start with the demo"),
    ("data", "Data", "Generate"),
    ("train", "Train", "Training jobs"),
    ("embeddings", "Embeddings", "Observation"),
    ("pseudometric", "Pseudometric", "Spearman (this state)"),
    ("runs", "Runs", "Benchmark tables"),
)
"""(URL path, the page's title (its h1), a text of its main content) of every page, in the sidebar's order."""

_PAINTED = """([path, title, marker]) => {
    const app = document.querySelector('[data-testid="stApp"]');
    if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
    const here = location.pathname.replace(/\\/+$/, '');
    if (here !== path && !(path === '' && here === '/home')) return false;
    if (document.querySelector('[data-stale="true"], [data-testid="stSkeleton"]')) return false;
    const main = document.querySelector('[data-testid="stMain"]');
    if (!main || ![...main.querySelectorAll('h1')].some(h => h.innerText.trim() === title)) return false;
    return !marker || main.innerText.includes(marker);
}"""
"""True once the page at ``path`` has run to its end: its title and marker text shown, Streamlit idle
(READY), no stale element of the previous page or run left and no skeleton (a widget whose component
the browser is still loading or mounting: READY alone comes before those are drawn)."""

_IDLE = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    return !!app && app.getAttribute('data-test-script-state') === 'notRunning'
        && !document.querySelector('[data-stale="true"], [data-testid="stSkeleton"]');
}"""

_ARM = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    window.__merlionRan = false;
    if (window.__merlionObserver) window.__merlionObserver.disconnect();
    if (!app) return;
    window.__merlionObserver = new MutationObserver(() => {
        if (app.getAttribute('data-test-script-state') === 'running') window.__merlionRan = true;
    });
    window.__merlionObserver.observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
}"""


async def wait_painted_async(page, path: str, title: str, marker: str | None, timeout: float = 120.0) -> None:
    """Async: wait until the page at ``path`` ('' for Home) shows ``title`` and ``marker`` and Streamlit
    is idle with nothing stale (the sync ``wait_ready`` for many sessions at once)."""
    await page.wait_for_function(
        _PAINTED, arg=["/" + path if path else "", title, marker or ""], polling=100, timeout=timeout * 1000
    )


async def open_page_async(page, url: str, path: str, title: str, marker: str | None, timeout: float = 120.0) -> float:
    """Async: open ``url/path`` by its URL; seconds until it is painted (``wait_painted_async``)."""
    started = time.perf_counter()
    await page.goto(f"{url}/{path}")
    await wait_painted_async(page, path, title, marker, timeout)
    return time.perf_counter() - started


async def switch_page_async(page, path: str, title: str, marker: str | None, timeout: float = 120.0) -> float:
    """Async: click the page's link in the sidebar (the same session, as a user switches pages); seconds
    until it is painted."""
    hrefs = [path, f"/{path}"] if path else ["", "/", "home", "/home"]
    links = ", ".join(f'[data-testid="stSidebar"] a[data-testid="stPageLink-NavLink"][href="{h}"]' for h in hrefs)
    link = page.locator(links).first
    started = time.perf_counter()
    await link.click(timeout=timeout * 1000)
    await wait_painted_async(page, path, title, marker, timeout)
    return time.perf_counter() - started


async def arm_rerun_async(page) -> None:
    """Async: start watching for the next script run (call before a widget change; see ``rerun_done_async``)."""
    await page.evaluate(_ARM)


async def rerun_done_async(page, start_timeout: float = 10.0, timeout: float = 120.0) -> bool:
    """Async: after ``arm_rerun_async`` and a widget change, wait for the run it triggers to start (at most
    ``start_timeout`` s: a change that reruns nothing starts none) and for Streamlit to be idle again.
    Returns whether a run was seen."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    try:
        await page.wait_for_function("() => window.__merlionRan === true", polling=50, timeout=start_timeout * 1000)
        ran = True
    except PlaywrightTimeout:  # no run started
        ran = False
    await page.wait_for_function(_IDLE, polling=100, timeout=timeout * 1000)
    return ran


async def app_exceptions_async(page) -> list[str]:
    """Async: the text of every exception element Streamlit shows on the page (``st.exception`` or an
    uncaught error in the script)."""
    return await page.evaluate(
        """() => [...document.querySelectorAll('[data-testid="stException"]')].map(e => e.innerText.slice(0, 2000))"""
    )


_EXCEPTION_WATCH = """(() => {
    window.__merlionExceptions = [];
    const seen = new WeakSet();
    const scan = (node) => {
        if (node.nodeType !== 1) return;
        const found = node.matches('[data-testid="stException"]') ? [node]
            : node.querySelectorAll('[data-testid="stException"]');
        for (const e of found) if (!seen.has(e)) { seen.add(e); window.__merlionExceptions.push(e); }
    };
    new MutationObserver(ms => { for (const m of ms) for (const n of m.addedNodes) scan(n); })
        .observe(document, {childList: true, subtree: true});
})()"""


async def watch_exceptions_async(context) -> None:
    """Async: in every page of the browser ``context``, note each exception element Streamlit adds, even
    one a later run removes before anyone looks (read them with ``seen_exceptions_async``)."""
    await context.add_init_script(script=_EXCEPTION_WATCH)


async def seen_exceptions_async(page) -> list[str]:
    """Async: the text of every exception element added to the page since the last call (needs
    ``watch_exceptions_async``), and of those shown now."""
    return await page.evaluate(
        """() => {
        const noted = (window.__merlionExceptions || []).map(e => e.isConnected ? e.innerText : e.textContent);
        window.__merlionExceptions = [];
        const now = [...document.querySelectorAll('[data-testid="stException"]')].map(e => e.innerText);
        return [...new Set([...noted, ...now])].map(t => t.slice(0, 2000)); }"""
    )


def external_resource_error(text: str, url: str, base_url: str) -> bool:
    """A console error that is only a resource of another host that did not load (the machine is
    offline: e.g. Streamlit fetches a Material icon for the tab's favicon from fonts.gstatic.com), not an
    error of the app."""
    return text.startswith("Failed to load resource") and bool(url) and not url.startswith(base_url)


BASE_PATH_PROBE = re.compile(r"/[A-Za-z0-9_-]+/_stcore/(health|host-config)$")


def base_path_probe_error(text: str, url: str, base_url: str) -> bool:
    """A console error that is Streamlit's own client looking for the server's base path: a page opened
    by its URL (``/data``) first asks ``/data/_stcore/health`` and ``/data/_stcore/host-config`` (404),
    then the root's (200). Not an error of the app."""
    return (
        text.startswith("Failed to load resource")
        and "404" in text
        and url.startswith(base_url)
        and bool(BASE_PATH_PROBE.search(url[len(base_url) :]))
    )
