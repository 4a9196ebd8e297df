"""Podman side of the container test (tests/test_container.py): build the repository's Dockerfile,
run it, and check every page of the app in a real browser (Debian chromium through pip
playwright, never ``playwright install``) or, without one, with Streamlit's AppTest inside the
container.

Podman settings and the stand-in base image come from .ci/container/ (podman-env.sh,
make-base.sh): no Docker engine and no container registry on the project's machines.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from browser_support import CHROMIUM, CHROMIUM_ARGS, READY

if TYPE_CHECKING:
    from playwright.sync_api import Page

REPO = Path(__file__).resolve().parents[1]
CI_DIR = REPO / ".ci" / "container"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
NAV_LINKS = (
    'a[data-testid="stSidebarNavLink"], a[data-testid="stTopNavLink"], '
    'a[data-testid="stTopNavDropdownLink"], a[data-testid="stPageLink-NavLink"]'
)
"""Links to the app's pages: Streamlit's navigation (sidebar or top) and st.page_link (an app that
hides the sidebar navigation draws its own with page links)."""


class PodmanUnavailable(RuntimeError):
    """Podman cannot run on this machine at all (the only reason the container test skips)."""


@dataclass
class Podman:
    """``podman --root ... --runroot ...`` with the project's containers.conf (podman-env.sh)."""

    command: list[str]
    env: dict[str, str]

    def __call__(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.command, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"podman {' '.join(args[:3])}: exit {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()[-2000:]}"
            )
        return result

    def exec(self, container: str, *args: str, timeout: float = 120) -> str:
        return self("exec", container, *args, timeout=timeout).stdout


def podman() -> Podman:
    """Podman with the project's settings, the stand-in base image built (make-base.sh installs
    podman, buildah, runc and debootstrap with apt-get when they are missing and it runs as root)."""
    if shutil.which("podman") is None and (os.geteuid() != 0 or shutil.which("apt-get") is None):
        raise PodmanUnavailable("podman is not installed and cannot be installed here (needs root and apt-get)")
    base = subprocess.run(["bash", str(CI_DIR / "make-base.sh")], capture_output=True, text=True, timeout=1200)
    if shutil.which("podman") is None:
        raise PodmanUnavailable(f"podman could not be installed: {base.stderr.strip()[-500:]}")
    if base.returncode != 0:
        raise RuntimeError(f"make-base.sh failed (the stand-in for python:3.11-slim): {base.stderr.strip()[-2000:]}")
    settings = subprocess.run(
        [
            "bash",
            "-c",
            f'. {shlex.quote(str(CI_DIR / "podman-env.sh"))} >/dev/null; printf "%s\\n%s" "$CONTAINERS_CONF" "$PODMAN"',
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    tool = Podman(settings[1].split(), dict(os.environ, CONTAINERS_CONF=settings[0]))
    info = tool("info", check=False, timeout=120)
    if info.returncode != 0:
        raise PodmanUnavailable(f"podman cannot run here: {info.stderr.strip().splitlines()[-1:]}")
    return tool


# ---------------------------------------------------------------------------- where CPU torch comes from
def torch_version() -> str:
    """The CPU build of the torch version requirements.txt pins, e.g. '2.13.0+cpu'."""
    pins = re.findall(r"^torch==([\w.]+)\s*$", (REPO / "requirements.txt").read_text(), flags=re.M)
    if len(pins) != 1:
        raise RuntimeError("requirements.txt: expected one 'torch==VERSION' line")
    return f"{pins[0]}+cpu"


def reachable(url: str, timeout: float = 10.0) -> bool:
    try:
        urllib.request.urlopen(url, timeout=timeout).close()
        return True
    except OSError:
        return False


def pip_find_links() -> list[Path]:
    """Local folders in pip's configuration (``pip config list``, PIP_FIND_LINKS)."""
    listed = subprocess.run(["python", "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    values = re.findall(r"find-links='([^']*)'", listed) + [os.environ.get("PIP_FIND_LINKS", "")]
    folders = {Path(v.removeprefix("file://")) for value in values for v in value.split()}
    return sorted(f for f in folders if f.is_dir())


def torch_build_args(version: str) -> tuple[list[str], str]:
    """Build options that give the image CPU torch, and where it comes from: the CPU index when it
    is reachable, else the local wheel pip's own configuration uses here (a build context)."""
    if reachable(f"{CPU_INDEX}/torch/"):
        return ["--build-arg", f"TORCH_VERSION={version}"], CPU_INDEX
    for folder in pip_find_links():
        wheels = sorted(folder.glob(f"torch-{version}-cp311-*.whl"))
        if wheels:
            return (
                [
                    "--build-arg",
                    f"TORCH_VERSION={version}",
                    "--build-arg",
                    "TORCH_INDEX_URL=",
                    "--build-context",
                    f"wheels={folder}",
                ],
                str(wheels[0]),
            )
    raise RuntimeError(
        f"no CPU torch {version} for the image: {CPU_INDEX} is unreachable and pip's find-links "
        f"({[str(f) for f in pip_find_links()]}) hold no torch-{version}-cp311 wheel"
    )


# ---------------------------------------------------------------------------- build and run
@dataclass
class Build:
    seconds: float
    steps: int
    cached_steps: int
    demo_seconds: float | None
    """build_demo.py's own time, None when the demo layer came from the cache."""


def build(tool: Podman, tag: str, extra: list[str], log_path: Path, timeout: float = 2700) -> Build:
    """``podman build`` of the repository (docker format keeps HEALTHCHECK; no registry: --pull=never)."""
    started = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.run(
            [
                *tool.command,
                "build",
                "--format",
                "docker",
                "--pull=never",
                "--network",
                "host",
                "-t",
                tag,
                *extra,
                str(REPO),
            ],
            env=tool.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
    seconds = time.perf_counter() - started
    text = log_path.read_text()
    if process.returncode != 0:
        raise RuntimeError(f"podman build failed (exit {process.returncode}); log {log_path}:\n{text[-4000:]}")
    demo = re.search(r"build_demo: \d+ jobs succeeded in (\d+) s", text)
    return Build(
        round(seconds, 1),
        len(re.findall(r"^\[\d+/\d+\] STEP ", text, flags=re.M)),
        text.count("--> Using cache"),
        float(demo.group(1)) if demo else None,
    )


def health(url: str) -> bool:
    try:
        return urllib.request.urlopen(f"{url}/_stcore/health", timeout=3).read() == b"ok"
    except OSError:
        return False


def start(
    tool: Podman, image: str, name: str, port: int, volume: str, env: dict[str, str] | None = None, timeout: float = 300
) -> float:
    """``podman run`` with the runs folder on a named volume; seconds from run to a healthy answer."""
    started = time.perf_counter()
    options = [f"--env={key}={value}" for key, value in (env or {}).items()]
    tool("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8501", "-v", f"{volume}:/app/runs", *options, image)
    url = f"http://127.0.0.1:{port}"
    while not health(url):
        state = tool("inspect", "-f", "{{.State.Running}}", name).stdout.strip()
        if state != "true" or time.perf_counter() - started > timeout:
            logs = tool("logs", name, check=False).stdout[-3000:]
            raise RuntimeError(f"container {name} not healthy (running: {state}); logs:\n{logs}")
        time.sleep(0.25)
    return round(time.perf_counter() - started, 2)


def exec_json(tool: Podman, container: str, *args: str) -> object:
    return json.loads(tool.exec(container, *args))


# ---------------------------------------------------------------------------- pages
def page_files(repo: Path = REPO) -> list[Path]:
    """The app's page scripts: pages/*.py (none for a single-page app)."""
    folder = repo / "pages"
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("_")) if folder.is_dir() else []


def page_slug(path: Path) -> str:
    """The URL path Streamlit infers from a page file (pages/2_data.py -> 'data')."""
    return re.sub(r"^\d+[_ -]*", "", path.stem)


def uncovered_pages(urls: list[str], files: list[Path]) -> list[str]:
    """Page files without a URL of their own; one may be the default page, served at '/'."""
    paths = {urlparse(u).path.strip("/") for u in urls}
    return [str(f.relative_to(f.parents[1])) for f in files if page_slug(f) not in paths]


def browser_missing() -> str | None:
    """Why the browser check cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    return None if Path(CHROMIUM).exists() else f"no chromium at {CHROMIUM}"


@dataclass
class PageCheck:
    url: str
    seconds: float
    heading: str
    problems: list[str] = field(default_factory=list)
    upload_limits: list[str] = field(default_factory=list)
    """The file uploaders' 'Limit ... per file' lines (hidden tabs included)."""


SNAPSHOT = """() => { const app = document.querySelector('[data-testid="stApp"]');
    const main = document.querySelector('[data-testid="stMain"]');
    return [app ? app.dataset.testScriptState : '', document.querySelectorAll('[data-testid]').length,
            main ? main.innerText.length : 0].join('|'); }"""


def settle(page, timeout_s: float, quiet_s: float = 1.5) -> float:
    """Wait until the script is idle and the page has not changed for ``quiet_s`` (the script
    state alone can read 'notRunning' before the first run has drawn everything); returns the
    time of the last change (perf_counter)."""
    deadline = time.perf_counter() + timeout_s
    last, since = None, time.perf_counter()
    while True:
        snapshot = page.evaluate(SNAPSHOT)
        now = time.perf_counter()
        if snapshot != last:
            last, since = snapshot, now
        elif snapshot.startswith("notRunning|") and not snapshot.endswith("|0") and now - since >= quiet_s:
            return since
        if now > deadline:
            raise TimeoutError(f"{page.url}: not settled after {timeout_s:.0f} s (last state {snapshot})")
        page.wait_for_timeout(250)


def _render(page, url: str, timeout_s: float) -> PageCheck:
    started = time.perf_counter()
    page.goto(url)
    page.wait_for_selector(READY, timeout=timeout_s * 1000)
    seconds = settle(page, timeout_s) - started
    uploaders = '[data-testid="stFileUploaderDropzoneInstructions"]'
    limits = page.locator(uploaders).all_text_contents()
    tabs = page.locator('[data-testid="stTabs"] [role="tab"]')
    for index in range(tabs.count()):  # tab panels are drawn when they are opened
        tabs.nth(index).click()
        page.wait_for_timeout(300)
        limits += page.locator(uploaders).all_text_contents()
    problems = []
    if page.locator('[data-testid="stException"]').count():
        problems.append("exception: " + page.locator('[data-testid="stException"]').first.inner_text()[:500])
    if page.get_by_text("Page not found").count():
        problems.append("Streamlit says: Page not found")
    if urlparse(page.url).path.strip("/") != urlparse(url).path.strip("/"):
        problems.append(f"ended at {page.url}")
    headings = page.locator('[data-testid="stMain"] h1, [data-testid="stMain"] h2').all_inner_texts()
    return PageCheck(url, round(seconds, 2), (headings or [""])[0].strip(), problems, sorted(set(limits)))


@contextmanager
def chromium_page() -> Iterator[Page]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def render_pages(urls: list[str], timeout_s: float = 240) -> list[PageCheck]:
    with chromium_page() as page:
        return [_render(page, url, timeout_s) for url in urls]


def check_pages_in_browser(
    base_url: str, repo: Path = REPO, timeout_s: float = 240
) -> tuple[list[PageCheck], list[str]]:
    """Open the app, collect every page from its navigation, load each by its URL. Returns the checks
    and the page files that have no URL in the navigation."""
    with chromium_page() as page:
        first = _render(page, f"{base_url}/", timeout_s)
        more = page.locator('[data-testid="stSidebarNavViewButton"]')
        if more.count() and "more" in more.first.inner_text().lower():
            more.first.click()
        hrefs = page.eval_on_selector_all(NAV_LINKS, "links => links.map(a => a.href)")
        urls = list(dict.fromkeys(h.rstrip("/") for h in hrefs if h.startswith(base_url) and "#" not in h))
        checks = [first] + [_render(page, url, timeout_s) for url in urls if url != base_url]
    return checks, uncovered_pages([c.url for c in checks], page_files(repo))


APPTEST = """
import json, sys
from streamlit.testing.v1 import AppTest
out = []
for path in sys.argv[1:]:
    at = AppTest.from_file(path, default_timeout=240).run()
    out.append({"path": path, "exceptions": [str(e.value)[:500] for e in at.exception],
                "headings": [t.value for t in at.title] + [h.value for h in at.header]})
print(json.dumps(out))
"""


def check_pages_with_apptest(tool: Podman, container: str, repo: Path = REPO) -> list[dict]:
    """Without a browser: run app.py and every page script with Streamlit's AppTest inside the
    container (the same image, files and runs folder as the server)."""
    scripts = ["/app/app.py"] + [f"/app/pages/{f.name}" for f in page_files(repo)]
    return exec_json(tool, container, "python", "-c", APPTEST, *scripts)  # type: ignore[return-value]
