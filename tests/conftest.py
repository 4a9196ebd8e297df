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
    from studio_fixture import quiet_app

    quiet_app(monkeypatch, studio_home["home"])
    return studio_home
