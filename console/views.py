"""Rich tables and small formatters for jobs and attempts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from console.text import cell
from jobs.logs import mask_document, mask_secrets
from jobs.store import AttemptInfo, JobInfo
from jobs.store.artifacts import ArtifactInfo

#: How many of a job's artifacts `jobs show` and the job page list.
ARTIFACTS_SHOWN = 100


def job_document(
    info: JobInfo,
    attempts: Sequence[AttemptInfo],
    children: Sequence[JobInfo],
    artifacts: Sequence[ArtifactInfo],
) -> dict[str, Any]:
    """``jobs show --json`` and the dashboard's ``/api/jobs/<id>``: the job's fields, its
    ``history`` (attempts), follow-up ``children`` and ``artifacts`` (where the bytes live is
    left out). Unmasked: the caller masks it as it prints it."""
    return {
        **info.to_dict(),
        "history": [a.to_dict() for a in attempts],
        "children": [{"id": c.id, "kind": c.kind, "status": c.status} for c in children],
        "artifacts": [
            {k: v for k, v in artifact.to_dict().items() if k != "location"} for artifact in artifacts
        ],
    }


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
            cell(row.id),
            cell(row.kind),
            status_markup(row.status),
            str(row.attempts),
            when(row.created_at),
            took(row.started_at, row.finished_at),
            cell(short(mask_secrets(row.error or ""))),
        ]
        table.add_row(*cells, *([notes[index]] if notes else []))
    return table


def job_details(info: JobInfo) -> Table:
    """Every field of a job, secrets masked, job data shown as text (never markup, never raw
    control characters)."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    fields = mask_document(info.to_dict())
    fields["payload"] = json.dumps(fields["payload"])
    fields["result"] = json.dumps(fields["result"]) if fields["result"] is not None else None
    for key, value in fields.items():
        if value is not None:
            table.add_row(key, status_markup(info.status) if key == "status" else cell(value))
    return table


def attempts_table(attempts: Sequence[AttemptInfo]) -> Table:
    table = Table(title="attempts", title_justify="left")
    for column in ("#", "worker", "started", "took", "outcome", "error"):
        table.add_column(column, overflow="fold")
    for a in attempts:
        table.add_row(
            str(a.attempt),
            cell(a.worker),
            when(a.started_at),
            took(a.started_at, a.finished_at),
            status_markup(a.outcome or "running"),
            cell(short(mask_secrets(a.error or ""))),
        )
    return table


STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "retrying": "yellow",
    "running": "cyan",
    "lost": "red",
    "interrupted": "yellow",
    "cancelled": "dim",
}


def status_markup(status: str) -> str:
    style = STATUS_STYLE.get(status)
    return f"[{style}]{status}[/]" if style else cell(status)


def when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def took(start: datetime | None, end: datetime | None) -> str:
    if not start or not end:
        return ""
    return f"{(end - start).total_seconds() * 1000:.0f} ms"


def short(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


def mask_payload(value: Any) -> Any:
    """The payload with secret-looking fields and URL passwords masked, for display."""
    return mask_document(value)


def timeline(info: JobInfo, attempts: Sequence[AttemptInfo]) -> Table:
    """Created, each attempt's start and end, finished: with the time since creation."""
    events: list[tuple[datetime, str]] = [(info.created_at, "created (queued)")]
    if info.eta and info.eta > info.created_at:
        events.append((info.eta, "due (delay or retry)"))
    for a in attempts:
        events.append((a.started_at, f"attempt {a.attempt} started on {cell(a.worker)}"))
        if a.finished_at:
            error = cell(short(mask_secrets(a.error))) if a.error else ""
            events.append(
                (a.finished_at, f"attempt {a.attempt} {cell(a.outcome)}" + (f": {error}" if error else ""))
            )
    if info.finished_at:
        events.append((info.finished_at, f"finished: {cell(info.status)}"))
    table = Table(title="timeline", title_justify="left", show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    table.add_column(overflow="fold")
    for moment, text in sorted(events, key=lambda event: event[0]):
        offset = (moment - info.created_at).total_seconds()
        table.add_row(when(moment), f"+{offset:.3f} s", text)
    return table
