"""Shared fixtures of the app tests (the core's tests need none)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def studio_home(tmp_path_factory):
    """A real studio home (dataset, two encoders, an agent, succeeded jobs), built once."""
    from studio_fixture import build_home

    return build_home(tmp_path_factory.mktemp("studio-home"))


@pytest.fixture()
def studio_env(studio_home, monkeypatch):
    """Point the app at the fixture home; no demo, no supervisor, warm-start worker or chain
    advancer thread started (a thread would outlive the test and its home)."""
    import merlion_core.jobs.backend as backend
    from studio import chains, warmstart

    monkeypatch.setenv("MERLION_STUDIO_HOME", str(studio_home["home"]))
    monkeypatch.delenv("MERLION_RUNS_DIR", raising=False)
    monkeypatch.delenv("MERLION_DATA_DIR", raising=False)
    monkeypatch.setenv("MERLION_STUDIO_DEMO", "0")
    monkeypatch.setattr(backend, "ensure_supervisor", lambda *a, **k: 0)
    monkeypatch.setattr(warmstart, "ensure_worker", lambda: 0)
    monkeypatch.setattr(chains, "start_advancer", lambda: None)
    return studio_home
