"""A quick A/B of the no-op drain: rate, and CPU per job of the replica, PostgreSQL and RabbitMQ.

Enqueues N no-op jobs with ``enqueue_many``, then drains them with ``conveyor worker -p 2 -t 8
--queues default`` from the checkout at ROOT (another worktree, to compare two versions side by
side on the same services), and prints the drain rate and the CPU seconds per job of the
replica (from ``/proc``), of every ``postgres`` process and of every ``beam`` process, and the
rate of the ``enqueue_many`` calls with PostgreSQL's CPU per enqueued job. Each
checkout gets a database of its own (``conveyor_drain_<name>``). Run it alternately::

    python bench/drain_cpu.py /path/to/old-checkout 10000
    python bench/drain_cpu.py . 10000
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg


def _cpu(pattern: str) -> float:
    """User + system CPU seconds of every process whose command line matches ``pattern``."""
    pids = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _commits(sql: psycopg.Connection[Any]) -> int:
    """Transactions committed in the database so far (every statement of the direct connections
    is one: how many round trips the drain's jobs shared)."""
    row = sql.execute(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    return int(row[0])


def _empty_queue(sql: psycopg.Connection[Any], queue: str) -> None:
    """Drop ``queue``'s jobs, then vacuum and analyze as `make bench` does before each run: the
    same table state, and statistics taken before the backlog arrives (what PostgreSQL plans
    the drain's statements with)."""
    sql.execute("DELETE FROM jobs WHERE queue = %s", (queue,))
    for table in ("jobs", "job_attempts", "job_claims"):
        sql.execute(f"VACUUM ANALYZE {table}")


def _enqueue(client: Any, jobs: int, name: str) -> None:
    """``jobs`` no-op jobs by ``enqueue_many`` in batches of 500; prints their rate."""
    client.enqueue_many("noop", [{}])  # connections open, statements prepared
    started, postgres = time.monotonic(), _cpu("postgres")
    for first in range(0, jobs - 1, 500):
        client.enqueue_many("noop", [{}] * min(500, jobs - 1 - first))
    took, postgres = time.monotonic() - started, _cpu("postgres") - postgres
    print(
        f"{name}: enqueue_many {(jobs - 1) / took:,.0f} jobs/s; "
        f"PostgreSQL CPU per enqueued job {1000 * postgres / (jobs - 1):.3f} ms"
    )


def main() -> None:
    root, jobs = Path(sys.argv[1]).resolve(), int(sys.argv[2])
    sys.path.insert(0, str(root))
    os.chdir(root)
    from bench.harness import (
        cpu_seconds,
        new_client,
        prepare_database,
        queue_outcomes,
        running_worker,
        sql_connect,
        wait_succeeded,
    )

    database = f"postgresql+psycopg://postgres@127.0.0.1:5432/conveyor_drain_{root.name.replace('-', '_')}"
    settings = {
        "broker_url": "amqp://guest:guest@127.0.0.1:5672/%2F",
        "database_url": database,
        "redis_url": "redis://127.0.0.1:6379/0",
        "namespace": "drainab",
    }
    prepare_database(database)
    # Bytecode for the checkout under test, old ones included (``harness.compile_conveyor``).
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "jobs", "producers", "workers", "console", "cli.py"],
        check=True,
    )
    sql, queue = sql_connect(database), "drainab.default"
    _empty_queue(sql, queue)
    with new_client(settings) as client:
        _enqueue(client, jobs, root.name)
    with running_worker(settings, "--processes", "2", "--threads", "8", "--queues", "default") as worker:
        wait_succeeded(lambda: queue_outcomes(sql, queue), 1, worker, "no-op jobs")
        before = (cpu_seconds(worker.pid), _cpu("postgres"), _cpu("beam"), queue_outcomes(sql, queue)[0])
        commits = _commits(sql)
        last = wait_succeeded(lambda: queue_outcomes(sql, queue), jobs, worker, "no-op jobs")
        after = (cpu_seconds(worker.pid), _cpu("postgres"), _cpu("beam"))
        time.sleep(1.5)  # PostgreSQL's backends publish their counts at most once a second
        commits = _commits(sql) - commits
    row = sql.execute(
        "SELECT extract(epoch FROM min(started_at)) FROM jobs WHERE queue = %s", (queue,)
    ).fetchone()
    per_job = [1000 * (b - a) / max(jobs - before[3], 1) for a, b in zip(before, after, strict=False)]
    print(
        f"{root.name}: drain {jobs / (last - float(row[0])):,.0f} jobs/s; CPU per job: worker {per_job[0]:.3f} ms, "
        f"PostgreSQL {per_job[1]:.3f} ms, RabbitMQ {per_job[2]:.3f} ms; "
        f"{commits / max(jobs - before[3], 1):.2f} transactions a job; load {os.getloadavg()[0]:.1f}"
    )
    sql.execute("DELETE FROM jobs WHERE queue = %s", (queue,))


if __name__ == "__main__":
    main()
