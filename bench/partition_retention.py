"""Retention on Conveyor's own schema: a day's jobs pruned by dropping their partition, against
the same jobs pruned row by row (as rows of the default partition are).

Migrates a scratch database, seeds ROWS finished jobs of one day 40 days ago (one attempt each),
and runs Conveyor's own prune (``jobs.admin.prune.prune_jobs``, as ``conveyor prune`` and the
scheduler's retention do) with a 30-day cutoff, twice with the same rows: once with UUIDv7 ids
(the day has its partition: it is dropped whole) and once with UUIDv4 ids (the rows are in the
default partition: deleted 1,000 a transaction, then ``VACUUM``). Prints one JSON object with the
seconds and WAL bytes of each; the scratch database is dropped at the end::

    python bench/partition_retention.py --rows 300000
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from jobs.admin.prune import prune_jobs
from jobs.store import Database
from jobs.store.migrate import ensure_database, upgrade
from jobs.store.partitions import create_day

SERVER = os.environ.get("BENCH_PG_SERVER", "postgresql://postgres@127.0.0.1:5432")
#: A UUIDv7 of the row's moment, or a random UUIDv4.
_IDS = {
    "partition": "(lpad(to_hex((extract(epoch FROM t) * 1000)::bigint), 12, '0') || '7' || "
    "substr(md5(g::text), 1, 3) || '8' || substr(md5(g::text), 4, 15))::uuid",
    "row_by_row": "gen_random_uuid()",
}
_SEED = """
    INSERT INTO jobs (id, kind, queue, status, payload, result, attempts, max_retries, created_at,
                      started_at, finished_at)
    SELECT {id}, 'email', 'bench.email', 'succeeded',
           jsonb_build_object('to', 'user' || g || '@example.com', 'subject', 'Your order', 'n', g),
           '{{"message_id": "<x@example.com>"}}'::jsonb, 1, 3, t, t + interval '50 ms', t + interval '120 ms'
    FROM generate_series(1, %(rows)s) AS g,
         LATERAL (SELECT %(day)s::timestamptz + (g::float / %(rows)s) * interval '1 day' AS t) AS at
"""
_ATTEMPTS = """
    INSERT INTO job_attempts (job_id, attempt, worker, host, pid, started_at, finished_at, outcome)
    SELECT id, 1, 'w', 'h', 1, started_at, finished_at, 'succeeded' FROM jobs
"""


def _wal(conn: psycopg.Connection[Any]) -> str:
    return str(conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0])  # type: ignore[index]


def _wal_since(conn: psycopg.Connection[Any], lsn: str) -> int:
    return int(conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn,)).fetchone()[0])  # type: ignore[index]


def measure(rows: int, how: str) -> dict[str, Any]:
    name = f"conveyor_bench_retention_{how}"
    url = f"{SERVER.replace('postgresql://', 'postgresql+psycopg://')}/{name}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    ensure_database(url)
    db = Database(url)
    try:
        upgrade(db)
        day = (datetime.now(UTC) - timedelta(days=40)).date()
        with db.engine.begin() as connection:
            create_day(connection, day)
        with psycopg.connect(f"{SERVER}/{name}", autocommit=True) as conn:
            conn.execute(_SEED.format(id=_IDS[how]), {"rows": rows, "day": day.isoformat()})
            conn.execute(_ATTEMPTS)
            conn.execute("VACUUM ANALYZE")
            conn.execute("CHECKPOINT")
            lsn, began = _wal(conn), time.monotonic()
            result = prune_jobs(db, datetime.now(UTC) - timedelta(days=30))
            pruned = time.monotonic() - began
            wal = _wal_since(conn, lsn)
            lsn, began = _wal(conn), time.monotonic()
            conn.execute("VACUUM jobs, job_attempts")
            vacuumed = time.monotonic() - began
            vacuum_wal = _wal_since(conn, lsn)
        return {
            "jobs_pruned": result.jobs,
            "prune_s": round(pruned, 2),
            "prune_wal_mib": round(wal / 1048576, 1),
            "vacuum_s": round(vacuumed, 2),
            "vacuum_wal_mib": round(vacuum_wal / 1048576, 1),
        }
    finally:
        db.dispose()
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    args = parser.parse_args()
    print(json.dumps({"seeded": args.rows, **{how: measure(args.rows, how) for how in _IDS}}, indent=2))


if __name__ == "__main__":
    main()
