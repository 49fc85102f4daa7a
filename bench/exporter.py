"""The cost of one `conveyor exporter` scrape on a big job store, query by query.

Seeds a scratch database with ``--rows`` job rows (one ``INSERT … SELECT generate_series``: 90 %
in the namespace measured, 10 % in another; 99 % finished, the rest queued, delayed, running or
retrying, with their held messages), then:

1. runs each PostgreSQL query a scrape makes (``ExporterStore.live_figures``, the leader
   lookup) and the finished-job count (``ExporterStore.final_counts``) under
   ``EXPLAIN (ANALYZE)``, capturing the exact statements and parameters the store sends;
2. times whole scrapes of ``ClusterCollector`` (``--scrapes``, median and maximum), with the
   finished jobs counted in the background as ``conveyor exporter`` does by default.

Run on its own (RabbitMQ's management API and Redis are read too, as in production)::

    python bench/exporter.py --rows 1000000
    python bench/exporter.py --rows 1000000 --reuse     # skip the seeding when the rows exist
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import event, text

from jobs.admin.exporter import ClusterCollector, ExporterOptions, FinalCounts
from jobs.redis_lite import redis_client
from jobs.schedule.leader import current_leader
from jobs.settings import Settings
from jobs.store import Database
from jobs.store.exporter import ExporterStore
from jobs.store.migrate import ensure_database, upgrade

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/conveyor_exporter_bench"
NAMESPACE = "benchx"

# Row g of the series: its namespace, queue, kind and status. 1 in 100 rows is not finished.
_SEED = """
INSERT INTO jobs (id, kind, queue, status, payload, attempts, created_at, started_at, finished_at, eta)
SELECT gen_random_uuid(), k.kind, (CASE WHEN (g / 11) % 10 = 0 THEN 'other' ELSE :ns END) || '.' || k.queue,
       s.status, '{}'::jsonb, CASE WHEN s.status = 'queued' THEN 0 ELSE 1 END,
       now() - make_interval(secs => (:rows - g) * 0.5),
       CASE WHEN s.status <> 'queued' THEN now() - make_interval(secs => (:rows - g) * 0.5 - 0.1) END,
       CASE WHEN s.status IN ('succeeded', 'failed', 'cancelled')
            THEN now() - make_interval(secs => (:rows - g) * 0.5 - 0.2) END,
       CASE WHEN s.status = 'retrying' OR (s.status = 'queued' AND g % 7 = 0)
            THEN now() + interval '1 hour' END
FROM generate_series(1, :rows) g,
LATERAL (SELECT (ARRAY['noop', 'email', 'image', 'report'])[1 + (g / 7) % 4] AS kind,
                (ARRAY['default', 'email', 'images', 'reports'])[1 + (g / 7) % 4] AS queue) k,
LATERAL (SELECT CASE WHEN g % 100 = 1 THEN (ARRAY['queued', 'queued', 'queued', 'running', 'retrying'])[1 + (g / 100) % 5]
                     WHEN g % 50 = 7 THEN 'failed' WHEN g % 200 = 3 THEN 'cancelled'
                     ELSE 'succeeded' END AS status) s
"""
# Every job waiting for its due time has its message held, as the store keeps it.
_HELD = """
INSERT INTO delayed_messages (message_id, queue, due_at, body, created_at)
SELECT id::text, queue, eta, '\\x7b7d'::bytea, created_at FROM jobs WHERE eta IS NOT NULL
"""


def seed(url: str, rows: int) -> None:
    ensure_database(url)
    db = Database(url)
    upgrade(db)
    started = time.perf_counter()
    with db.engine.begin() as connection:
        connection.execute(text("TRUNCATE jobs, delayed_messages CASCADE"))
        connection.execute(text(_SEED), {"rows": rows, "ns": NAMESPACE})
        connection.execute(text(_HELD))
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE jobs"))
        connection.execute(text("VACUUM ANALYZE delayed_messages"))
    print(f"seeded {rows:,} rows in {time.perf_counter() - started:.0f} s")
    db.dispose()


def explained(db: Database, call: Any, repeats: int) -> list[tuple[str, list[float]]]:
    """Run ``call()``, then each statement it sent ``repeats`` times under EXPLAIN ANALYZE:
    (its first characters, execution times in ms)."""
    sent: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            sent.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        call()
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    timings = []
    with db.engine.connect() as connection:
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        for statement, parameters in sent:
            times = []
            for _ in range(repeats):
                cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters)
                times.append(float(cursor.fetchone()[0][0]["Execution Time"]))
            timings.append((" ".join(statement.split())[:80], times))
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("BENCH_EXPORTER_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--explains", type=int, default=5, help="EXPLAIN ANALYZE runs per statement.")
    parser.add_argument("--reuse", action="store_true", help="Keep the rows already seeded.")
    args = parser.parse_args()
    if not args.reuse:
        seed(args.database_url, args.rows)
    settings = Settings(
        database_url=args.database_url,
        namespace=NAMESPACE,
        rabbitmq_api_url=os.environ.get("CONVEYOR_RABBITMQ_API_URL", "http://guest:guest@127.0.0.1:15672"),
    )
    db = Database(args.database_url)
    store = ExporterStore(db)
    now, grace = datetime.now(UTC), timedelta(seconds=60)
    store.live_figures(NAMESPACE, now, grace)  # a warm pool and cache, as a running exporter has
    print(f"\nEXPLAIN ANALYZE, execution time per statement ({args.explains} runs: median, max):")
    for label, call in (
        ("scrape", lambda: store.live_figures(NAMESPACE, now, grace)),
        ("scrape", lambda: current_leader(db, NAMESPACE)),
        ("background", lambda: store.final_counts(NAMESPACE)),
    ):
        for summary, times in explained(db, call, args.explains):
            print(f"  [{label:10}] {statistics.median(times):7.1f} ms {max(times):7.1f} ms  {summary}")
    final = FinalCounts(store, NAMESPACE, every=3600)
    final.start()
    while final.current() is None:
        time.sleep(0.1)
    collector = ClusterCollector(settings, db, redis_client(settings.redis_url), ExporterOptions(), final)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    scrapes, postgres = [], []
    for _ in range(args.scrapes):
        started = time.perf_counter()
        generate_latest(registry)
        scrapes.append((time.perf_counter() - started) * 1000)
        postgres.append(collector.read_seconds["postgresql"] * 1000)
    final.stop()
    print(
        f"\n{args.scrapes} scrapes: whole scrape median {statistics.median(scrapes):.1f} ms "
        f"(max {max(scrapes):.1f}); PostgreSQL part median {statistics.median(postgres):.1f} ms "
        f"(max {max(postgres):.1f})"
    )
    db.dispose()


if __name__ == "__main__":
    main()
