"""`make bench`: Conveyor side by side with the same work done without it, on the same services.

Sections (``--only`` picks some; each is repeated ``--runs`` times and medians are reported):

- ``noop``: no-op jobs through Conveyor, raw pika, bare Dramatiq and Celery (prefork, threads):
  enqueue, drain, latency, end-to-end, worker RSS (bench/noop.py).
- ``email``: ``send_email`` jobs against a plain smtplib loop (bench/emails.py).
- ``images``: 12 MP JPEG thumbnails against a plain Pillow process pool (bench/thumbnails.py).
- ``reports``: a ``jobs_summary`` report job against the same template rendered directly
  (bench/reports.py).
- ``metrics``: the no-op drain with ``conveyor worker --metrics-port`` (scraped every second)
  against without (``--jobs``, at most 5,000), and the hooks' CPU per attempt measured alone
  (bench/metrics.py).
- ``crypto`` (only when named): Conveyor with ``CONVEYOR_ENCRYPTION_KEYS`` against Conveyor
  without: enqueue, no-op drain (``--jobs``, at most 5,000) and emails (``--emails`` ÷ 2, at
  most 500) (bench/crypto.py).
- ``outbox`` (only when named): jobs committed with ``enqueue(..., session=S)`` and published by a
  replica's relays against ``enqueue_many``, and the commit-to-publish latency under that load
  (``--jobs``, at most 20,000) (bench/outbox.py).
- ``hosts`` (only when named; root): the no-op drain at 1, 2 and 3 network-namespace hosts, one
  ``conveyor worker -p 1 -t 8`` each (``--jobs``, at most 10,000), with the CPU of RabbitMQ,
  PostgreSQL, Redis and the replicas per job (bench/hosts.py).
- ``web`` (only when named): the dashboard on ``--web-rows`` seeded job rows (a database of its
  own, ``<--database-url>_web``): p50 and p95 of every page and its ``/api/`` twin, target
  p95 < 200 ms (bench/web.py).

Writes ``bench/results/<date>.{json,md,png}`` and ``latest.md`` (a run of some sections only:
``<date>-<sections>.*``, and ``latest.md`` is left alone). ``BENCH_NAMESPACE`` (default
``bench``) prefixes every queue, so that two benchmarks can share the servers.

    python bench/compare.py --runs 3
    python bench/compare.py --only email,images --runs 1 --emails 200 --images 6
    python bench/compare.py --only noop --enqueue-only --systems pika,dramatiq,conveyor  # producers only
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import report, targets
from bench.harness import Progress, compile_conveyor, prepare_database, wait_quiet
from bench.sections import Section, run_section
from bench.systems.base import (
    DEFAULT_AMQP_URL,
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    ENV_AMQP_URL,
    NAMESPACE,
    Config,
)
from bench.systems.rabbit import Rabbit

#: What a plain ``make bench`` runs; ``crypto`` (Conveyor against itself) is asked for by name.
DEFAULT_SECTIONS = ["noop", "email", "images", "reports", "metrics"]
SECTIONS = [*DEFAULT_SECTIONS, "crypto", "outbox", "hosts", "web"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT_SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)} (default {','.join(DEFAULT_SECTIONS)})",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of each section; medians are reported")
    parser.add_argument("--jobs", type=int, default=20000, help="no-op jobs per measurement (default 20000)")
    parser.add_argument("--emails", type=int, default=2000, help="emails per measurement (default 2000)")
    parser.add_argument("--images", type=int, default=200, help="thumbnails per measurement (default 200)")
    parser.add_argument(
        "--image-processes", default="1,2", help="process counts of the thumbnail comparison (default 1,2)"
    )
    parser.add_argument(
        "--report-rows", type=int, default=100000, help="job rows in the report (default 100000)"
    )
    parser.add_argument(
        "--web-rows", type=int, default=1_000_000, help="job rows behind the dashboard (default 1000000)"
    )
    parser.add_argument(
        "--web-requests", type=int, default=50, help="timed requests per dashboard page (default 50)"
    )
    parser.add_argument("--processes", type=int, default=2, help="no-op worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=8, help="no-op threads per worker process (default 8)")
    parser.add_argument(
        "--prefetch",
        type=int,
        default=32,
        help="no-op section: unacknowledged messages per worker thread, the same for every system "
        "(default 32, Conveyor's window for no-op jobs; Dramatiq's default is 2)",
    )
    parser.add_argument(
        "--enqueue-only",
        action="store_true",
        help="noop section: only the producers' enqueue rates (no workers, drain or latency)",
    )
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--probe-spacing-ms", type=float, default=20.0)
    parser.add_argument(
        "--systems",
        default="pika,dramatiq,celery_prefork,celery_threads,conveyor",
        help="no-op section: comma-separated subset of pika,dramatiq,celery_prefork,celery_threads,conveyor",
    )
    parser.add_argument("--amqp-url", default=os.environ.get(ENV_AMQP_URL, DEFAULT_AMQP_URL))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown section(s) {', '.join(sorted(unknown))}; known: {', '.join(SECTIONS)}")
    return args


def machine_info(rabbit: Rabbit, config: Config) -> dict[str, Any]:
    import psycopg
    import redis

    packages = {}
    for name in ("dramatiq", "celery", "kombu", "pika", "psycopg", "SQLAlchemy", "redis"):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = "not installed"
    with psycopg.connect(config.database_url.replace("+psycopg", "")) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "rabbitmq": rabbit.server_version(),
        "postgresql": row[0].split()[0] if row else "?",
        "redis": redis.Redis.from_url(config.redis_url).info("server")["redis_version"],
        "packages": packages,
        "conveyor_commit": commit.stdout.strip() or "?",
        "loadavg_at_start": os.getloadavg(),
    }


def work_section(name: str, args: argparse.Namespace, rabbit: Rabbit) -> Section:
    """The real-work section ``name``, on the benchmark's services and namespace."""
    settings = {
        "broker_url": args.amqp_url,
        "database_url": args.database_url,
        "redis_url": args.redis_url,
        "namespace": NAMESPACE,
    }
    if name == "email":
        from bench.emails import EmailSection

        return EmailSection(settings, rabbit, args.emails)
    if name == "images":
        from bench.thumbnails import ThumbnailSection

        processes = [int(p) for p in args.image_processes.split(",") if p.strip()]
        return ThumbnailSection(settings, rabbit, args.images, processes)
    if name == "crypto":
        from bench.crypto import CryptoSection

        # Its own sizes, at most 5,000 jobs and 500 emails a side: it measures each twice.
        return CryptoSection(settings, rabbit, min(args.jobs, 5000), max(min(args.emails, 1000) // 2, 2))
    if name == "hosts":
        from bench.hosts import HostsSection

        return HostsSection(settings, rabbit, min(args.jobs, 10000))
    if name == "metrics":
        from bench.metrics import MetricsSection

        return MetricsSection(settings, rabbit, min(args.jobs, 5000))
    if name == "outbox":
        from bench.outbox import OutboxSection

        return OutboxSection(settings, rabbit, min(args.jobs, 20000))
    from bench.reports import ReportSection

    return ReportSection(settings, args.report_rows)


def run_all(args: argparse.Namespace, config: Config, rabbit: Rabbit, log: Progress) -> dict[str, Any]:
    """Each chosen section in turn; the sections part of the results (those done when interrupted)."""
    sections: dict[str, Any] = {}
    try:
        for name in args.sections:
            wait_quiet(log)
            if name == "noop":
                from bench.noop import run_noop

                sections[name] = run_noop(args, config, rabbit, log)
            elif name == "web":
                from bench.web import WebOptions, run_web

                options = WebOptions(
                    args.database_url + "_web", args.amqp_url, rows=args.web_rows, requests=args.web_requests
                )
                sections[name] = run_web(options, args.runs, log)
            else:
                sections[name] = run_section(work_section(name, args, rabbit), args.runs, log)
            if sections[name].get("interrupted"):
                break
    except KeyboardInterrupt:
        log("interrupted: reporting the sections done so far")
    return sections


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = Progress()
    os.environ[ENV_AMQP_URL] = args.amqp_url
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"conveyor-bench-{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    config = Config(
        amqp_url=args.amqp_url,
        redis_url=args.redis_url,
        database_url=args.database_url,
        processes=args.processes,
        threads=args.threads,
        log_dir=log_dir,
        prefetch_per_thread=args.prefetch,
    )
    wait_quiet(log)
    rabbit = Rabbit(config.amqp_url)
    prepare_database(args.database_url)  # a fresh clone has no benchmark database yet
    compile_conveyor()
    started = datetime.now().astimezone()
    results: dict[str, Any] = {
        "date": started.date().isoformat(),
        "started_at": started.isoformat(timespec="seconds"),
        "config": {"runs": args.runs, "sections": args.sections, "namespace": NAMESPACE},
        "machine": machine_info(rabbit, config),
    }
    log(f"sections {', '.join(args.sections)}, {args.runs} run(s) each; namespace {NAMESPACE}")
    results["sections"] = run_all(args, config, rabbit, log)
    finished = datetime.now().astimezone()
    results["finished_at"] = finished.isoformat(timespec="seconds")
    results["duration_s"] = round((finished - started).total_seconds(), 1)
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    results["targets"] = targets.check_all(results)
    whole = set(args.sections) >= set(DEFAULT_SECTIONS) and not args.enqueue_only
    stem = results["date"] if whole else f"{results['date']}-{'-'.join(args.sections)}"
    if args.enqueue_only:
        stem += "-enqueue"
    paths = report.write_all(results, args.out, stem, latest=whole)
    print()
    print(report.markdown(results))
    log("wrote " + ", ".join(str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in paths))
    rabbit.close()
    failed = [
        s for s in results["sections"].values() if s.get("error") or any(r.get("error") for r in s["runs"])
    ]
    return 1 if failed or len(results["sections"]) < len(args.sections) else 0


if __name__ == "__main__":
    sys.exit(main())
