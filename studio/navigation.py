"""Page switches that survive live fragments (issue 26: two sidebar clicks lost in the load test).

Streamlit folds every rerun request that arrives while a script runs into one pending request, and
the newer request's page wins (``ScriptRequests._request_rerun_locked`` in Streamlit 1.67). A click
on another page in the sidebar is such a request; if, before the running script reaches a point
where it takes it, the page being left asks for a rerun of itself (the browser's timer of a live
fragment, which sets ``is_auto_rerun``, or the fragment's own ``st.rerun(scope="app")``), the
pending request is rewritten to the page being left and the click is lost: the load test saw the
Runs page stay on Runs after a click on Home, idle, for 120 s. The busier the CPU, the longer a
request waits and the likelier the collision.

Two guards, both keeping the switch the user asked for:

* :func:`install` wraps the folding so that an automatic rerun of a page does not replace a pending
  full-app rerun of *another* page (that rerun reruns the app anyway);
* :func:`rerun_app_unless_leaving` is the fragments' ``st.rerun(scope="app")``, skipped while such a
  switch is pending.

Both read Streamlit's private request state, pinned with Streamlit's version (requirements.txt);
tests/test_navigation.py checks the folding itself, so an upgrade that changes it fails there.
"""

from __future__ import annotations

from typing import Any

import streamlit as st
from streamlit.runtime.scriptrunner_utils import script_requests as requests_module

_MARK = "_merlion_keeps_navigation"


def navigation_pending(requests: Any, page_script_hash: str) -> bool:
    """Whether ``requests`` (a ScriptRequests, its lock held) holds a full-app rerun of a page other
    than ``page_script_hash``: a page switch that has not started yet."""
    pending = requests._rerun_data
    return (
        requests._state == requests_module.ScriptRequestType.RERUN
        and requests_module._is_full_app_rerun(pending)
        and bool(pending.page_script_hash)
        and pending.page_script_hash != page_script_hash
    )


def install() -> None:
    """Make automatic reruns yield to a pending page switch (idempotent; once per process is enough)."""
    cls = requests_module.ScriptRequests
    original = cls._request_rerun_locked
    if getattr(original, _MARK, False):
        return

    def request_rerun_locked(self: Any, new_data: Any) -> bool:
        if new_data.is_auto_rerun and navigation_pending(self, new_data.page_script_hash):
            return True  # the pending switch reruns the app on the page the user chose
        return original(self, new_data)

    setattr(request_rerun_locked, _MARK, True)
    request_rerun_locked.__wrapped__ = original  # type: ignore[attr-defined]
    cls._request_rerun_locked = request_rerun_locked  # type: ignore[method-assign]


def rerun_app_unless_leaving() -> None:
    """``st.rerun(scope="app")``, unless the user has asked for another page meanwhile (then that
    switch reruns the app, and this rerun would send the user back)."""
    from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is not None and ctx.script_requests is not None:
        with ctx.script_requests._lock:
            if navigation_pending(ctx.script_requests, ctx.page_script_hash):
                return
    st.rerun(scope="app")
