"""The Docker image, built from this repository and run for real with podman (no Docker engine on
the project's machines; the base image is a stand-in for python:3.11-slim built from Debian
packages by .ci/container/make-base.sh). Marked ``container``: not in the default suite; CI runs
``pytest -m container tests/test_container.py`` as its own step (.ci/run). Minutes of CPU: the
image build trains the demo.

Set MERLION_CONTAINER_RESULTS=bench/results/container.json to record the numbers (image size,
build time and cached steps, time from run to healthy, page load times, a job's time): one entry
per run is appended.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from container_support import (
    REPO,
    Podman,
    PodmanUnavailable,
    browser_missing,
    build,
    check_pages_in_browser,
    check_pages_with_apptest,
    exec_json,
    page_files,
    podman,
    render_pages,
    start,
    torch_build_args,
    torch_version,
)

pytestmark = pytest.mark.container

IMAGE = "localhost/merlion-studio:ci"
DEMO_ENVS = ("maze", "multistep-maze")
UPLOAD_CAP_MB = 200
FINAL = ("succeeded", "failed", "cancelled")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def numbers(request: pytest.FixtureRequest) -> Iterator[dict[str, object]]:
    """What the run measured; written to $MERLION_CONTAINER_RESULTS at the end."""
    data: dict[str, object] = {
        "date": datetime.date.today().isoformat(),
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),
        "host": platform.platform(),
    }
    yield data
    data["tests_failed"] = request.session.testsfailed
    path = os.environ.get("MERLION_CONTAINER_RESULTS")
    if path:  # one entry per run, newest last
        target = REPO / path if not os.path.isabs(path) else Path(path)
        runs = json.loads(target.read_text())["runs"] if target.is_file() and target.stat().st_size else []
        target.write_text(json.dumps({"runs": runs + [data]}, indent=2) + "\n")


@pytest.fixture(scope="module")
def tool() -> Podman:
    try:
        return podman()
    except PodmanUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def image(tool, numbers, tmp_path_factory) -> str:
    version = torch_version()
    args, torch_source = torch_build_args(version)
    previous = tool("image", "inspect", "-f", "{{.Id}}", IMAGE, check=False).stdout.strip()
    log = tmp_path_factory.mktemp("container-build") / "build.log"
    result = build(tool, IMAGE, args, log)
    current = tool("image", "inspect", "-f", "{{.Id}}", IMAGE).stdout.strip()
    if previous and previous != current:
        tool("rmi", previous, check=False)  # the last CI image; its layers stay as long as the new one shares them
    size = int(tool("image", "inspect", "-f", "{{.Size}}", IMAGE).stdout.strip())
    numbers.update(
        {
            "image": IMAGE,
            "image_size_bytes": size,
            "image_size_mb": round(size / 1e6, 1),
            "build_seconds": result.seconds,
            "build_steps": result.steps,
            "build_steps_from_cache": result.cached_steps,
            "demo_build_seconds": result.demo_seconds,
            "torch": version,
            "torch_source": torch_source,
            "podman": tool("--version").stdout.strip(),
            "base_image": "stand-in for python:3.11-slim (Debian bookworm, python3.11) from .ci/container/make-base.sh",
        }
    )
    return IMAGE


@pytest.fixture(scope="module")
def container(tool, image, numbers):
    """A running container, its runs folder on a fresh named volume (which starts as a copy of the image's
    demo); the last test replaces it by a new container on the same volume."""
    box = {"name": f"merlion-ci-{os.getpid()}", "volume": f"merlion-ci-{os.getpid()}-runs", "port": free_port()}
    box["url"] = f"http://127.0.0.1:{box['port']}"
    try:
        numbers["run_to_healthy_seconds"] = start(tool, image, box["name"], box["port"], box["volume"])
        yield box
    finally:
        tool("rm", "-f", "-v", "-t", "2", box["name"], check=False)  # -v: its anonymous /app/data volume too
        tool("volume", "rm", "-f", box["volume"], check=False)


def jobs_in(tool: Podman, container: dict) -> list[dict]:
    return cast(list[dict], exec_json(tool, container["name"], "merlion", "jobs", "list", "--json"))


def test_health_endpoint_and_the_images_healthcheck(tool, container):
    assert urllib.request.urlopen(f"{container['url']}/_stcore/health", timeout=5).read() == b"ok"
    check = tool("inspect", "-f", "{{.Config.Healthcheck}}", container["name"]).stdout
    assert "_stcore/health" in check and "urllib" in check and "curl" not in check, check
    # HEALTHCHECK timers need systemd (absent here): run the image's check once
    assert tool("healthcheck", "run", container["name"], check=False).returncode == 0


def test_the_app_runs_as_the_non_root_user(tool, container):
    assert tool.exec(container["name"], "id", "-un").strip() == "merlion"
    uid = int(tool.exec(container["name"], "id", "-u"))
    assert uid != 0
    status = tool.exec(container["name"], "cat", "/proc/1/status")
    real, effective, saved, fs = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert {int(real), int(effective), int(saved), int(fs)} == {uid}
    command = tool.exec(container["name"], "cat", "/proc/1/cmdline").split("\0")
    assert "streamlit" in command[1] and command[2:4] == ["run", "app.py"], command
    environ = dict(
        v.split("=", 1) for v in tool.exec(container["name"], "cat", "/proc/1/environ").split("\0") if "=" in v
    )
    assert environ["STREAMLIT_SERVER_MAX_UPLOAD_SIZE"] == str(UPLOAD_CAP_MB)
    assert environ["MERLION_RUNS_DIR"] == "/app/runs"
    volumes = tool("image", "inspect", "-f", "{{json .Config.Volumes}}", IMAGE).stdout
    assert "/app/runs" in json.loads(volumes)


def test_every_page_renders(tool, container, numbers):
    files = page_files()
    missing = browser_missing()
    if missing is None:
        checks, uncovered = check_pages_in_browser(container["url"])
        container["page_checks"] = checks
        numbers["pages"] = [
            {"url": c.url.removeprefix(container["url"]) or "/", "seconds": c.seconds, "heading": c.heading}
            for c in checks
        ]
        numbers["page_check"] = "chromium (playwright), every navigation entry by its URL"
        assert not [(c.url, c.problems) for c in checks if c.problems]
        assert all(c.heading for c in checks), [c.url for c in checks if not c.heading]
        assert len(checks) >= max(1, len(files)), (len(checks), [f.name for f in files])
        assert len(uncovered) <= 1, f"page files without a URL in the navigation: {uncovered}"
    else:
        results = check_pages_with_apptest(tool, container["name"])
        numbers["pages"] = results
        numbers["page_check"] = f"AppTest inside the container ({missing})"
        assert len(results) == 1 + len(files)
        assert not [r for r in results if r["exceptions"]], results
        assert all(r["headings"] for r in results), results


def test_the_upload_limit_the_app_shows_is_the_cap(container):
    checks = container.get("page_checks")
    if checks is None:
        pytest.skip(f"needs the pages seen in the browser ({browser_missing() or 'the page test did not run'})")
    limits = [text for check in checks for text in check.upload_limits]
    assert limits, "no file uploader on any page"
    assert all(f"{UPLOAD_CAP_MB}MB" in text.replace(" ", "") for text in limits), limits


def test_the_demo_is_in_the_image(tool, container):
    jobs = [j for j in jobs_in(tool, container) if j["status"] == "succeeded"]
    for env in DEMO_ENVS:
        collect = next(j for j in jobs if j["kind"] == "collect" and j["config"]["env"] == env)
        dataset = collect["result"]["dataset"]
        encoder = next(j for j in jobs if j["kind"] == "train-encoder" and j["config"]["dataset"] == dataset)
        assert encoder["config"]["method"] == "merlion"
        agent = next(
            j for j in jobs if j["kind"] == "train-agent" and j["config"]["encoder"] == encoder["result"]["encoder"]
        )
        assert agent["config"]["algo"] == "cql" and agent["config"]["dataset"] == dataset
        assert dataset.startswith("/app/runs/jobs/")
        info = exec_json(tool, container["name"], "merlion", "dataset", "info", dataset, "--json")
        assert info["n_transitions"] == collect["result"]["n_transitions"] >= 10_000
        files = tool.exec(container["name"], "ls", encoder["result"]["encoder"], agent["result"]["agent"]).split()
        assert "weights.pt" in files and "config.json" in files, files
        curve = exec_json(tool, container["name"], "merlion", "jobs", "show", str(agent["id"]), "--json")
        assert curve["step"] == agent["config"]["steps"] and curve["latest_metrics"], curve
    owners = tool.exec(container["name"], "find", "/app/runs", "!", "-user", "merlion", "-print").split()
    assert owners == [], f"files in the runs folder the app's user does not own: {owners[:5]}"
    if (REPO / "studio" / "chains.py").is_file():  # the app's own demo chain: built, not rebuilt at start
        state = tool.exec(
            container["name"],
            "python",
            "-c",
            "from studio import chains; print(chains.status(chains.load(chains.DEMO)))",
        )
        assert state.strip() == "done"


def test_a_job_started_in_the_container_finishes(tool, container, numbers):
    config = json.dumps({"env": "maze", "behaviour": "medium", "n": 2000, "n_envs": 64})
    job = exec_json(
        tool, container["name"], "merlion", "jobs", "submit", "collect", "--config", config, "--seed", "7", "--json"
    )
    started, deadline = time.perf_counter(), time.monotonic() + 600
    while job["status"] not in FINAL and time.monotonic() < deadline:
        time.sleep(2)
        job = exec_json(tool, container["name"], "merlion", "jobs", "show", str(job["id"]), "--json")
    numbers["job_collect_2000_seconds"] = round(time.perf_counter() - started, 1)
    assert job["status"] == "succeeded", job
    assert job["result"]["n_transitions"] == 2000
    assert job["result"]["dataset"].startswith(f"/app/runs/jobs/{job['id']}/")
    container["job"] = job["id"]


def test_a_new_container_on_the_same_volume_keeps_the_jobs_and_takes_another_upload_cap(tool, container, numbers):
    before = {(j["id"], j["status"]) for j in jobs_in(tool, container)}
    assert any(job_id == container.get("job") for job_id, _ in before)
    tool("rm", "-f", "-v", "-t", "2", container["name"])
    container["name"] += "-2"
    numbers["restart_to_healthy_seconds"] = start(
        tool,
        IMAGE,
        container["name"],
        container["port"],
        container["volume"],
        env={"STREAMLIT_SERVER_MAX_UPLOAD_SIZE": "64"},
    )
    assert {(j["id"], j["status"]) for j in jobs_in(tool, container)} == before
    with_uploader = [c.url for c in container.get("page_checks") or [] if c.upload_limits]
    if with_uploader:  # the server takes its cap from the environment (Streamlit's own default is 200 MB too)
        [check] = render_pages(with_uploader[:1])
        assert check.upload_limits and all("64MB" in t.replace(" ", "") for t in check.upload_limits), check
