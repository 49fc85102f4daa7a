"""What every benchmark section shares: progress lines, a migrated database, `conveyor worker`
subprocesses, plain SQL on the ``jobs`` table, and waiting for jobs to finish.

Conveyor is driven through its public surfaces only: the `conveyor` CLI, ``producers.Client``,
``CONVEYOR_*`` settings and the ``jobs`` table of SPEC §3 (read with plain psycopg), so that the
harness keeps working while the worker's internals change.
"""

from __future__ import annotations

import compileall
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
#: Held by the fault-injection suite (tests/chaos) while it has a service stopped.
CHAOS_LOCK = Path("/tmp/chaos.lock")
#: Seconds without a single job finishing after which a measurement is abandoned.
STALL_TIMEOUT = 60.0
FINAL_STATUSES = ("succeeded", "failed", "cancelled")


class BenchFailed(RuntimeError):
    """A measurement that could not complete (a worker died, jobs stalled or failed)."""


class Progress:
    """Prints timestamped progress lines (seconds since the benchmark started)."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {message}", flush=True)


def wait_quiet(log: Progress) -> None:
    """Wait while the fault-injection suite has a service stopped (it holds /tmp/chaos.lock)."""
    told = False
    while CHAOS_LOCK.exists():
        try:
            holder = int(CHAOS_LOCK.read_text().split()[0])
            os.kill(holder, 0)
        except (ValueError, IndexError, OSError):
            return
        if not told:
            log(f"{CHAOS_LOCK} is held by pid {holder} (a service is disrupted): waiting")
            told = True
        time.sleep(2)


def measured_twice(
    label: str, measure: Callable[[], dict[str, Any]], log: Progress, *, before_retry: Callable[[], None]
) -> dict[str, Any]:
    """One run's record: ``measure()``'s metrics, tried once more if it fails (``error`` then
    says why the second try failed too, and its metrics are empty)."""
    record: dict[str, Any] = {"metrics": {}, "error": None}
    for attempt in (1, 2):
        wait_quiet(log)
        record["loadavg"] = os.getloadavg()
        try:
            record["metrics"] = measure()
            record["error"] = None
            break
        except Exception as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
            log(f"  {label}: FAILED ({record['error']})")
            if os.environ.get("BENCH_DEBUG"):
                traceback.print_exc()
            if attempt == 1:
                log(f"  {label}: trying this run again")
                before_retry()
    return record


def conveyor_env(settings: dict[str, str]) -> dict[str, str]:
    """This process's environment with these ``CONVEYOR_*`` settings only (none inherited)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update({f"CONVEYOR_{name.upper()}": value for name, value in settings.items()})
    return env


#: Conveyor's own code, which an editable install leaves uncompiled.
CONVEYOR_SOURCES = ("jobs", "producers", "workers", "console", "cli.py")


def compile_conveyor() -> None:
    """Write the bytecode of Conveyor's own modules, as ``pip install`` does for an installed
    package (and for Dramatiq's and Celery's here). Without it, wherever Python is told not to
    write bytecode (``PYTHONDONTWRITEBYTECODE``), every worker process compiles Conveyor's modules
    from source as it starts: slower, and 1.3 MiB more memory a process, which the RSS figures
    would count against Conveyor alone."""
    for name in CONVEYOR_SOURCES:
        path = ROOT / name
        done = (
            compileall.compile_dir(path, quiet=1) if path.is_dir() else compileall.compile_file(path, quiet=1)
        )
        if not done:
            raise BenchFailed(f"cannot compile {path}")


def prepare_database(url: str) -> None:
    """`conveyor db upgrade`: create the benchmark's database when missing, and migrate it."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "db", "upgrade"],
        env=conveyor_env({"database_url": url}),
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise BenchFailed(f"conveyor db upgrade failed: {done.stderr.strip() or done.stdout.strip()}")


@contextmanager
def running_worker(settings: dict[str, str], *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`conveyor worker ARGS` with these ``CONVEYOR_*`` settings only; stopped (SIGTERM) on exit.

    Its output is dropped, unless ``BENCH_DEBUG`` is set (then stderr shows).
    """
    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "worker", *args],
        env=conveyor_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=None if os.environ.get("BENCH_DEBUG") else subprocess.DEVNULL,
    )
    try:
        yield worker
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)


def sql_connect(database_url: str) -> psycopg.Connection[Any]:
    """A plain autocommit psycopg connection to a SQLAlchemy-style URL (``postgresql+psycopg://``)."""
    return psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True)


def queue_outcomes(sql: psycopg.Connection[Any], queue: str) -> tuple[int, int, float | None]:
    """Jobs of ``queue`` that succeeded, that ended otherwise, and the last ``finished_at`` (epoch)."""
    row = sql.execute(
        "SELECT count(*) FILTER (WHERE status = 'succeeded'), "
        "count(*) FILTER (WHERE status IN ('failed', 'cancelled')), "
        "extract(epoch FROM max(finished_at)) FROM jobs WHERE queue = %s",
        (queue,),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), None if row[2] is None else float(row[2])


JOB_OUTCOMES_SQL = (
    "SELECT count(*) FILTER (WHERE status = 'succeeded'), "
    "count(*) FILTER (WHERE status IN ('failed', 'cancelled')), "
    "extract(epoch FROM max(finished_at)) FROM jobs WHERE id = ANY(%s::uuid[])"
)


def job_outcomes(sql: psycopg.Connection[Any], ids: Sequence[str]) -> tuple[int, int, float | None]:
    """As :func:`queue_outcomes`, for these job ids (looked up by primary key: the poll must not
    scan ``jobs``, whose PostgreSQL CPU the workers being measured would pay for)."""
    row = sql.execute(JOB_OUTCOMES_SQL, (list(ids),)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), None if row[2] is None else float(row[2])


def wait_succeeded(
    count_outcomes: Callable[[], tuple[int, int, float | None]],
    target: int,
    worker: subprocess.Popen[bytes],
    what: str,
    interval: float = 0.25,
) -> float:
    """Poll ``count_outcomes()`` (a :func:`queue_outcomes`-like callable) every ``interval``
    seconds until ``target`` jobs succeeded; returns the last ``finished_at`` (epoch seconds),
    which the interval does not shift. The interval is long because each poll counts the queue's
    rows in PostgreSQL, on the cores the workers being measured need (at 20 ms, the polls cost
    PostgreSQL more CPU than the workers' own writes: docs/engineering-log.md, 2026-12-07).

    Raises:
        BenchFailed: a job failed, the worker exited, or nothing finished for STALL_TIMEOUT s.
    """
    seen, changed = -1, time.monotonic()
    while True:
        succeeded, failed, last = count_outcomes()
        if failed:
            raise BenchFailed(f"{what}: {failed} job(s) failed (BENCH_DEBUG=1 shows the worker's log)")
        if succeeded >= target:
            assert last is not None
            return last
        if succeeded != seen:
            seen, changed = succeeded, time.monotonic()
        elif time.monotonic() - changed > STALL_TIMEOUT:
            raise BenchFailed(f"{what}: stuck at {succeeded} of {target} for {STALL_TIMEOUT:g} s")
        if worker.poll() is not None:
            raise BenchFailed(f"{what}: the worker exited with code {worker.returncode}")
        time.sleep(interval)


def new_client(settings: dict[str, str]) -> Any:
    """A ``producers.Client`` built from these ``CONVEYOR_*`` settings alone (imported on use:
    the coordinator of a no-op-only run has no need of it)."""
    from jobs.settings import Settings
    from producers import Client

    return Client(Settings.from_env({f"CONVEYOR_{name.upper()}": v for name, v in settings.items()}))


def known_settings(settings: dict[str, str]) -> dict[str, str]:
    """``settings`` without the names this checkout's ``Settings`` does not have (an optional
    knob such as ``image_draft`` that a later version drops), which the worker would refuse."""
    from dataclasses import fields

    from jobs.settings import Settings

    names = {field.name for field in fields(Settings)}
    return {name: value for name, value in settings.items() if name in names}


def cpu_seconds(root: int) -> float:
    """User + system CPU seconds of process ``root`` and its live descendants (from /proc)."""
    from bench.systems.base import process_tree

    return sum(_process_cpu(pid) for pid in process_tree([root]))


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (0 when it is gone or not on this machine)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def backend_cpu(sql: psycopg.Connection[Any]) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend connected to ``sql``'s database (the
    benchmark's own, so no other build's), by process id; empty when PostgreSQL runs elsewhere.
    A backend that appears later started after the first reading: count it from 0."""
    rows = sql.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchall()
    return {pid: _process_cpu(pid) for (pid,) in rows}
