"""``conveyor``: run workers, enqueue jobs and inspect them. Parsing and presentation only."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table

from jobs import defaults
from jobs.broker import check_broker
from jobs.errors import ConveyorError, JobFailed, SettingsError
from jobs.images.shorthand import parse_operation
from jobs.logs import configure_logging, mask_secrets
from jobs.settings import Settings, mask_url
from jobs.status import JobStatus
from jobs.store import AttemptInfo, Database, JobInfo
from jobs.store.migrate import ensure_database, upgrade
from producers import Client, DeliveryOptions
from workers.demo import embedded_settings, run_demo
from workers.runtime import resolve_queues
from workers.supervisor import Supervisor

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

F = TypeVar("F", bound=Callable[..., Any])
# Piped output is not cut at 80 columns: ids and errors stay whole for grep.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class AppState:
    """Per-command context: settings and a client, built on first use."""

    def __init__(self, overrides: dict[str, Any]) -> None:
        self.overrides = overrides

    @cached_property
    def settings(self) -> Settings:
        return Settings.from_env(os.environ, **self.overrides)

    @cached_property
    def client(self) -> Client:
        if self.settings.is_embedded:
            raise SettingsError(
                "memory:// lives inside one process, so a shell command cannot reach a worker: "
                "use RabbitMQ, or `conveyor demo`"
            )
        return Client(self.settings)

    def close(self) -> None:
        if "client" in self.__dict__:
            self.client.close()


class ConveyorGroup(click.Group):
    """Turns Conveyor's errors into one line on stderr and the right exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConveyorError as exc:
            fail(str(exc), exc.exit_code)
        except ValueError as exc:
            fail(str(exc), EXIT_USAGE)


def fail(message: str, code: int) -> NoReturn:
    err.print(f"conveyor: error: {mask_secrets(message)}", markup=False)
    sys.exit(code)


def service_options(command: F) -> F:
    """The connection options every command shares; each shows its environment variable."""
    options = [
        click.option("--broker-url", envvar="CONVEYOR_BROKER_URL", show_envvar=True, help="RabbitMQ URL."),
        click.option(
            "--database-url", envvar="CONVEYOR_DATABASE_URL", show_envvar=True, help="Job store URL."
        ),
        click.option("--redis-url", envvar="CONVEYOR_REDIS_URL", show_envvar=True, help="Redis URL."),
        click.option(
            "--namespace", envvar="CONVEYOR_NAMESPACE", show_envvar=True, help="Prefix of queues and keys."
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def json_option(command: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(command)


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
@click.pass_context
def main(ctx: click.Context, /, verbose: bool, **overrides: Any) -> None:
    """Conveyor: email, report and image jobs on RabbitMQ, Dramatiq and PostgreSQL."""
    configure_logging(logging.DEBUG if verbose else logging.WARNING)
    state = AppState(overrides)
    ctx.obj = state
    ctx.call_on_close(state.close)


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
    type=click.FloatRange(0),
    help="Seconds to let in-flight jobs finish after SIGTERM.",
)
@click.pass_obj
def worker(state: AppState, processes: int, threads: int, queues: str, shutdown_timeout: float) -> None:
    """Run one worker replica; start more, on any host, to scale out.

    SIGTERM (or Ctrl-C) lets in-flight jobs finish, then exits.
    """

    settings = state.settings
    if settings.is_embedded:
        raise SettingsError("conveyor worker needs RabbitMQ: memory:// lives inside one process (try `demo`)")
    queue_names = resolve_queues(settings, queues.split(","))
    _check_services(settings, Database(settings.database_url))
    configure_logging(logging.INFO)
    err.print(
        f"conveyor worker: {processes} process(es) × {threads} threads, queues: "
        f"{', '.join(sorted(queue_names)) or 'all'}; {settings!r}",
        markup=False,
    )
    sys.exit(
        Supervisor(
            settings,
            processes=processes,
            threads=threads,
            queues=queue_names,
            shutdown_timeout=shutdown_timeout,
        ).run()
    )


def _check_services(settings: Settings, db: Database) -> None:
    """Fail fast, with exit code 3, when RabbitMQ or the database is down at start-up."""
    try:
        db.check()
    finally:
        db.dispose()
    check_broker(settings)


# ---------------------------------------------------------------- enqueue


def delivery_options(command: F) -> F:
    options = [
        click.option("--delay", type=click.FloatRange(0), help="Seconds before the job may run."),
        click.option("--priority", type=int, help="Message priority (needs CONVEYOR_MAX_PRIORITY)."),
        click.option("--max-retries", type=click.IntRange(0), help="Retries after the first attempt."),
        click.option("--min-backoff", type=click.FloatRange(0), help="Seconds before the first retry."),
        click.option(
            "--max-backoff", type=click.FloatRange(0), help="Longest wait between retries, seconds."
        ),
        click.option("--idempotency-key", help="Enqueue at most once per key."),
        click.option(
            "--wait", "wait_timeout", type=float, default=None, help="Wait up to N seconds for the result."
        ),
        json_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.group()
def enqueue() -> None:
    """Enqueue a job from the shell; prints its id."""


@enqueue.command("noop")
@click.option("--sleep", type=click.FloatRange(0, defaults.NOOP_MAX_SLEEP), help="Seconds to sleep.")
@click.option("--fail-attempts", type=click.IntRange(0), help="Fail the first N attempts (retried).")
@click.option("--permanent", is_flag=True, default=None, help="Fail at once, without retries.")
@delivery_options
@click.pass_obj
def enqueue_noop(
    state: AppState, /, sleep: float | None, fail_attempts: int | None, permanent: bool | None, **options: Any
) -> None:
    """A job that sleeps (and fails when asked): tests the whole stack."""
    payload = {"sleep": sleep, "fail_attempts": fail_attempts, "permanent": permanent}
    _enqueue(state, "noop", {k: v for k, v in payload.items() if v is not None}, **options)


@enqueue.command("email")
@click.option("--to", "to", multiple=True, required=True, help="Recipient (repeat for more).")
@click.option("--cc", multiple=True, help="Copy recipient (repeat for more).")
@click.option("--bcc", multiple=True, help="Blind copy recipient (repeat for more).")
@click.option("--reply-to", multiple=True, help="Reply-To address.")
@click.option("--template", required=True, help="Template name: the folder email/NAME/.")
@click.option("--context", "context_json", help='Template variables as a JSON object: \'{"name": "Ada"}\'.')
@click.option(
    "--var", "variables", multiple=True, metavar="KEY=VALUE", help="One template variable (repeatable)."
)
@click.option("--subject", help="Overrides the template's subject.")
@click.option("--attach", "attachments", multiple=True, metavar="ARTIFACT_ID", help="Attach an artifact.")
@delivery_options
@click.pass_obj
def enqueue_email(
    state: AppState,
    /,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    bcc: tuple[str, ...],
    reply_to: tuple[str, ...],
    template: str,
    context_json: str | None,
    variables: tuple[str, ...],
    subject: str | None,
    attachments: tuple[str, ...],
    **options: Any,
) -> None:
    """A templated email (SMTP or the .eml outbox)."""
    payload: dict[str, Any] = {
        "to": list(to),
        "template": template,
        "context": _template_context(context_json, variables),
    }
    extras = {"cc": list(cc), "bcc": list(bcc), "reply_to": list(reply_to), "attachments": list(attachments)}
    payload.update({k: v for k, v in extras.items() if v})
    if subject is not None:
        payload["subject"] = subject
    _enqueue(state, "email", payload, **options)


@enqueue.command("image")
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Upload this image as the source.",
)
@click.option("--source", help="Or: the artifact id of an image already stored.")
@click.option(
    "--op",
    "ops",
    multiple=True,
    metavar="OP",
    help="thumbnail=WxH, resize=WxH[:fill], crop=L,T,R,B, rotate=DEG, grayscale, blur=R, "
    "watermark=TEXT, or a JSON object (repeatable, applied in order).",
)
@click.option(
    "--format", "output_format", type=click.Choice(["jpeg", "png", "webp"]), default="jpeg", show_default=True
)
@click.option("--quality", type=click.IntRange(1, 100), default=85, show_default=True)
@click.option("--keep-metadata", is_flag=True, help="Keep EXIF (GPS included); stripped by default.")
@delivery_options
@click.pass_obj
def enqueue_image(
    state: AppState,
    /,
    path: Path | None,
    source: str | None,
    ops: tuple[str, ...],
    output_format: str,
    quality: int,
    keep_metadata: bool,
    **options: Any,
) -> None:
    """An image job: operations on one image, stored as a new artifact."""
    if (path is None) == (source is None):
        raise click.UsageError("give exactly one of --file and --source")
    operations = [parse_operation(op) for op in ops]
    if path is not None:
        source = state.client.put_artifact(path.read_bytes(), name=path.name)
    payload = {
        "source": source,
        "operations": operations,
        "format": output_format,
        "quality": quality,
        "keep_metadata": keep_metadata,
    }
    _enqueue(state, "image", payload, **options)


def _template_context(context_json: str | None, variables: tuple[str, ...]) -> dict[str, Any]:
    context: Any = {}
    if context_json:
        try:
            context = json.loads(context_json)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--context") from None
        if not isinstance(context, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--context")
    for variable in variables:
        key, sep, value = variable.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{variable!r} is not KEY=VALUE", param_hint="--var")
        context[key] = value
    return dict(context)


def _enqueue(
    state: AppState,
    kind: str,
    payload: dict[str, Any],
    *,
    as_json: bool,
    wait_timeout: float | None,
    **options: Any,
) -> None:
    job = state.client.enqueue_with_options(kind, payload, DeliveryOptions(**options))
    if wait_timeout is not None:
        try:
            job.wait(timeout=wait_timeout)
        except JobFailed as exc:
            _print_enqueued(job.info, as_json)
            fail(str(exc), EXIT_FAILURE)
        except TimeoutError as exc:
            _print_enqueued(job.info, as_json)
            fail(str(exc), EXIT_FAILURE)
    _print_enqueued(job.info, as_json)


def _print_enqueued(info: JobInfo, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(info.to_dict()))
    else:
        click.echo(info.id)


# ---------------------------------------------------------------- jobs


@main.group()
def jobs() -> None:
    """List and inspect jobs."""


@jobs.command("list")
@click.option("--status", type=click.Choice([s.value for s in JobStatus]), help="Only jobs in this status.")
@click.option("--kind", help="Only jobs of this kind.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@json_option
@click.pass_obj
def jobs_list(state: AppState, status: str | None, kind: str | None, limit: int, as_json: bool) -> None:
    """Jobs, newest first."""
    rows = state.client.jobs.find(status=status, kind=kind, limit=limit)
    if as_json:
        click.echo(json.dumps([row.to_dict() for row in rows], indent=2))
        return
    out.print(jobs_table(rows))


@jobs.command("show")
@click.argument("job_id")
@json_option
@click.pass_obj
def jobs_show(state: AppState, job_id: str, as_json: bool) -> None:
    """One job with its attempt history."""
    info = state.client.jobs.get(job_id)
    attempts = state.client.jobs.attempts(job_id)
    if as_json:
        click.echo(json.dumps({**info.to_dict(), "history": [a.to_dict() for a in attempts]}, indent=2))
        return
    out.print(job_details(info))
    out.print(attempts_table(attempts))


def jobs_table(rows: Sequence[JobInfo], notes: Sequence[str] = ()) -> Table:
    """One line per job; ``notes`` adds a last column (the demo says what each job shows)."""
    table = Table(title=f"{len(rows)} job(s)", title_justify="left")
    for column in ("id", "kind", "status", "attempts", "created", "took"):
        table.add_column(column, no_wrap=True)
    table.add_column("error", overflow="fold")
    if notes:
        table.add_column("what")
    for index, row in enumerate(rows):
        cells = [
            row.id,
            row.kind,
            _status(row.status),
            str(row.attempts),
            _when(row.created_at),
            _took(row.started_at, row.finished_at),
            _short(row.error),
        ]
        table.add_row(*cells, *([notes[index]] if notes else []))
    return table


def job_details(info: JobInfo) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    fields = info.to_dict()
    fields["status"] = _status(info.status)
    for key in ("payload", "result"):
        fields[key] = json.dumps(fields[key]) if fields[key] is not None else None
    for key, value in fields.items():
        if value is not None:
            table.add_row(key, str(value))
    return table


def attempts_table(attempts: Sequence[AttemptInfo]) -> Table:
    table = Table(title="attempts", title_justify="left")
    for column in ("#", "worker", "started", "took", "outcome", "error"):
        table.add_column(column, overflow="fold")
    for a in attempts:
        table.add_row(
            str(a.attempt),
            a.worker,
            _when(a.started_at),
            _took(a.started_at, a.finished_at),
            _status(a.outcome or "running"),
            _short(a.error),
        )
    return table


_STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "retrying": "yellow",
    "running": "cyan",
    "lost": "red",
    "cancelled": "dim",
}


def _status(status: str) -> str:
    style = _STATUS_STYLE.get(status)
    return f"[{style}]{status}[/]" if style else status


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def _took(start: datetime | None, end: datetime | None) -> str:
    if not start or not end:
        return ""
    return f"{(end - start).total_seconds() * 1000:.0f} ms"


def _short(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


# ---------------------------------------------------------------- ping, db, demo


@main.command()
@click.option(
    "--timeout", default=10.0, show_default=True, type=click.FloatRange(0.1), help="Seconds to wait."
)
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
        click.echo(json.dumps({"job_id": job.id, "round_trip_ms": round(elapsed, 2), "worker": worker_id}))
    else:
        click.echo(f"pong: job {job.id} ran on {worker_id}, round trip {elapsed:.1f} ms")


@main.group()
def db() -> None:
    """Manage the job store's schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target Alembic revision.")
@click.pass_obj
def db_upgrade(state: AppState, revision: str) -> None:
    """Create the database when it is missing, then apply migrations."""

    url = state.settings.database_url
    if ensure_database(url):
        click.echo(f"created database {mask_url(url)}")
    database = Database(url)
    try:
        before, after = upgrade(database, revision)
    finally:
        database.dispose()
    click.echo(
        f"schema at {after} (was {before or 'empty'})" if before != after else f"schema up to date at {after}"
    )


@main.command()
@json_option
@click.pass_obj
def demo(state: AppState, as_json: bool) -> None:
    """Run a handful of jobs in-process (in-memory broker, SQLite, .eml outbox) and show their rows."""

    settings = embedded_settings(state.settings)
    configure_logging(logging.ERROR)
    if not as_json:
        out.print(f"[bold]Conveyor demo[/] — embedded stack: {settings!r}")
    results = run_demo(settings, on_event=(lambda _line: None) if as_json else out.print)
    if as_json:
        click.echo(json.dumps([{"title": title, **info.to_dict()} for title, info in results], indent=2))
        return
    out.print(jobs_table([info for _, info in results], notes=[title for title, _ in results]))
    out.print(
        f"Job rows are in {settings.database_url}; run `conveyor --database-url "
        f"{settings.database_url} jobs show ID` to see one's attempts."
    )


if __name__ == "__main__":
    main()
