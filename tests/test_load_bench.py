"""bench/load.py's helpers: the --pin-browsers diagnostic (which CPUs each role gets; every thread of a
process moves, Linux affinity being per thread) and the CPU per visit by role."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from script_support import load_script


def bench_load():
    return load_script("bench/load.py", "bench_load")


def test_pin_roles_puts_browsers_on_the_last_cpu_and_the_app_on_the_rest(monkeypatch):
    load = bench_load()
    assert load.pin_roles(load.Settings()) is None  # the measure itself pins nothing
    monkeypatch.setattr(load.os, "sched_getaffinity", lambda pid: {3, 0, 5})
    pins = load.pin_roles(load.Settings(pin_browsers=True))
    for role in ("app server", "job workers", "supervisor", "warm-start worker", "other of the app"):
        assert pins[role] == {0, 3}, role
    assert pins["browser (chromium, playwright)"] == {5}
    assert pins["bench (this process)"] == {5}


def test_pin_roles_refuses_one_cpu(monkeypatch):
    load = bench_load()
    monkeypatch.setattr(load.os, "sched_getaffinity", lambda pid: {0})
    with pytest.raises(SystemExit, match="needs 2 CPUs"):
        load.pin_roles(load.Settings(pin_browsers=True))


def test_pin_threads_moves_every_thread_of_a_process():
    load = bench_load()
    cpus = sorted(os.sched_getaffinity(0))
    target = {cpus[0]}
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import threading,time\n[threading.Thread(target=time.sleep, args=(60,)).start() "
            "for _ in range(3)]\ntime.sleep(60)",
        ]
    )
    try:
        tasks = Path(f"/proc/{child.pid}/task")
        deadline = time.monotonic() + 20
        while len(list(tasks.iterdir())) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        tids = [int(t.name) for t in tasks.iterdir()]
        assert len(tids) == 4
        if len(cpus) > 1:
            assert all(os.sched_getaffinity(tid) == set(cpus) for tid in tids)
        load.pin_threads(child.pid, target)
        assert [os.sched_getaffinity(tid) for tid in tids] == [target] * 4
        load.pin_threads(999_999_999, target)  # a process that is gone: nothing raised
    finally:
        child.kill()
        child.wait()


def test_cpu_per_visit_divides_each_roles_cpu_by_the_visits():
    load = bench_load()
    configuration = {
        "first_paint_s": {"n": 240, "p50": 3.8},
        "cpu_during_load": {"cpu_seconds_by_role": {"app server": 130.6, "browser (chromium, playwright)": 339.1}},
    }
    assert load.cpu_per_visit(configuration) == {"app server": 0.544, "browser (chromium, playwright)": 1.413}
    assert load.cpu_per_visit({"first_paint_s": {"n": 0}, "cpu_during_load": {"cpu_seconds_by_role": {}}}) is None
    assert load.cpu_per_visit({"first_paint_s": {"n": 5}}) is None
