"""The app under load: bench/load.py's run with fewer actions. 10 browser sessions at once (one
headless chromium) switch between the pages and change a widget on each while 2 training jobs run
under the supervisor: no exception in the app or the browsers' consoles, no lost job (both succeed
and leave their artifact), every page rendered in every session. Timing is not asserted here: the
speed targets live in bench/load.py (bench/results/load/load.json). About 2.5 minutes on 2 cores."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

from script_support import load_script  # noqa: E402

SESSIONS = 10


def bench_load():
    """bench/load.py as a module (bench/ is no package)."""
    return load_script("bench/load.py", "bench_load")


def test_ten_sessions_while_two_jobs_train(tmp_path):
    load = bench_load()
    settings = load.Settings(
        sessions=SESSIONS,
        rounds=1,  # every page once per session, one widget change on each
        think=0.5,
        stagger=0.3,
        single=False,  # no timing asserted: no single-session figure needed
        warmup=True,  # every page once first (1 session), as the benchmark does
        keep_training=False,  # the 2 jobs only (they finish during the load)
        agent_steps=300,
        encoder_steps=600,
        paint_timeout=120.0,
        phase_limit=300.0,  # a bound, not a target: a busy machine may need it
        job_timeout=120.0,
        time_limit=540.0,  # the hard stop of the whole run
    )
    result = load.run(tmp_path / "home", settings)
    run = result["configurations"][str(SESSIONS)]
    brief = json.dumps({k: v for k, v in run.items() if k != "records"}, indent=1)[:6000]
    warm = result["warmup"]
    assert warm["exceptions"] == 0 and not warm["failures"], json.dumps(
        {k: v for k, v in warm.items() if k != "records"}
    )
    assert not run["hit_hard_limit"], brief
    assert run["app_exceptions"] == 0, f"the app showed exceptions: {run['app_exception_texts']}"
    assert run["console_errors"] == 0, f"errors in the browsers' consoles: {run['console_error_samples']}"
    assert run["paint_failures"] == 0 and run["rerun_failures"] == 0, f"pages not rendered: {run['failures']}"
    assert run["every_page_rendered_by_every_session"], run["pages_rendered_per_session"]
    assert run["widget_changes"] >= SESSIONS, brief  # the sessions did change widgets
    assert [job["status"] for job in run["jobs"]] == ["succeeded", "succeeded"], run["jobs"]
    assert all(job["artifact_exists"] for job in run["jobs"]), run["jobs"]
