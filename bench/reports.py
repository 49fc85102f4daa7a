"""Time and peak memory of the `jobs_summary` report over 100k and 1M job rows.

Seeds a database of its own with `generate_series`, then runs the report (HTML + CSV + PDF,
artifacts in files) in a fresh process per size, reporting wall time and peak RSS.

    .venv/bin/python bench/reports.py [--sizes 100000,1000000] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import prepare_database

from jobs.kinds.report import _compute
from jobs.services import Services
from jobs.settings import Settings
from jobs.store import Database

DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/conveyor_bench_reports"
START = datetime(2030, 1, 1, tzinfo=UTC)


def seed(rows: int) -> None:
    prepare_database(DATABASE_URL)
    db = Database(DATABASE_URL)
    with db.engine.begin() as connection:
        connection.execute(text("TRUNCATE jobs CASCADE"))
        connection.execute(
            text(
                "INSERT INTO jobs (id, kind, queue, status, payload, attempts, created_at, started_at, "
                "finished_at, error) SELECT gen_random_uuid(), (ARRAY['email','image','noop','report'])[1 + n % 4], "
                "'bench', CASE WHEN n % 20 = 0 THEN 'failed' ELSE 'succeeded' END, '{}', 1 + (n % 7 = 0)::int, "
                ":start + make_interval(secs => n * 0.5), :start + make_interval(secs => n * 0.5 + 0.2), "
                ":start + make_interval(secs => n * 0.5 + 0.3), CASE WHEN n % 20 = 0 THEN 'Boom: ' || (n % 5) END "
                "FROM generate_series(1, :rows) AS n"
            ),
            {"start": START, "rows": rows},
        )
        connection.execute(
            text(
                "INSERT INTO job_attempts (job_id, attempt, worker, host, pid, started_at, finished_at, outcome) "
                "SELECT id, 1, 'w', 'h', 1, started_at, finished_at, status FROM jobs"
            )
        )
        connection.execute(text("ANALYZE"))
    db.dispose()


def run_once(rows: int) -> dict[str, float]:
    """In this (fresh) process: the report as a worker computes it."""
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(database_url=DATABASE_URL, artifact_url=f"file://{folder}", report_cache_ttl=0)
        db = Database(DATABASE_URL)
        services = Services(settings, db)
        until = START + timedelta(seconds=rows * 0.5 + 10)
        started = time.perf_counter()
        result = _compute(
            services,
            {
                "report": "jobs_summary",
                "formats": ["html", "csv", "pdf"],
                "params": {"since": START.isoformat(), "until": until.isoformat()},
            },
            None,
        )
        elapsed = time.perf_counter() - started
        csv_size = next(a["size"] for a in result["artifacts"] if a["name"].endswith(".csv"))
        db.dispose()
    return {
        "rows": result["rows"],
        "seconds": round(elapsed, 2),
        "csv_mib": round(csv_size / 2**20, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_once(args.child)))
        return
    results = []
    for rows in (int(size) for size in args.sizes.split(",")):
        seed(rows)
        child = subprocess.run(
            [sys.executable, __file__, "--child", str(rows)], capture_output=True, text=True, check=True
        )
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'rows':>9} {'seconds':>8} {'CSV MiB':>8} {'peak RSS MiB':>13}")
    for r in results:
        print(f"{r['rows']:>9,} {r['seconds']:>8} {r['csv_mib']:>8} {r['peak_rss_mib']:>13}")


if __name__ == "__main__":
    main()
