"""`conveyor workers`: every live worker replica on every host."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import click
from rich.table import Table

from console.common import AppState, echo_json, err, json_option, out
from console.text import cell, visible
from console.views import when
from jobs.admin.workers import RecentWorker, ReplicaView, WorkersView


@click.command()
@json_option
@click.pass_obj
def workers(state: AppState, as_json: bool) -> None:
    """Live worker replicas on every host, from their heartbeats in Redis.

    When Redis is unreachable, lists instead the worker processes that ran jobs in the
    last 10 minutes, from PostgreSQL (and says so).
    """
    settings = state.settings
    view = state.ops.workers()
    if as_json:
        echo_json(view.to_dict())
        return
    if view.note:
        err.print(f"conveyor: warning: {visible(view.note)}", markup=False)
    out.print(workers_table(view, settings.namespace, now=datetime.now(UTC)))


def workers_table(view: WorkersView, namespace: str, *, now: datetime) -> Table:
    """The live replicas, or the recently seen processes when the view comes from PostgreSQL."""
    live = [r for r in view.replicas if isinstance(r, ReplicaView)]
    recent = [r for r in view.replicas if isinstance(r, RecentWorker)]
    if view.source == "postgresql":
        return _recent_table(recent, now=now)
    table = Table(title=f"{len(live)} live replica(s) — from Redis heartbeats", title_justify="left")
    for column in ("id", "host", "pid", "version", "queues"):
        table.add_column(column, no_wrap=column != "queues")
    for column in ("procs×threads", "busy", "processed", "failed"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("last heartbeat", justify="right", no_wrap=True)
    for replica in live:
        table.add_row(
            cell(replica.id),
            cell(replica.host),
            str(replica.pid),
            cell(replica.version),
            cell(", ".join(_short_queues(replica.queues, namespace))),
            f"{replica.processes}×{replica.threads}" + _missing(replica),
            f"{replica.busy}/{replica.processes * replica.threads}",
            f"{replica.processed:,}",
            f"[red]{replica.failed:,}[/]" if replica.failed else "0",
            when(replica.started),
            ago(replica.last_heartbeat, now)
            + (" [yellow](stopping)[/]" if replica.state == "stopping" else ""),
        )
    return table


def _recent_table(rows: Sequence[RecentWorker], *, now: datetime) -> Table:
    # Short enough not to wrap over this narrow table; the warning on stderr says why and since when.
    table = Table(title=f"{len(rows)} recent worker(s) — from PostgreSQL", title_justify="left")
    for column in ("worker", "host", "pid", "attempts", "last seen"):
        table.add_column(column, no_wrap=True, justify="left" if column in ("worker", "host") else "right")
    for row in rows:
        table.add_row(
            cell(row.id), cell(row.host), str(row.pid), f"{row.attempts:,}", ago(row.last_seen, now)
        )
    return table


def ago(moment: datetime, now: datetime) -> str:
    """``"2 s ago"``, ``"5 min ago"``, ``"3 h ago"`` (clocks of other hosts may run ahead: never < 0)."""
    seconds = max(0, int((now - moment).total_seconds()))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def _short_queues(queues: Sequence[str], namespace: str) -> list[str]:
    # The namespace prefix is the same on every queue of a listing: the table drops it.
    prefix = f"{namespace}."
    return [q.removeprefix(prefix) for q in queues]


def _missing(replica: ReplicaView) -> str:
    # Fewer processes beating than the replica runs: one died, or is being replaced.
    alive = len(replica.pids)
    return f" [yellow]({alive} alive)[/]" if alive < replica.processes else ""
