"""``conveyor``: run workers, enqueue jobs and inspect them. Parsing and presentation only."""

from __future__ import annotations

import importlib
import logging
import sys
import time
from typing import Any

import click
from rich.progress import Progress, TaskID
from rich.table import Table

from console.admin import config, prune_command, queues, stats, top
from console.audit import audit
from console.common import (
    AppState,
    ConveyorGroup,
    Seconds,
    banner,
    echo_json,
    err,
    fail,
    json_option,
    out,
    service_options,
)
from console.dlq import dlq
from console.enqueue import enqueue
from console.exit_codes import EXIT_FAILURE
from console.exporter import exporter
from console.gdpr import gdpr
from console.inspect import artifacts
from console.jobs import jobs
from console.keys import keys
from console.schedule import schedule, scheduler
from console.text import cell
from console.views import jobs_table
from console.web.command import web
from console.workers import workers
from jobs import defaults
from jobs.admin.audit import Actor
from jobs.admin.operations import check_database, upgrade_schema
from jobs.broker import check_broker
from jobs.errors import SettingsError
from jobs.logs import configure_logging
from jobs.services import check_redis_certificate
from jobs.settings import Settings, check_tls_files, mask_url
from workers.bench import run_bench
from workers.demo import embedded_settings, run_demo
from workers.runtime import resolve_queues
from workers.supervisor import Supervisor

EPILOG = """\b
Examples:
  conveyor db upgrade
  conveyor worker --processes 2 --threads 8
  conveyor enqueue noop --sleep 0.5
  conveyor jobs list --status failed --json
  conveyor ping
"""


@click.group(cls=ConveyorGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@service_options
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
# The version is pyproject.toml's, read from the installed distribution's metadata.
@click.version_option(package_name="conveyor", prog_name="conveyor", message="%(prog)s %(version)s")
@click.pass_context
def main(ctx: click.Context, /, verbose: bool, **overrides: Any) -> None:
    """Conveyor: email, report and image jobs on RabbitMQ, Dramatiq and PostgreSQL."""
    configure_logging(logging.DEBUG if verbose else logging.WARNING)
    state = AppState(overrides)
    ctx.obj = state
    ctx.call_on_close(state.close)


main.add_command(enqueue)
main.add_command(jobs)
main.add_command(web)
main.add_command(artifacts)
main.add_command(queues)
main.add_command(stats)
main.add_command(top)
main.add_command(prune_command, name="prune")
main.add_command(config)
main.add_command(workers)
main.add_command(dlq)
main.add_command(keys)
main.add_command(scheduler)
main.add_command(schedule)
main.add_command(audit)
main.add_command(gdpr)
main.add_command(exporter)


# ---------------------------------------------------------------- worker


@main.command()
@click.option(
    "--processes",
    "-p",
    default=defaults.DEFAULT_WORKER_PROCESSES,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Worker processes.",
)
@click.option(
    "--threads",
    "-t",
    default=defaults.DEFAULT_WORKER_THREADS,
    show_default=True,
    type=click.IntRange(1, 1024),
    help="Threads per process.",
)
@click.option("--queues", "-Q", default="", help="Comma-separated queues (e.g. email,images); default: all.")
@click.option(
    "--shutdown-timeout",
    default=defaults.DEFAULT_SHUTDOWN_TIMEOUT,
    show_default=True,
    type=Seconds(0),
    help="Seconds to let in-flight jobs finish after SIGTERM.",
)
@click.option(
    "--include",
    "-I",
    "modules",
    multiple=True,
    metavar="MODULE",
    help="Import MODULE first (repeatable): it may register job kinds of its own with jobs.kinds.register.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    metavar="PORT",
    help="Serve /metrics and /healthz of this replica on PORT (env CONVEYOR_METRICS_PORT; "
    "bind address CONVEYOR_METRICS_HOST, default 127.0.0.1).",
)
@click.pass_obj
def worker(
    state: AppState,
    processes: int,
    threads: int,
    queues: str,
    shutdown_timeout: float,
    modules: tuple[str, ...],
    metrics_port: int | None,
) -> None:
    """Run one worker replica; start more, on any host, to scale out.

    SIGTERM (or Ctrl-C) lets in-flight jobs finish for up to --shutdown-timeout seconds, hands
    the rest back to RabbitMQ and exits; a second SIGTERM stops at once. Nothing is lost either way.
    """
    settings = state.settings
    # JSON from the first line on: what the included modules log, and a start-up failure, too.
    configure_logging(logging.INFO, settings.log_format)
    for module in modules:
        _include(module)
    settings = settings.with_overrides(metrics_port=metrics_port)
    if settings.is_embedded:
        raise SettingsError("conveyor worker needs RabbitMQ: memory:// lives inside one process (try `demo`)")
    queue_names = resolve_queues(settings, queues.split(","))
    _check_services(settings)
    banner(
        settings,
        f"conveyor worker: {processes} process(es) × {threads} threads, queues: "
        f"{', '.join(sorted(queue_names)) or 'all'}; {settings!r}",
    )
    sys.exit(
        Supervisor(
            settings,
            processes=processes,
            threads=threads,
            queues=queue_names,
            shutdown_timeout=shutdown_timeout,
            include=modules,
        ).run()
    )


def _include(module: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module!r}: {exc}", param_hint="--include") from None


def _check_services(settings: Settings) -> None:
    """Fail fast, with exit code 3, when RabbitMQ or the database is down at start-up, or when
    a service's TLS certificate fails verification (Redis being down is tolerated)."""
    check_tls_files(settings)
    check_database(settings.database_url)
    check_broker(settings)
    check_redis_certificate(settings)


# ---------------------------------------------------------------- ping, db, demo


@main.command()
@click.option("--timeout", default=10.0, show_default=True, type=Seconds(0.1), help="Seconds to wait.")
@json_option
@click.pass_obj
def ping(state: AppState, timeout: float, as_json: bool) -> None:
    """Send a noop job through the whole stack and time its round trip."""
    started = time.perf_counter()
    job = state.client.enqueue("noop")
    try:
        job.wait(timeout=timeout)
    except TimeoutError:
        fail(
            f"no worker finished ping job {job.id} within {timeout:g} s: is `conveyor worker` running?",
            EXIT_FAILURE,
        )
    elapsed = (time.perf_counter() - started) * 1000
    worker_id = next((a.worker for a in job.history()), "?")
    if as_json:
        echo_json({"job_id": job.id, "round_trip_ms": round(elapsed, 2), "worker": worker_id}, indent=None)
    else:
        click.echo(f"pong: job {job.id} ran on {worker_id}, round trip {elapsed:.1f} ms")


@main.command()
@click.option(
    "--jobs",
    "job_count",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="Jobs in the backlog.",
)
@click.option("--sleep", default=0.0, show_default=True, type=Seconds(0, 60), help="Seconds each job sleeps.")
@json_option
@click.pass_obj
def bench(state: AppState, job_count: int, sleep: float, as_json: bool) -> None:
    """Load the configured stack (workers must run): enqueue rate, processing rate, latency p50/p99."""
    with Progress(console=err, transient=True, disable=as_json) as progress:
        tasks: dict[str, TaskID] = {}

        def on_progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=total)
            progress.update(tasks[phase], completed=done)

        with state.ops.audit("bench", selection={"jobs": job_count, "sleep": sleep}) as record:
            result = run_bench(state.client, jobs=job_count, sleep=sleep, on_progress=on_progress)
            record.count = result.jobs
    if as_json:
        echo_json(result.to_dict())
        return
    click.echo(
        f"{result.jobs} noop jobs (sleep {result.sleep:g} s): enqueue {result.enqueue_per_second:,.0f}/s, "
        f"processed {result.processed_per_second:,.0f}/s; enqueue-to-start latency "
        f"p50 {result.latency_p50_ms:.1f} ms, p99 {result.latency_p99_ms:.1f} ms; {result.failed} failed"
    )


@main.group()
def db() -> None:
    """Manage the job store's schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target Alembic revision.")
@click.pass_obj
def db_upgrade(state: AppState, revision: str) -> None:
    """Create the database when it is missing, then apply migrations."""

    url = state.settings.database_url
    created, before, after = upgrade_schema(url, revision, audit=(state.settings.namespace, Actor.cli()))
    if created:
        click.echo(f"created database {mask_url(url)}")
    click.echo(
        f"schema at {after} (was {before or 'empty'})" if before != after else f"schema up to date at {after}"
    )


@db.command("partitions")
@json_option
@click.pass_obj
def db_partitions(state: AppState, as_json: bool) -> None:
    """List the partitions of the jobs table: one a day, and the default one (PostgreSQL)."""

    partitions = state.ops.partitions()
    if as_json:
        echo_json([p.to_dict() for p in partitions])
        return
    if not partitions:
        click.echo("the jobs table has no partitions (SQLite, or the schema is older than 0017)")
        return
    table = Table(title=f"{len(partitions)} partition(s) of jobs", title_justify="left")
    for column in ("partition", "holds", "rows (estimate)", "size"):
        table.add_column(column, justify="right" if column in ("rows (estimate)", "size") else "left")
    for p in partitions:
        holds = f"ids made on {p.day.isoformat()}" if p.day else "other ids (UUIDv4, rows of before 0017)"
        table.add_row(p.name, holds, f"{p.rows:,}", f"{p.bytes / 1048576:,.1f} MiB")
    out.print(table)


@main.command()
@json_option
@click.pass_obj
def demo(state: AppState, as_json: bool) -> None:
    """Run a handful of jobs in-process (in-memory broker, SQLite, .eml outbox) and show their rows."""

    settings = embedded_settings(state.settings)
    configure_logging(logging.ERROR)
    if not as_json:
        out.print(f"[bold]Conveyor demo[/] — embedded stack: {cell(repr(settings))}")
    results = run_demo(settings, on_event=(lambda _line: None) if as_json else out.print)
    if as_json:
        echo_json([{"title": title, **info.to_dict()} for title, info in results])
        return
    out.print(jobs_table([info for _, info in results], notes=[title for title, _ in results]))
    out.print(
        f"Job rows are in {mask_url(settings.database_url)}; run `conveyor --database-url "
        f"{mask_url(settings.database_url)} jobs show ID` to see one's attempts.",
        markup=False,
    )


if __name__ == "__main__":
    main()
