"""Does partitioning ``jobs`` by time pay for retention? Prune one day by DELETE against DROP.

Seeds two tables shaped like ``jobs`` (its columns that matter for size, and its main indexes) in
a scratch database with the same rows spread over DAYS days: ``plain``, one table, and ``parted``,
partitioned by day on ``created_at``. Then prunes the oldest day from each: ``DELETE`` (and the
``VACUUM`` that makes the space reusable) against ``DROP TABLE`` of that day's partition. Prints
one JSON object: seconds and WAL bytes of each, and the rows pruned. The scratch database is
dropped at the end. Cost grows with the rows pruned for DELETE, not for DROP::

    python bench/partition_prune.py --rows 1000000 --days 10
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import psycopg

SERVER = os.environ.get("BENCH_PG_SERVER", "postgresql://postgres@127.0.0.1:5432")

COLUMNS = """
    id uuid NOT NULL, kind varchar(64) NOT NULL, queue varchar(255) NOT NULL,
    status varchar(16) NOT NULL, payload jsonb NOT NULL, result jsonb, error text,
    attempts integer NOT NULL DEFAULT 0, created_at timestamptz NOT NULL,
    started_at timestamptz, finished_at timestamptz
"""
INDEXES = ("created_at", "finished_at", "queue, status", "kind, created_at")
SEED = """
    INSERT INTO {table} (id, kind, queue, status, payload, result, attempts, created_at, started_at, finished_at)
    SELECT gen_random_uuid(), 'email', 'conveyor.email', 'succeeded',
           jsonb_build_object('to', 'user' || g || '@example.com', 'subject', 'Your order', 'n', g),
           '{{"message_id": "<x@example.com>"}}'::jsonb, 1,
           t, t + interval '50 ms', t + interval '120 ms'
    FROM generate_series(1, %(rows)s) AS g,
         LATERAL (SELECT timestamptz '2026-01-01' + (g::float / %(rows)s) * %(days)s * interval '1 day' AS t) AS at
"""


def _timed(
    conn: psycopg.Connection[Any], sql: str, params: dict[str, Any] | None = None
) -> tuple[float, int]:
    """Seconds and WAL bytes of one statement."""
    before = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
    began = time.monotonic()
    conn.execute(sql, params)  # type: ignore[arg-type]
    took = time.monotonic() - began
    wal = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (before,)).fetchone()[0]  # type: ignore[index]
    return round(took, 3), int(wal)


def _create(conn: psycopg.Connection[Any], days: int) -> None:
    conn.execute(f"CREATE TABLE plain ({COLUMNS}, PRIMARY KEY (id))")
    # A partitioned table's primary key must hold the partition key.
    conn.execute(
        f"CREATE TABLE parted ({COLUMNS}, PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)"
    )
    for day in range(days + 1):
        conn.execute(
            f"CREATE TABLE parted_{day} PARTITION OF parted FOR VALUES FROM "
            f"(timestamptz '2026-01-01' + interval '{day} day') TO (timestamptz '2026-01-01' + interval '{day + 1} day')"
        )
    for table in ("plain", "parted"):
        for n, columns in enumerate(INDEXES):
            conn.execute(f"CREATE INDEX ix_{table}_{n} ON {table} ({columns})")


def measure(rows: int, days: int) -> dict[str, Any]:
    """Seed, prune the first day both ways; the figures."""
    name = f"conveyor_partition_probe_{os.getpid()}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with psycopg.connect(f"{SERVER}/{name}", autocommit=True) as conn:
            _create(conn, days)
            figures: dict[str, Any] = {"rows": rows, "days": days}
            for table in ("plain", "parted"):
                figures[f"seed_{table}_s"], figures[f"seed_{table}_wal"] = _timed(
                    conn, SEED.format(table=table), {"rows": rows, "days": days}
                )
            conn.execute("ANALYZE")
            cutoff = "timestamptz '2026-01-02'"
            figures["pruned_rows"] = conn.execute(
                f"SELECT count(*) FROM plain WHERE created_at < {cutoff}"
            ).fetchone()[0]  # type: ignore[index]
            figures["delete_s"], figures["delete_wal"] = _timed(
                conn, f"DELETE FROM plain WHERE created_at < {cutoff}"
            )
            figures["vacuum_s"], figures["vacuum_wal"] = _timed(conn, "VACUUM plain")
            figures["drop_s"], figures["drop_wal"] = _timed(conn, "DROP TABLE parted_0")
            figures["plain_bytes"] = conn.execute("SELECT pg_total_relation_size('plain')").fetchone()[0]  # type: ignore[index]
            return figures
    finally:
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(measure(args.rows, args.days), indent=2))


if __name__ == "__main__":
    main()
