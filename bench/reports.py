"""Reports: a ``jobs_summary`` report job (HTML + CSV) against the same template rendered directly.

A database of its own is seeded with R job rows (and one attempt each) spread over a window.

- Conveyor: ``conveyor worker -p 1 -t 1 --queues reports`` (report cache off) runs one warm-up
  report, then the clock runs from just before ``Client.generate_report`` to the job's
  ``finished_at`` (the HTML and CSV stored as artifacts).
- baseline: in the coordinator, the report's queries in plain SQL (psycopg, the rows through a
  server-side cursor), the same ``reports/jobs_summary.html`` rendered with Jinja2 and the CSV
  written with the ``csv`` module, both to files; timed after one warm-up.

Both must find the same number of rows. Runs on its own::

    python -m bench.compare --only reports --report-rows 20000 --runs 1
"""

from __future__ import annotations

import csv
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.harness import (
    ROOT,
    BenchFailed,
    job_outcomes,
    known_settings,
    new_client,
    prepare_database,
    running_worker,
    sql_connect,
    wait_succeeded,
)
from bench.sections import Comparison

START = datetime(2030, 1, 1, tzinfo=UTC)
#: Seconds between two seeded jobs' creation.
SPACING = 0.5
FORMATS = ["html", "csv"]
COLUMNS = ["id", "kind", "queue", "status", "attempts", "created_at", "started_at", "finished_at", "error"]
STATUSES = ("queued", "running", "succeeded", "retrying", "failed", "cancelled")
SEED_JOBS = (
    "INSERT INTO jobs (id, kind, queue, status, payload, attempts, created_at, started_at, finished_at, error) "
    "SELECT gen_random_uuid(), (ARRAY['email','image','noop','report'])[1 + mod(n, 4)], 'bench.seed', "
    "CASE WHEN mod(n, 20) = 0 THEN 'failed' ELSE 'succeeded' END, '{}', 1 + (mod(n, 7) = 0)::int, "
    "%(start)s + make_interval(secs => n * %(spacing)s), %(start)s + make_interval(secs => n * %(spacing)s + 0.2), "
    "%(start)s + make_interval(secs => n * %(spacing)s + 0.3), CASE WHEN mod(n, 20) = 0 THEN 'Boom: ' || mod(n, 5) END "
    "FROM generate_series(1, %(rows)s) AS n"
)
SEED_ATTEMPTS = (
    "INSERT INTO job_attempts (job_id, attempt, worker, host, pid, started_at, finished_at, outcome) "
    "SELECT id, 1, 'w', 'h', 1, started_at, finished_at, status FROM jobs WHERE queue = 'bench.seed'"
)
WINDOW = "created_at >= %(since)s AND created_at < %(until)s"
PERCENTILES = (
    "SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM {value})) "
    "FROM jobs j JOIN job_attempts a ON a.job_id = j.id "
    "WHERE j.created_at >= %(since)s AND j.created_at < %(until)s AND a.finished_at IS NOT NULL {extra}"
)


def summary(sql: Any, since: datetime, until: datetime) -> dict[str, Any]:
    """What the ``jobs_summary`` template shows, computed with plain SQL."""
    window = {"since": since, "until": until}
    counts = [
        {"kind": kind, "status": status, "count": count}
        for kind, status, count in sql.execute(
            f"SELECT kind, status, count(*) FROM jobs WHERE {WINDOW} GROUP BY 1, 2 ORDER BY 1, 2", window
        )
    ]
    totals = {status: 0 for status in STATUSES}
    for row in counts:
        totals[row["status"]] = totals.get(row["status"], 0) + row["count"]
    totals["all"] = sum(row["count"] for row in counts)
    found = {
        hour: (done, failed)
        for hour, done, failed in sql.execute(
            "SELECT date_trunc('hour', finished_at), count(*), count(*) FILTER (WHERE status = 'failed') "
            "FROM jobs WHERE finished_at >= %(since)s AND finished_at < %(until)s GROUP BY 1",
            window,
        )
    }
    throughput: list[dict[str, Any]] = []
    moment = since.replace(minute=0, second=0, microsecond=0)
    while moment < until and len(throughput) < 24 * 93:
        done, failed = found.get(moment, (0, 0))
        throughput.append({"hour": moment.isoformat(), "finished": done, "failed": failed})
        moment += timedelta(hours=1)

    def percentiles(value: str, extra: str) -> dict[str, float | None]:
        row = sql.execute(PERCENTILES.format(value=value, extra=extra), window).fetchone()
        values = row[0] if row and row[0] else [None, None, None]
        return {
            name: None if v is None else round(float(v), 4)
            for name, v in zip(("p50", "p95", "p99"), values, strict=True)
        }

    retry = sql.execute(
        f"SELECT avg(CASE WHEN attempts > 1 THEN 1.0 ELSE 0.0 END) FROM jobs WHERE {WINDOW} "
        "AND status IN ('succeeded', 'failed')",
        window,
    ).fetchone()
    errors = sql.execute(
        f"SELECT substr(error, 1, 200) AS e, count(*) FROM jobs WHERE {WINDOW} AND status = 'failed' "
        "AND error IS NOT NULL GROUP BY e ORDER BY count(*) DESC, e LIMIT 10",
        window,
    )
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "counts": counts,
        "totals": totals,
        "throughput": throughput,
        "wait_seconds": percentiles("a.started_at - j.created_at", "AND a.attempt = 1"),
        "run_seconds": percentiles("a.finished_at - a.started_at", ""),
        "retry_rate": None if retry is None or retry[0] is None else round(float(retry[0]), 4),
        "top_errors": [{"error": text, "count": count} for text, count in errors],
    }


def chart(series: list[dict[str, Any]]) -> Any:
    """The report's inline SVG chart, drawn by Conveyor's own helper when it is importable."""
    try:
        from jobs.reports.render import throughput_chart
    except ImportError:
        from markupsafe import Markup

        return Markup(f"<svg><!-- {len(series)} hours --></svg>")
    return throughput_chart(series)


class DirectReport:
    """The baseline: the report's queries, template and CSV, with no job platform around them."""

    def __init__(self, database_url: str, folder: Path) -> None:
        from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

        self.database_url = database_url
        self.folder = folder
        env = Environment(
            loader=FileSystemLoader(str(ROOT / "templates")),
            undefined=StrictUndefined,
            autoescape=select_autoescape(["html"]),
        )
        self.template = env.get_template("reports/jobs_summary.html")

    def run(self, since: datetime, until: datetime) -> int:
        """Write ``jobs_summary.html`` and ``.csv``; returns the rows in the CSV."""
        with sql_connect(self.database_url) as sql:
            data = summary(sql, since, until)
            row = sql.execute(f"SELECT count(*) FROM jobs WHERE {WINDOW}", {"since": since, "until": until})
            row_count = int(row.fetchone()[0])  # type: ignore[index]
            html = self.template.render(
                title=f"Jobs summary, {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC",
                summary=data,
                params={"since": since.isoformat(), "until": until.isoformat()},
                row_count=row_count,
                columns=COLUMNS,
                chart=chart(data["throughput"]),
                generated_at=datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            )
            (self.folder / "jobs_summary.html").write_text(html)
            written = 0
            with sql.transaction(), (self.folder / "jobs_summary.csv").open("w", newline="") as out:
                writer = csv.writer(out)
                writer.writerow(COLUMNS)
                cursor = sql.cursor(name="bench_report_rows")
                cursor.itersize = 5000
                cursor.execute(
                    f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE {WINDOW} ORDER BY created_at",
                    {"since": since, "until": until},
                )
                for values in cursor:
                    writer.writerow([v.isoformat() if isinstance(v, datetime) else v for v in values])
                    written += 1
                cursor.close()
        if written != row_count:
            raise BenchFailed(f"direct report: {written} CSV rows, {row_count} counted")
        return written


class ReportSection:
    name = "reports"
    title = "Reports: a `jobs_summary` job vs the same template rendered directly"

    def __init__(self, settings: dict[str, str], rows: int) -> None:
        # The cache off (and each run's window a second longer: no run can reuse another's report).
        self.settings = known_settings({**settings, "report_cache_ttl": "0"})
        self.settings["database_url"] = settings["database_url"] + "_reports"
        self.rows = rows
        self.since = START
        self.until = START + timedelta(seconds=rows * SPACING + 10)
        self.comparisons = [
            Comparison(
                "report",
                f"seconds per report, {rows:,} rows, html + csv",
                "s",
                "conveyor worker -p 1 -t 1 --queues reports (report cache off): from generate_report "
                "to the job's finished_at",
                "plain SQL (psycopg), the same template rendered with Jinja2, CSV with the csv module; "
                "files written",
                higher_is_better=False,
            )
        ]

    def config(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "formats": FORMATS,
            "database": self.settings["database_url"].rsplit("/", 1)[1],
        }

    def setup(self) -> None:
        prepare_database(self.settings["database_url"])
        self.sql = sql_connect(self.settings["database_url"])
        self.sql.execute("TRUNCATE jobs CASCADE")
        params = {"start": START, "spacing": SPACING, "rows": self.rows}
        self.sql.execute(SEED_JOBS, params)
        self.sql.execute(SEED_ATTEMPTS)
        self.sql.execute("VACUUM ANALYZE jobs")
        self.sql.execute("VACUUM ANALYZE job_attempts")
        self.folder = tempfile.TemporaryDirectory(prefix="conveyor-bench-reports-")
        self.direct = DirectReport(self.settings["database_url"], Path(self.folder.name))

    def close(self) -> None:
        if hasattr(self, "sql"):
            self.sql.execute("DELETE FROM jobs WHERE queue <> 'bench.seed'")
            self.sql.close()
        if hasattr(self, "folder"):
            self.folder.cleanup()

    def measure(self, run: int) -> dict[str, float]:
        until = self.until + timedelta(seconds=run)
        self.direct.run(self.since, self.since + timedelta(hours=1))  # warm-up
        started = time.perf_counter()
        rows = self.direct.run(self.since, until)
        baseline = time.perf_counter() - started
        conveyor, run_s, job_rows = self._conveyor(until)
        if job_rows != rows:
            raise BenchFailed(f"the report job saw {job_rows} rows, the direct report {rows}")
        return {"report.conveyor": conveyor, "report.baseline": baseline, "conveyor_job_run_s": run_s}

    def _params(self, until: datetime) -> dict[str, str]:
        return {"since": self.since.isoformat(), "until": until.isoformat()}

    def _conveyor(self, until: datetime) -> tuple[float, float, int]:
        """Seconds from enqueue to ``finished_at``, from ``started_at`` to it, and the job's row count."""
        args = ("--processes", "1", "--threads", "1", "--queues", "reports")
        with new_client(self.settings) as client, running_worker(self.settings, *args) as worker:
            warm = client.generate_report(
                "jobs_summary", self._params(self.since + timedelta(hours=1)), FORMATS
            )
            wait_succeeded(lambda: job_outcomes(self.sql, [warm.id]), 1, worker, "warm-up report")
            started = time.time()
            job = client.generate_report("jobs_summary", self._params(until), FORMATS)
            finished = wait_succeeded(lambda: job_outcomes(self.sql, [job.id]), 1, worker, "report job")
        row = self.sql.execute(
            "SELECT extract(epoch FROM finished_at - started_at), (result->>'rows')::int FROM jobs WHERE id = %s",
            (job.id,),
        ).fetchone()
        assert row is not None
        return finished - started, float(row[0] or 0.0), int(row[1] or 0)
