"""`conveyor jobs …` and `conveyor artifacts …`: look at jobs and their files."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.progress import Progress
from rich.table import Table

from console.common import (
    AppState,
    err,
    json_option,
    out,
)
from console.views import attempts_table, job_details, jobs_table, status_markup, when
from jobs.status import JobStatus

# ---------------------------------------------------------------- jobs


@click.group()
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
    """One job with its attempt history (and the jobs it enqueued, e.g. a report's email)."""
    info = state.client.jobs.get(job_id)
    attempts = state.client.jobs.attempts(job_id)
    children = state.client.jobs.children(job_id)
    if as_json:
        data = {
            **info.to_dict(),
            "history": [a.to_dict() for a in attempts],
            "children": [{"id": c.id, "kind": c.kind, "status": c.status} for c in children],
        }
        click.echo(json.dumps(data, indent=2))
        return
    out.print(job_details(info))
    out.print(attempts_table(attempts))
    for child in children:
        out.print(f"follow-up job {child.id} ({child.kind}, {status_markup(child.status)})")


# ---------------------------------------------------------------- artifacts


@click.group()
def artifacts() -> None:
    """List and download artifacts (report outputs, images, attachments)."""


@artifacts.command("list")
@click.option("--job", "job_id", help="Only the artifacts of this job.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@json_option
@click.pass_obj
def artifacts_list(state: AppState, job_id: str | None, limit: int, as_json: bool) -> None:
    """Artifacts, newest first."""
    rows = state.client.artifacts.recent(job_id=job_id, limit=limit)
    if as_json:
        click.echo(json.dumps([row.to_dict() for row in rows], indent=2))
        return
    table = Table(title=f"{len(rows)} artifact(s)", title_justify="left")
    for column in ("id", "name", "type", "size", "job", "created"):
        table.add_column(column, no_wrap=column != "name")
    for row in rows:
        table.add_row(
            row.id, row.name, row.content_type, f"{row.size:,}", row.job_id or "", when(row.created_at)
        )
    out.print(table)


@artifacts.command("get")
@click.argument("artifact_id")
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write (default: the artifact's name, in this folder).",
)
@click.pass_obj
def artifacts_get(state: AppState, artifact_id: str, output: Path | None) -> None:
    """Download an artifact, in chunks, with a progress bar for large ones."""
    info, chunks = state.client.artifacts.open(artifact_id)
    target = output or Path(info.name)
    partial = target.with_name(target.name + ".part")
    with Progress(transient=True, console=err) as progress, partial.open("wb") as handle:
        task = progress.add_task(f"{info.name}", total=info.size, visible=info.size > 8 * 2**20)
        for chunk in chunks:
            handle.write(chunk)
            progress.advance(task, len(chunk))
    partial.replace(target)
    click.echo(f"wrote {info.size:,} bytes to {target}")
