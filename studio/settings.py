"""Where the app keeps its files, and its limits (environment variables override the folders)."""

from __future__ import annotations

import os
from pathlib import Path

from merlion_core.jobs import store as job_store

REPO_ROOT = Path(__file__).resolve().parents[1]
ASSETS = REPO_ROOT / "assets"
RESULTS = REPO_ROOT / "results"

HOME_ENV = job_store.HOME_ENV
"""Folder holding data/ and runs/ (default: the repository root)."""
DATA_ENV = "MERLION_DATA_DIR"
RUNS_ENV = job_store.RUNS_ENV  # the jobs runner's variable: one rule for the CLI and the app
DEMO_ENV = "MERLION_STUDIO_DEMO"
"""'0' or 'off': do not build the demo on first start (tests)."""

MAX_UPLOAD_MB = 200
"""Largest dataset upload (also .streamlit/config.toml server.maxUploadSize)."""
MAX_ZIP_MEMBERS = 64
"""Most files a Minari zip may hold."""

# The demo: sizes chosen so that it builds in a few minutes on 2 CPU cores.
DEMO_ENV_NAME = "maze"
DEMO_TRANSITIONS = 20_000
DEMO_ENCODER_STEPS = 2_000
DEMO_AGENT_STEPS = 2_000
DEMO_BATCH = 64
DEMO_EVAL_EVERY = 250
DEMO_EVAL_EPISODES = 10


def home() -> Path:
    return Path(os.environ.get(HOME_ENV) or REPO_ROOT).expanduser().resolve()


def data_dir() -> Path:
    """Datasets the user generated or uploaded (uploads go to data/uploads/)."""
    return Path(os.environ.get(DATA_ENV) or home() / "data").expanduser().resolve()


def runs_dir() -> Path:
    """The jobs runner's runs folder (jobs.sqlite, one folder per job) and the app's own state (studio/):
    the runner's rule (merlion_core.jobs.store.runs_dir: $MERLION_RUNS_DIR, else
    $MERLION_STUDIO_HOME/runs), with runs/ in the repository as the app's default."""
    return job_store.runs_dir(default=REPO_ROOT / "runs")


def studio_dir() -> Path:
    """The app's own state inside the runs folder: chains of jobs, the warm-start worker's lock."""
    return runs_dir() / "studio"


def demo_enabled() -> bool:
    return os.environ.get(DEMO_ENV, "1").strip().lower() not in ("0", "off", "false", "no")
