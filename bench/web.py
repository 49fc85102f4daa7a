"""The dashboard on a million job rows: p50 and p95 of every page, as HTML and as its /api/ twin.

A database of its own (``<bench database>_web``, or ``--database-url``) is seeded in PostgreSQL
itself (``INSERT … SELECT generate_series``: a million rows take about a minute):

- ``--rows`` jobs over 30 days, 90 % in the measured namespace and 10 % in another; four kinds
  with realistic JSONB payloads (addresses, templates, contexts, image paths, report options);
  91 % succeeded, 4 % failed (five kinds of error, with the address or file in the text), 1 %
  cancelled, 1 % retrying, 3 % queued (a third of them delayed), and one in 10,000 running (as
  many as a large cluster's worker threads);
- one ``job_attempts`` row per attempt (failed jobs ran four times, each with its traceback);
- ``--dead`` of the failed jobs' messages on their queues' dead-letter queues (``.XQ``) in
  RabbitMQ, their rows marked with their error fingerprint as the worker that dead-letters a job
  marks it (the dead-letters page groups those rows and counts the queues' messages).

Then ``conveyor web`` serves that namespace (read-only: no token) and each probe, a page and its
``/api/`` twin, is requested ``--requests`` times in turn (round robin, one keep-alive
connection, after two untimed requests each): every page, the jobs page filtered by status, by
kind and both, a time range, a search by id, by error text and by payload (a JSON object and
``key=value``), a job's detail, and a deep keyset page (the ``older`` link followed
``--deep-pages`` times). Timings are the whole request as the client sees it; the target is
p95 < 200 ms for every probe. A probe that does not answer 200 is reported, not timed.

Runs with the others (``python bench/compare.py --only web --runs 1``) or alone::

    python bench/web.py --rows 1000000 --requests 50
    python bench/web.py --reuse                      # skip the seeding when the rows exist
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import BenchFailed, Progress, conveyor_env, prepare_database, sql_connect
from bench.targets import WEB_P95_MS

#: The dashboard's namespace: ``BENCH_NAMESPACE`` (default ``bench``) and ``web``, so that two
#: builds benchmarking at once do not share dead-letter queues.
NAMESPACE = os.environ.get("BENCH_NAMESPACE", "bench") + "web"
#: The issue's target: every page's p95 under this many milliseconds.
TARGET_P95_MS = WEB_P95_MS
#: Seconds between two seeded jobs' creation for a million rows: 30 days.
DAYS = 30

_SEED_JOBS = """
INSERT INTO jobs (id, kind, queue, status, payload, result, error, attempts, max_retries, progress,
                  created_at, started_at, finished_at, eta)
SELECT gen_random_uuid(), k.kind, (CASE WHEN g %% 10 = 0 THEN 'other' ELSE %(ns)s END) || '.' || k.queue,
       s.status,
       CASE k.kind
         WHEN 'email' THEN jsonb_build_object(
           'to', 'user' || (g %% 50000) || '@example.com', 'subject', 'Your invoice ' || g,
           'template', (ARRAY['welcome', 'invoice', 'reset_password'])[1 + g %% 3],
           'context', jsonb_build_object('name', 'Customer ' || (g %% 50000), 'order_id', g,
                                         'amount', round((g %% 10000) / 100.0, 2)))
         WHEN 'image' THEN jsonb_build_object('source', 'uploads/photo-' || g || '.jpg',
                                              'width', 256, 'height', 256, 'format', 'webp')
         WHEN 'report' THEN jsonb_build_object('report', 'jobs_summary', 'format', 'pdf',
                                               'email_to', 'ops' || (g %% 100) || '@example.com')
         ELSE jsonb_build_object('sleep', 0)
       END,
       CASE WHEN s.status = 'succeeded' THEN jsonb_build_object('ok', true, 'attempt', 1) END,
       CASE WHEN s.status IN ('failed', 'retrying') THEN
         (ARRAY['TransientError: SMTP 421 mail.example.com: too many connections from 10.0.0.' || (g %% 250),
                'PermanentError: invalid recipient user' || (g %% 50000) || '@example.com',
                'ValueError: image payload: cannot identify image file uploads/photo-' || g || '.jpg',
                'TimeoutError: report query exceeded 30 s',
                'ConnectionRefusedError: [Errno 111] Connection refused'])[1 + (g / 7) %% 5]
       END,
       CASE s.status WHEN 'queued' THEN 0 WHEN 'failed' THEN 4 WHEN 'retrying' THEN 2
                     ELSE 1 + (g %% 17 = 0)::int END,
       3, CASE WHEN s.status = 'running' THEN (g %% 100)::int END,
       t.created,
       CASE WHEN s.status <> 'queued' THEN t.created + interval '0.2 s' END,
       CASE WHEN s.status IN ('succeeded', 'failed', 'cancelled') THEN t.created + interval '0.9 s' END,
       CASE WHEN s.status = 'retrying' OR (s.status = 'queued' AND g %% 100 = 99)
            THEN now() + interval '1 hour' END
FROM generate_series(1, %(rows)s) g,
LATERAL (SELECT now() - make_interval(secs => (%(rows)s - g) * %(spacing)s) AS created) t,
LATERAL (SELECT (ARRAY['email', 'email', 'email', 'email', 'email', 'noop', 'noop', 'image', 'image', 'report'])
                [1 + (g / 100) %% 10] AS kind) k0,
LATERAL (SELECT k0.kind, CASE k0.kind WHEN 'noop' THEN 'default' WHEN 'image' THEN 'images'
                                      WHEN 'report' THEN 'reports' ELSE 'email' END AS queue) k,
LATERAL (SELECT CASE WHEN g %% 10000 = 97 THEN 'running'
                     WHEN g %% 100 < 90 OR g %% 100 = 97 THEN 'succeeded' WHEN g %% 100 < 94 THEN 'failed'
                     WHEN g %% 100 = 94 THEN 'cancelled' WHEN g %% 100 = 98 THEN 'retrying'
                     ELSE 'queued' END AS status) s
"""
# Each attempt: the earlier ones retried with the job's error, the last one the job's outcome.
_SEED_ATTEMPTS = """
INSERT INTO job_attempts (job_id, attempt, worker, host, pid, started_at, finished_at, outcome, error, traceback)
SELECT j.id, a, 'worker-' || (a % 4), 'host-' || (abs(hashtext(j.id::text)) % 3), 4000 + a,
       j.started_at - make_interval(secs => (j.attempts - a) * 2),
       CASE WHEN a = j.attempts AND j.status = 'running' THEN NULL
            ELSE j.started_at - make_interval(secs => (j.attempts - a) * 2) + interval '0.7 s' END,
       CASE WHEN a < j.attempts THEN 'retrying' WHEN j.status = 'running' THEN NULL ELSE j.status END,
       CASE WHEN a < j.attempts OR j.status = 'failed' THEN coalesce(j.error, 'TransientError: try again') END,
       CASE WHEN a < j.attempts OR j.status = 'failed' THEN
         'Traceback (most recent call last):' || chr(10) ||
         '  File "workers/runner.py", line 212, in run_attempt' || chr(10) ||
         '  File "jobs/kinds/' || j.kind || '.py", line 88, in run' || chr(10) ||
         coalesce(j.error, 'TransientError: try again') END
FROM jobs j, generate_series(1, j.attempts) a
WHERE j.attempts > 0
"""
#: The probe of the jobs page ``--deep-pages`` pages back.
DEEP = "jobs, deep keyset page"
_DEAD_JOBS = """
SELECT id::text, kind, queue, payload, error FROM jobs
WHERE status = 'failed' AND queue LIKE %(prefix)s ORDER BY created_at DESC LIMIT %(dead)s
"""
# What the worker writes when it dead-letters a job: the error fingerprint's key on its row.
_MARK_DEAD = "UPDATE jobs SET dead_fingerprint = %s WHERE id = %s"


def seed(database_url: str, rows: int, log: Progress) -> None:
    """``rows`` jobs and their attempts, replacing whatever the database held."""
    started = time.monotonic()
    with sql_connect(database_url) as sql:
        sql.execute("TRUNCATE jobs, job_attempts, delayed_messages, audit_log CASCADE")
        spacing = DAYS * 86400 / max(rows, 1)
        sql.execute(_SEED_JOBS, {"ns": NAMESPACE, "rows": rows, "spacing": spacing})
        sql.execute(_SEED_ATTEMPTS)
        sql.execute("VACUUM ANALYZE jobs")
        sql.execute("VACUUM ANALYZE job_attempts")
        attempts = sql.execute("SELECT count(*) FROM job_attempts").fetchone()
    log(
        f"web: seeded {rows:,} jobs and {attempts[0] if attempts else 0:,} attempts in {time.monotonic() - started:.0f} s"
    )


def dead_letter(settings: dict[str, str], database_url: str, count: int) -> int:
    """Put ``count`` failed jobs' messages on their dead-letter queues (emptied first)."""
    import dramatiq
    import pika

    from jobs.broker import build_broker
    from jobs.fingerprint import fingerprint
    from jobs.kinds import KINDS
    from jobs.settings import Settings

    config = Settings(broker_url=settings["broker_url"], database_url=database_url, namespace=NAMESPACE)
    broker = build_broker(config)
    queues = sorted({config.queue_name(kind.queue) for kind in KINDS.values()})
    for queue in queues:
        broker.declare_queue(queue, ensure=True)
    broker.close()
    with sql_connect(database_url) as sql:
        rows = sql.execute(_DEAD_JOBS, {"prefix": f"{NAMESPACE}.%", "dead": count}).fetchall()
        sql.execute("UPDATE jobs SET dead_fingerprint = NULL WHERE dead_fingerprint IS NOT NULL")
        with sql.cursor() as cursor:
            marks = [(fingerprint(kind, error).key, job_id) for job_id, kind, _, _, error in rows]
            cursor.executemany(_MARK_DEAD, marks)
    connection = pika.BlockingConnection(pika.URLParameters(settings["broker_url"]))
    try:
        channel = connection.channel()
        for queue in queues:
            channel.queue_purge(f"{queue}.XQ")
        for job_id, kind, queue, payload, _ in rows:
            message = dramatiq.Message(
                queue_name=queue,
                actor_name=KINDS[kind].actor_name,
                args=(),
                kwargs=payload,
                options={"retries": 3, "traceback": "Traceback (most recent call last): …"},
                message_id=job_id,
            )
            properties = pika.BasicProperties(delivery_mode=2, priority=0)
            channel.basic_publish("", f"{queue}.XQ", message.encode(), properties)
    finally:
        connection.close()
    return len(rows)


@dataclass(frozen=True)
class Probe:
    """A path to time: a page (``html``) or its ``/api/`` twin (``api``)."""

    label: str
    path: str


def _twins(label: str, path: str) -> list[Probe]:
    api = "/api/overview" + path[1:] if path == "/" or path.startswith("/?") else "/api" + path
    return [Probe(f"{label} (html)", path), Probe(f"{label} (api)", api)]


def _jobs(**params: str) -> str:
    return "/jobs?" + urlencode(params)


def probes(database_url: str, deep: str) -> list[Probe]:
    """Every page and search to time, with ids and texts that exist in the seeded rows."""
    with sql_connect(database_url) as sql:
        row = sql.execute(
            "SELECT id::text FROM jobs WHERE queue = %s AND status = 'failed' ORDER BY created_at LIMIT 1 "
            "OFFSET (SELECT count(*) / 2 FROM jobs WHERE queue = %s AND status = 'failed')",
            (f"{NAMESPACE}.email", f"{NAMESPACE}.email"),
        ).fetchone()
    if row is None:
        raise BenchFailed("no failed email job to search for: seed the database first (no --reuse)")
    job_id = row[0]
    pages = [
        ("overview", "/"),
        ("overview, last 24 hours", "/?range=24h"),
        ("queues", "/queues"),
        ("workers", "/workers"),
        ("schedule", "/schedule"),
        ("dead letters", "/dead"),
        ("jobs", "/jobs"),
        ("jobs, status=failed", _jobs(status="failed")),
        ("jobs, kind=report", _jobs(kind="report")),
        ("jobs, status=failed kind=image", _jobs(status="failed", kind="image")),
        ("jobs, queue=reports since 1d", _jobs(queue="reports", since="1d")),
        ("jobs, search by id", _jobs(q=job_id)),
        ("jobs, search error text", _jobs(q="too many connections")),
        ("jobs, search payload JSON", _jobs(q=json.dumps({"to": "user4242@example.com"}))),
        ("jobs, search payload key=value", _jobs(q="context.order_id=424242")),
        ("job detail", f"/jobs/{job_id}"),
    ]
    pages.append((DEEP, deep))
    return [probe for label, path in pages for probe in _twins(label, path)]


class Client:
    """One keep-alive HTTP connection to the dashboard; reconnects when the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def get(self, path: str) -> tuple[int, bytes]:
        for attempt in (1, 2):
            try:
                self.connection.request("GET", path)
                response = self.connection.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, ConnectionError):
                self.connection.close()
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.connection.close()


def deep_page(client: Client, hops: int) -> str | None:
    """The jobs page ``hops`` pages back, following each page's ``older`` link (None: no link)."""
    path = "/jobs"
    for _ in range(hops):
        status, body = client.get("/api" + path)
        if status != 200:
            return None
        older = json.loads(body).get("older")
        if not older:
            return None
        path = str(older)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running_web(settings: dict[str, str]) -> Iterator[int]:
    """`conveyor web` on a free port for ``settings``' namespace (read-only); its port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "web", "--port", str(port)],
        env=conveyor_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=None if os.environ.get("BENCH_DEBUG") else subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise BenchFailed(f"conveyor web exited with {process.returncode} (BENCH_DEBUG=1 shows why)")
            with contextlib.suppress(OSError):
                probe = Client(port)
                status, _ = probe.get("/login")
                probe.close()
                if status == 200:
                    break
            if time.monotonic() > deadline:
                raise BenchFailed("conveyor web did not answer within 30 s")
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(fraction * len(ordered)))) - 1]


def measure(port: int, todo: list[Probe], requests: int) -> tuple[dict[str, float], dict[str, str]]:
    """``<label>.p50`` and ``<label>.p95`` (ms) of each probe answering 200; why the others did not."""
    client = Client(port)
    timings: dict[str, list[float]] = {probe.label: [] for probe in todo}
    errors: dict[str, str] = {}
    try:
        for round_ in range(requests + 2):
            for probe in todo:
                if probe.label in errors:
                    continue
                started = time.perf_counter()
                status, body = client.get(probe.path)
                elapsed = (time.perf_counter() - started) * 1000
                if status != 200:
                    errors[probe.label] = f"{status} on {probe.path}: {body[:200].decode(errors='replace')}"
                elif round_ >= 2:  # two untimed rounds: connections, caches, the pool warm
                    timings[probe.label].append(elapsed)
    finally:
        client.close()
    metrics: dict[str, float] = {}
    for label, values in timings.items():
        if values and label not in errors:
            metrics[f"{label}.p50"] = round(statistics.median(values), 2)
            metrics[f"{label}.p95"] = round(percentile(values, 0.95), 2)
            metrics[f"{label}.max"] = round(max(values), 2)
    return metrics, errors


@dataclass
class WebOptions:
    """The section's sizes and services (``rabbitmq_api_url``: the queues page's management figures)."""

    database_url: str
    broker_url: str
    rows: int = 1_000_000
    dead: int = 2000
    requests: int = 50
    deep_pages: int = 100
    reuse: bool = False
    rabbitmq_api_url: str = os.environ.get("BENCH_RABBITMQ_API_URL", "http://guest:guest@127.0.0.1:15672")


def run_web(options: WebOptions, runs: int, log: Progress) -> dict[str, Any]:
    """Seed, start `conveyor web`, time every probe ``runs`` times; the section's results."""
    started = time.monotonic()
    settings = {
        "broker_url": options.broker_url,
        "database_url": options.database_url,
        "namespace": NAMESPACE,
        "rabbitmq_api_url": options.rabbitmq_api_url,
    }
    result: dict[str, Any] = {
        "title": f"Web dashboard: every page on {options.rows:,} job rows (p50/p95 ms, target p95 < {TARGET_P95_MS:g} ms)",
        "config": {
            "rows": options.rows,
            "dead_letters": options.dead,
            "requests_per_probe": options.requests,
            "deep_pages": options.deep_pages,
            "database": options.database_url.rsplit("/", 1)[1],
        },
        "target_ms": TARGET_P95_MS,
        "probes": [],
        "runs": [],
    }
    try:
        prepare_database(options.database_url)  # migrated: a reused database gets the new indexes too
        if not options.reuse:
            seed(options.database_url, options.rows, log)
        result["config"]["dead_letters"] = dead_letter(settings, options.database_url, options.dead)
        with running_web(settings) as port:
            client = Client(port)
            deep = deep_page(client, options.deep_pages)
            client.close()
            todo = probes(options.database_url, deep or "/jobs")
            result["probes"] = [{"label": p.label, "path": p.path} for p in todo]
            for run in range(1, runs + 1):
                log(f"web run {run}/{runs}: {len(todo)} probes × {options.requests} requests")
                metrics, errors = measure(port, todo, options.requests)
                if deep is None:  # timed as /jobs above: it is not a deep page
                    for twin in ("html", "api"):
                        label = f"{DEEP} ({twin})"
                        errors[label] = "no `older` link to follow from /api/jobs"
                        for q in ("p50", "p95", "max"):
                            metrics.pop(f"{label}.{q}", None)
                result["runs"].append({"run": run, "metrics": metrics, "errors": errors, "error": None})
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        log(f"web: FAILED ({result['error']})")
    unanswered = sorted({label for run in result["runs"] for label in run["errors"]})
    if unanswered and not result.get("error"):
        result["error"] = f"{len(unanswered)} probe(s) did not answer 200: {', '.join(unanswered)}"
    from bench.sections import medians

    result["medians"] = medians(result["runs"])
    result["slowest_p95_ms"] = max(
        (v for k, v in result["medians"].items() if k.endswith(".p95")), default=None
    )
    result["duration_s"] = round(time.monotonic() - started, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/conveyor_bench"
        )
        + "_web",
    )
    parser.add_argument(
        "--amqp-url", default=os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dead", type=int, default=2000, help="dead-lettered messages (default 2000)")
    parser.add_argument("--requests", type=int, default=50, help="timed requests per probe (default 50)")
    parser.add_argument("--deep-pages", type=int, default=100, help="older links followed (default 100)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--reuse", action="store_true", help="keep the rows already seeded")
    args = parser.parse_args()
    options = WebOptions(
        args.database_url, args.amqp_url, args.rows, args.dead, args.requests, args.deep_pages, args.reuse
    )
    section = run_web(options, args.runs, Progress())
    from bench.report import web_markdown

    print("\n".join(["", f"## {section['title']}", "", *web_markdown(section)]))


if __name__ == "__main__":
    main()
