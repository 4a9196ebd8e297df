"""A click on another page survives the live fragments of the page being left (issue 26: the load
test lost 2 of 240 page switches, sidebar clicks on Home made from the Runs page)."""

from __future__ import annotations

import pytest
from streamlit.runtime.scriptrunner_utils import script_requests as sr

from studio import navigation


def click(page: str) -> sr.RerunData:
    """What the browser sends for a click on a page in the sidebar: a full-app rerun of that page."""
    return sr.RerunData(page_script_hash=page)


def fragment_timer(page: str) -> sr.RerunData:
    """What a live fragment's timer sends: an automatic rerun of its fragment, on its own page."""
    return sr.RerunData(page_script_hash=page, fragment_id="live", is_auto_rerun=True)


def streamlit_own_folding():
    """Streamlit's function, unwrapped (the app, run in-process by other tests, installs the guard)."""
    fn = sr.ScriptRequests._request_rerun_locked
    return getattr(fn, "__wrapped__", fn)


@pytest.fixture
def unguarded(monkeypatch):
    monkeypatch.setattr(sr.ScriptRequests, "_request_rerun_locked", streamlit_own_folding())
    return sr.ScriptRequests


@pytest.fixture
def guarded(monkeypatch):
    monkeypatch.setattr(sr.ScriptRequests, "_request_rerun_locked", streamlit_own_folding())
    navigation.install()
    navigation.install()  # idempotent: one wrapper, not two
    assert sr.ScriptRequests._request_rerun_locked.__wrapped__ is streamlit_own_folding()
    return sr.ScriptRequests


def test_unguarded_streamlit_loses_the_click_to_the_fragment_timer(unguarded):
    """Why the guard exists: Streamlit's own folding keeps the newer request's page."""
    requests = unguarded()
    requests.request_rerun(click("home"))
    requests.request_rerun(fragment_timer("runs"))
    assert requests._rerun_data.page_script_hash == "runs"


def test_a_pending_click_survives_the_fragment_timer(guarded):
    requests = guarded()
    requests.request_rerun(click("home"))
    requests.request_rerun(fragment_timer("runs"))
    assert requests._rerun_data.page_script_hash == "home"
    assert sr._is_full_app_rerun(requests._rerun_data)


def test_the_guard_changes_nothing_else(guarded):
    requests = guarded()
    requests.request_rerun(fragment_timer("runs"))  # nothing pending: the timer's rerun is queued
    assert requests._rerun_data.page_script_hash == "runs" and not sr._is_full_app_rerun(requests._rerun_data)
    requests = guarded()
    requests.request_rerun(click("home"))
    requests.request_rerun(click("data"))  # the user's later click still wins
    assert requests._rerun_data.page_script_hash == "data"
    requests = guarded()
    requests.request_rerun(click("runs"))
    requests.request_rerun(fragment_timer("runs"))  # a rerun of the same page folds as before
    assert requests._rerun_data.page_script_hash == "runs"


def test_navigation_pending_reads_the_pending_switch():
    requests = sr.ScriptRequests()
    assert not navigation.navigation_pending(requests, "runs")  # nothing pending
    requests.request_rerun(click("home"))
    assert navigation.navigation_pending(requests, "runs") and not navigation.navigation_pending(requests, "home")
    requests = sr.ScriptRequests()
    requests.request_rerun(fragment_timer("home"))  # a fragment rerun is not a page switch
    assert not navigation.navigation_pending(requests, "runs")
