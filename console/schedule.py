"""`conveyor scheduler` (enqueue periodic jobs) and `conveyor schedule list` (what is scheduled)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click
from rich.table import Table

from console.common import AppState, banner, echo_json, json_option, out
from console.text import cell
from console.views import status_markup, when
from jobs.broker import check_broker
from jobs.logs import configure_logging
from jobs.schedule.leader import require_postgresql
from jobs.schedule.runner import MAX_CATCH_UP
from jobs.schedule.spec import Schedule, load_schedule
from jobs.schedule.status import EntryStatus
from jobs.settings import check_tls_files

F = TypeVar("F", bound=Callable[..., Any])

SCHEDULER_EPILOG = """\b
Examples:
  conveyor scheduler --schedule deploy/schedule.example.toml
  conveyor schedule list --schedule deploy/schedule.example.toml --next 3
"""


def schedule_option(command: F) -> F:
    return click.option(
        "--schedule",
        "schedule_path",
        required=True,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="The schedule file (TOML, [[job]] entries).",
    )(command)


@click.command(epilog=SCHEDULER_EPILOG)
@click.option(
    "--schedule",
    "schedule_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The schedule file (TOML, [[job]] entries); optional when CONVEYOR_RETENTION_DAYS* is set.",
)
@click.pass_obj
def scheduler(state: AppState, schedule_path: Path | None) -> None:
    """Enqueue the jobs of a schedule file when they are due.

    Run several replicas, anywhere: the one holding a PostgreSQL lock enqueues, each tick once;
    another takes over within about a second when it stops. Ticks missed while none ran are
    caught up by each entry's catch_up rule. The leader also deletes finished jobs past
    CONVEYOR_RETENTION_DAYS (per kind: CONVEYOR_RETENTION_DAYS_EMAIL…), at start and hourly.
    SIGTERM or Ctrl-C stops it.
    """
    settings = state.settings
    retention = settings.retention_days is not None or bool(settings.retention_days_by_kind)
    if schedule_path is None and not retention:
        raise click.UsageError("give --schedule FILE (or set CONVEYOR_RETENTION_DAYS to run retention alone)")
    schedule = (
        load_schedule(schedule_path, settings)
        if schedule_path is not None
        else Schedule(source="(retention only)", entries=())
    )
    require_postgresql(settings.database_url)
    # Fail fast, as `conveyor worker` does: exit code 3 for a service down at start-up, and a
    # pointer to `conveyor db upgrade` when the schedule_ticks table is missing.
    check_tls_files(settings)
    state.ops.check_schedule_store()
    check_broker(settings)
    configure_logging(min(logging.INFO, logging.getLogger().getEffectiveLevel()), settings.log_format)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    runner = state.ops.scheduler(schedule, state.client)
    banner(settings, f"conveyor scheduler: {settings!r}")
    runner.run(stop)


@click.group()
def schedule() -> None:
    """Periodic jobs: what a schedule file enqueues, and when."""


@schedule.command("list")
@schedule_option
@click.option(
    "--next", "count", default=1, show_default=True, type=click.IntRange(1, 100), help="Next runs shown."
)
@json_option
@click.pass_obj
def schedule_list(state: AppState, schedule_path: Path, count: int, as_json: bool) -> None:
    """Each entry: its timing, kind, next runs, and the last tick enqueued in this namespace."""
    settings = state.settings
    plan = load_schedule(schedule_path, settings)
    statuses, leader = state.ops.schedule_status(plan, count)
    if as_json:
        document = {
            "schedule": plan.source,
            "namespace": settings.namespace,
            "leader": leader,
            "entries": [status.to_dict() for status in statuses],
        }
        echo_json(document)
        return
    out.print(schedule_table(statuses, settings.namespace, leader))


def schedule_table(statuses: list[EntryStatus], namespace: str, leader: str | None) -> Table:
    leading = f"leader {cell(leader)}" if leader else "no scheduler running"
    table = Table(title=f"schedule of namespace {namespace} — {leading}; times in UTC", title_justify="left")
    for column in ("entry", "schedule", "kind", "catch-up", "next run", "last tick", "last job"):
        table.add_column(column, overflow="fold")
    for status in statuses:
        job = (
            f"{cell(status.last_job_id)} {status_markup(status.last_job_status or '')}"
            if status.last_job_id
            else ""
        )
        catch_up = status.entry.catch_up.value
        table.add_row(
            cell(status.entry.name),
            cell(status.entry.timing.describe()),
            cell(status.entry.kind),
            f"{catch_up} (≤ {MAX_CATCH_UP})" if catch_up == "all" else catch_up,
            "\n".join(when(moment) for moment in status.next_runs),
            when(status.last_tick) or "–",
            job,
        )
    return table
