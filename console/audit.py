"""`conveyor audit`: who did what to the platform, and when (read-only)."""

from __future__ import annotations

import json

import click
from rich.markup import escape
from rich.table import Table

from console.common import AppState, json_option, out
from console.jobs import parse_moment
from console.views import when
from jobs.store.audit import AuditEntry

AUDIT_EPILOG = """\b
Examples:
  conveyor audit --since 7d
  conveyor audit --action jobs --limit 20      # jobs.retry, jobs.cancel
  conveyor audit --action gdpr.erase --json
"""


@click.command(epilog=AUDIT_EPILOG)
@click.option("--since", help="Only actions since: a duration ago (1h, 7d) or a date.")
@click.option("--action", help="Only this action (jobs.retry) or group of actions (jobs, dlq, gdpr).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000), help="Rows.")
@json_option
@click.pass_obj
def audit(state: AppState, since: str | None, action: str | None, limit: int, as_json: bool) -> None:
    """The audit log of this namespace, newest first: every state-changing admin action."""
    entries = state.ops.audit_log(since=parse_moment(since), action=action, limit=limit)
    if as_json:
        click.echo(json.dumps([entry.to_dict() for entry in entries], indent=2))
        return
    out.print(audit_table(entries))


def audit_table(entries: list[AuditEntry]) -> Table:
    table = Table(title=f"{len(entries)} audit row(s), newest first; times in UTC", title_justify="left")
    for column in ("when", "source", "who", "action", "outcome", "count"):
        table.add_column(column, no_wrap=True)
    table.add_column("jobs / selection / details", overflow="fold")
    for entry in entries:
        outcome = entry.outcome if entry.outcome == "ok" else f"[red]{escape(entry.outcome)}[/]"
        table.add_row(
            when(entry.at),
            entry.source,
            escape(f"{entry.actor}@{entry.host}"),
            escape(entry.action),
            outcome,
            "" if entry.count is None else str(entry.count),
            escape(_what(entry)),
        )
    return table


def _what(entry: AuditEntry) -> str:
    parts = []
    if entry.job_ids:
        shown = ", ".join(entry.job_ids[:3])
        parts.append(shown + (f" (+{len(entry.job_ids) - 3})" if len(entry.job_ids) > 3 else ""))
    if entry.selection:
        parts.append(json.dumps(entry.selection, sort_keys=True))
    if entry.details:
        parts.append(json.dumps(entry.details, sort_keys=True))
    return "; ".join(parts)
