"""The Docker files and the container test's page discovery, checked without building anything
(the build and run: tests/test_container.py, pytest -m container)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from container_support import REPO, page_files, page_slug, torch_version, uncovered_pages
from script_support import load_script

from merlion_core.jobs.spec import JobSpec


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    rows = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(row.split(None, 1)[0].upper(), row.split(None, 1)[1] if " " in row else "") for row in rows]


def arg_default(name: str) -> str:
    return next(args.split("=", 1)[1] for op, args in instructions() if op == "ARG" and args.startswith(name + "="))


def test_the_image_gets_the_cpu_build_of_the_pinned_torch():
    assert torch_version() == re.search(r"^torch==(\S+)$", (REPO / "requirements.txt").read_text(), re.M)[1] + "+cpu"
    assert arg_default("TORCH_VERSION") == torch_version()
    assert arg_default("TORCH_INDEX_URL") == "https://download.pytorch.org/whl/cpu"
    assert arg_default("BASE_IMAGE") == "python:3.11-slim"
    assert ("FROM", "${BASE_IMAGE}") in instructions()


def test_the_requirements_layer_comes_before_the_source():
    ops = instructions()
    copy_requirements = ops.index(("COPY", "requirements.txt /tmp/requirements.txt"))
    copy_source = ops.index(("COPY", ". /app"))
    demo = next(i for i, (op, args) in enumerate(ops) if op == "RUN" and "build_demo.py" in args)
    assert copy_requirements < copy_source < demo


def test_the_app_runs_unprivileged_on_all_interfaces_with_a_capped_upload_and_a_healthcheck():
    ops = instructions()
    users = [args for op, args in ops if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    env = " ".join(args for op, args in ops if op == "ENV")
    assert "STREAMLIT_SERVER_ADDRESS=0.0.0.0" in env and "STREAMLIT_SERVER_PORT=8501" in env
    assert re.search(r"STREAMLIT_SERVER_MAX_UPLOAD_SIZE=\d+", env)
    [health] = [args for op, args in ops if op == "HEALTHCHECK"]
    assert "_stcore/health" in health and "urllib" in health and "curl" not in health
    [cmd] = [args for op, args in ops if op == "CMD"]
    assert cmd == '["streamlit", "run", "app.py"]'
    [volume] = [args for op, args in ops if op == "VOLUME"]
    assert "/app/runs" in volume
    # the demo is built as the app's user, before VOLUME (later changes to a volume path are discarded)
    demo = next(i for i, (op, args) in enumerate(ops) if op == "RUN" and "build_demo.py" in args)
    assert max(i for i, (op, _) in enumerate(ops) if op == "USER") < demo < ops.index(("VOLUME", volume))


def test_dockerignore_keeps_local_state_out_of_the_context():
    patterns = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", "runs", "data", "results/*/work", ".venv", "**/__pycache__", "tests"} <= patterns
    assert not {"docker", "app.py", "pages", "merlion_core", "README.md"} & patterns


def test_the_container_test_is_not_in_the_default_suite():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert "not container" in re.search(r"^addopts = (.*)$", pyproject, re.M)[1]
    steps = (REPO / ".ci" / "run").read_text()
    assert "pytest -m container" in steps


def test_page_urls_streamlit_infers_from_page_files(tmp_path):
    assert page_slug(Path("pages/data.py")) == "data"
    assert page_slug(Path("pages/2_train.py")) == "train"
    assert page_files(tmp_path) == []  # a single-page app
    (tmp_path / "pages").mkdir()
    for name in ("home.py", "2_data.py", "_helpers.py", "notes.txt"):
        (tmp_path / "pages" / name).write_text("")
    files = page_files(tmp_path)
    assert [f.name for f in files] == ["2_data.py", "home.py"]
    base = "http://127.0.0.1:8501"
    # st.navigation with home as the default page: home is served at '/', data at '/data'
    assert uncovered_pages([f"{base}/", f"{base}/data"], files) == ["pages/home.py"]
    assert uncovered_pages([f"{base}/"], files) == ["pages/2_data.py", "pages/home.py"]
    assert uncovered_pages([f"{base}/", f"{base}/data", f"{base}/home"], files) == []


def load_build_demo():
    return load_script("docker/build_demo.py", "build_demo")


class FakeRunner:
    """Stands in for the jobs store and backend: submitted specs, and statuses the test sets."""

    def __init__(self) -> None:
        self.specs: dict[int, tuple[JobSpec, str | None]] = {}
        self.records: dict[int, SimpleNamespace] = {}

    def submit(self, spec, sweep=None):
        job_id = len(self.specs) + 1
        self.specs[job_id] = (spec, sweep)
        self.records[job_id] = SimpleNamespace(status="queued", result=None)
        return job_id

    def get(self, job_id):
        return self.records[job_id]

    def succeed(self, job_id, **result):
        self.records[job_id] = SimpleNamespace(status="succeeded", result=result)


def test_build_demo_submits_each_step_once_its_inputs_succeeded():
    build_demo = load_build_demo()
    steps = build_demo.demo_steps(None, "multistep-maze")
    assert [s["kind"] for s in steps] == ["collect", "train-encoder", "train-agent"]
    runner = FakeRunner()
    build_demo.advance(runner, runner, steps)
    assert list(runner.specs) == [1]
    collect, tag = runner.specs[1]
    assert collect.kind == "collect" and collect.config["env"] == "multistep-maze" and tag == build_demo.TAG
    build_demo.advance(runner, runner, steps)  # nothing new while the collection runs
    assert list(runner.specs) == [1]
    runner.succeed(1, dataset="/runs/jobs/1/artifacts/dataset")
    build_demo.advance(runner, runner, steps)
    assert list(runner.specs) == [1, 2]
    encoder = runner.specs[2][0]
    assert encoder.kind == "train-encoder" and encoder.config["dataset"] == "/runs/jobs/1/artifacts/dataset"
    runner.succeed(2, encoder="/runs/jobs/2/artifacts/encoder")
    build_demo.advance(runner, runner, steps)
    agent = runner.specs[3][0]
    assert agent.kind == "train-agent" and agent.config["algo"] == "cql"
    assert (agent.config["dataset"], agent.config["encoder"]) == (
        "/runs/jobs/1/artifacts/dataset",
        "/runs/jobs/2/artifacts/encoder",
    )
    assert build_demo.demo_steps(None, "maze")[0]["config"]["env"] == "maze"  # steps are copies
