"""``merlion jobs ...``, ``merlion supervisor`` and ``merlion sweep``: background jobs from the shell."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from typing import Any

from merlion_core.cli.common import CLIError, add_config_arguments, config_from_args, print_json


def add_commands(sub: argparse._SubParsersAction) -> None:
    from merlion_core.jobs.spec import KINDS
    from merlion_core.jobs.supervisor import SupervisorConfig

    jobs = sub.add_parser("jobs", help="background jobs: submit, list, show, cancel, logs, resume")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True)

    p = jobs_sub.add_parser("submit", help="queue a job (starts a supervisor when none runs)")
    p.add_argument("kind", choices=list(KINDS), help="what to run")
    p.add_argument("--config", required=True, help="the kind's config: a JSON object, or a .json/.yaml file")
    p.add_argument("--seed", type=int, default=0, help="seed of the run (default: 0)")
    p.add_argument("--no-supervisor", action="store_true", help="only queue it (a supervisor runs elsewhere)")
    _common(p, json_flag=True)
    p.set_defaults(func=cmd_submit)

    p = jobs_sub.add_parser("list", help="all jobs, newest last")
    p.add_argument("--status", help="only jobs with this status")
    p.add_argument("--sweep", help="only the jobs of this sweep")
    _common(p, json_flag=True)
    p.set_defaults(func=cmd_list)

    p = jobs_sub.add_parser("show", help="one job: state, paths, latest metrics")
    p.add_argument("id", type=int)
    _common(p, json_flag=True)
    p.set_defaults(func=cmd_show)

    p = jobs_sub.add_parser("cancel", help="cancel a job (queued: at once; running: stop, then kill)")
    p.add_argument("id", type=int)
    _common(p)
    p.set_defaults(func=cmd_cancel)

    p = jobs_sub.add_parser("logs", help="print a job's log")
    p.add_argument("id", type=int)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    _common(p)
    p.set_defaults(func=cmd_logs)

    p = jobs_sub.add_parser(
        "resume", help="queue an interrupted, killed or cancelled job again, from its latest checkpoint"
    )
    p.add_argument("id", type=int)
    p.add_argument("--no-supervisor", action="store_true", help="only queue it (a supervisor runs elsewhere)")
    _common(p)
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("supervisor", help="run the job supervisor in the foreground")
    add_config_arguments(p, SupervisorConfig)
    _common(p)
    p.set_defaults(func=cmd_supervisor)

    p = sub.add_parser("sweep", help="run a grid of jobs from a YAML spec (docs/jobs.md)")
    p.add_argument("--spec", required=True, help="sweep spec (.yaml or .json)")
    p.add_argument("--backend", default="local", choices=["local", "ray"], help="where the runs go (default: local)")
    p.add_argument(
        "--address",
        help="Ray cluster's dashboard address for the Jobs API, e.g. http://HEAD:8265 "
        "(default with --backend ray: start a local Ray)",
    )
    p.add_argument("--num-cpus", type=int, help="CPUs of a local Ray (default: all cores)")
    p.add_argument("--detach", action="store_true", help="submit and return (local backend, Ray Jobs API)")
    _common(p, json_flag=True)
    p.set_defaults(func=cmd_sweep)


def _common(p: argparse.ArgumentParser, json_flag: bool = False) -> None:
    p.add_argument(
        "--runs", help="runs folder (default: $MERLION_RUNS_DIR, else $MERLION_STUDIO_HOME/runs, else ./runs)"
    )
    if json_flag:
        p.add_argument("--json", action="store_true", help="print JSON")


def _store(args: argparse.Namespace) -> Any:
    """The store, created when missing (commands that submit or run jobs)."""
    from merlion_core.jobs.store import JobStore

    return JobStore(args.runs)


def _existing_store(args: argparse.Namespace, job_id: int) -> Any:
    """The store of a command about job ``job_id``; a folder without one is 'no such job' (nothing is created)."""
    from merlion_core.jobs.store import JobStore, NoJobStore, runs_dir

    try:
        return JobStore(args.runs, create=False)
    except NoJobStore:
        raise CLIError(f"job {job_id}: no such job in {runs_dir(args.runs)}") from None


def _get(store: Any, job_id: int) -> Any:
    from merlion_core.jobs.store import JobNotFound

    try:
        return store.get(job_id)
    except JobNotFound as exc:
        raise CLIError(str(exc)) from None


def _when(stamp: float | None) -> str:
    return datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S") if stamp else "-"


def _read_config(value: str) -> dict[str, Any]:
    from merlion_core.jobs.store import read_spec_file

    if value.lstrip().startswith("{"):
        try:
            data = json.loads(value)
        except json.JSONDecodeError as exc:
            raise CLIError(f"--config: invalid JSON ({exc.msg})") from None
    else:
        data = read_spec_file(value, "--config")
    if not isinstance(data, dict):
        raise CLIError("--config: expected a JSON/YAML mapping of the kind's fields")
    return data


def cmd_submit(args: argparse.Namespace) -> int:
    from merlion_core.jobs.backend import LocalBackend
    from merlion_core.jobs.spec import JobSpec

    store = _store(args)
    backend = LocalBackend(store, start_supervisor=not args.no_supervisor)
    job_id = backend.submit(JobSpec(args.kind, _read_config(args.config), args.seed))
    if args.json:
        print_json(store.get(job_id).to_dict())
    else:
        print(f"job {job_id}: {args.kind} queued in {store.root}")
    return 0


def _progress(job: Any) -> str:
    if job.step is None:
        return "-"
    return f"{job.step}/{job.total}" if job.total else str(job.step)


def _one_line(text: str | None) -> str:
    """A reason, whole, on one table line."""
    return " ".join((text or "").splitlines())


def cmd_list(args: argparse.Namespace) -> int:
    from merlion_core.jobs.store import JobStore, NoJobStore, runs_dir

    try:
        store = JobStore(args.runs, create=False)
    except NoJobStore:  # a read-only command creates nothing
        print("[]" if args.json else f"no jobs in {runs_dir(args.runs)}")
        return 0
    jobs = store.list(args.status, sweep=args.sweep)
    if args.json:
        print_json([job.to_dict() for job in jobs])
        return 0
    print(
        f"{'id':>5}  {'kind':<13} {'status':<10} {'backend':<7} {'seed':>4}  {'progress':<14} {'created':<19}  reason"
    )
    for job in jobs:
        print(
            f"{job.id:>5}  {job.kind:<13} {job.status:<10} {job.backend:<7} {job.seed:>4}  {_progress(job):<14} "
            f"{_when(job.created_at):<19}  {_one_line(job.exit_reason)}"
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from merlion_core.jobs.store import resumable

    store = _existing_store(args, args.id)
    job = _get(store, args.id)
    latest: dict[str, Any] = {}
    for row in store.metrics(job.id):
        latest[row["name"]] = {"step": row["step"], "value": row["value"]}
    data = {
        **job.to_dict(),
        "log": str(store.log_path(job.id)),
        "artifacts": str(store.artifacts_dir(job.id)),
        "checkpoints": str(store.checkpoint_dir(job.id)),
        "latest_metrics": latest,
        "resumable": resumable(job),
    }
    if args.json:
        print_json(data)
        return 0
    for key in (
        "id",
        "kind",
        "status",
        "backend",
        "seed",
        "sweep",
        "attempts",
        "exit_reason",
        "failure",
        "resumable",
        "pid",
        "gpu",
        "log",
        "artifacts",
    ):
        print(f"{key:>16}: {data[key]}")
    for key in ("created_at", "started_at", "finished_at", "heartbeat"):
        print(f"{key:>16}: {_when(data[key])}")
    print(f"{'progress':>16}: {_progress(job)}")
    print(f"{'config':>16}: {json.dumps(job.config, sort_keys=True)}")
    for name, point in latest.items():
        print(f"{name:>16}: {point['value']:.6g} (step {point['step']})")
    if job.result:
        print(f"{'result':>16}: {json.dumps(job.result, sort_keys=True, default=str)[:2000]}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from merlion_core.jobs.backend import LocalBackend
    from merlion_core.jobs.store import JobStateError

    store = _existing_store(args, args.id)
    job = _get(store, args.id)
    try:  # a Ray job's worker polls the store too; its sweep driver enforces the grace period
        outcome = store.request_cancel(job.id) if job.backend == "ray" else LocalBackend(store).cancel(job.id)
    except JobStateError as exc:
        raise CLIError(str(exc)) from None
    print(
        f"job {job.id}: "
        + (
            "cancelled"
            if outcome == "cancelled"
            else "cancel requested (stops at its next step, or is killed after the grace period)"
        )
    )
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from merlion_core.jobs.store import FINAL, read_log

    store = _existing_store(args, args.id)
    job = _get(store, args.id)
    path = store.log_path(job.id)
    text = read_log(path)
    sys.stdout.write(text)
    offset = path.stat().st_size if path.is_file() else 0
    while args.follow and store.get(job.id).status not in FINAL:
        time.sleep(0.5)
        if path.is_file() and path.stat().st_size > offset:
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            offset += len(chunk)
            sys.stdout.write(chunk.decode("utf-8", errors="replace"))
            sys.stdout.flush()
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from merlion_core.jobs.store import JobStateError
    from merlion_core.jobs.supervisor import ensure_supervisor

    store = _existing_store(args, args.id)
    job = _get(store, args.id)
    if job.backend != "local":
        raise CLIError(f"job {job.id}: ran on {job.backend}; resume it with a new sweep")
    try:  # refuses a job that failed with its own error (one line): a resume would fail the same way
        store.requeue(job.id, resume=True)
    except JobStateError as exc:
        raise CLIError(str(exc)) from None
    if not args.no_supervisor:
        ensure_supervisor(store.root)
    print(f"job {job.id}: queued again (it resumes from its latest checkpoint, if it has one)")
    return 0


def cmd_supervisor(args: argparse.Namespace) -> int:
    from merlion_core.jobs.supervisor import Supervisor, SupervisorConfig, SupervisorRunning

    try:
        Supervisor(args.runs, config_from_args(SupervisorConfig, args)).run()
    except SupervisorRunning as exc:
        raise CLIError(str(exc)) from None
    except KeyboardInterrupt:
        print("supervisor interrupted (workers keep running; the next supervisor adopts them)", file=sys.stderr)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from merlion_core.jobs.store import read_spec_file
    from merlion_core.jobs.sweep import expand, make_backend

    sweep = expand(read_spec_file(args.spec, "--spec"), default_name=Path(args.spec).stem)
    store = _store(args)
    backend = make_backend(args.backend, store, address=args.address, num_cpus=args.num_cpus)
    try:
        ids = [backend.submit(spec, sweep=sweep.name) for spec in sweep.specs]
        print(f"sweep {sweep.name}: {len(ids)} jobs ({ids[0]}..{ids[-1]}) on {args.backend}", file=sys.stderr)
        if args.detach and (args.backend == "local" or args.address):
            return 0
        seen: dict[int, str] = {}

        def report(records: list[Any]) -> None:
            for job in records:
                if seen.get(job.id) != job.status:
                    seen[job.id] = job.status
                    print(
                        f"  job {job.id}: {job.status}" + (f" ({job.exit_reason})" if job.exit_reason else ""),
                        file=sys.stderr,
                    )

        try:
            records = backend.wait(ids, on_update=report)
        except KeyboardInterrupt:
            for job_id in ids:
                if store.get(job_id).status in ("queued", "running"):
                    backend.cancel(job_id)
            raise
    finally:
        backend.close()
    summary = {status: sum(r.status == status for r in records) for status in ("succeeded", "failed", "cancelled")}
    if args.json:
        print(
            json.dumps(
                {"sweep": sweep.name, "jobs": [r.to_dict() for r in records], **summary}, indent=2, sort_keys=True
            )
        )
    else:
        print(f"sweep {sweep.name}: " + ", ".join(f"{n} {s}" for s, n in summary.items()))
    return 0 if summary["succeeded"] == len(records) else 1
