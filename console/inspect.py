"""`conveyor artifacts …`: list and download the files jobs produce and consume."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import Progress
from rich.table import Table

from console.common import (
    AppState,
    echo_json,
    err,
    json_option,
    out,
)
from console.text import cell
from console.views import when

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
    rows = state.ops.artifacts(job_id=job_id, limit=limit)
    if as_json:
        echo_json([row.to_dict() for row in rows])
        return
    table = Table(title=f"{len(rows)} artifact(s)", title_justify="left")
    for column in ("id", "name", "type", "size", "job", "created"):
        table.add_column(column, no_wrap=column != "name")
    for row in rows:
        table.add_row(
            cell(row.id),
            cell(row.name),
            cell(row.content_type),
            f"{row.size:,}",
            cell(row.job_id),
            when(row.created_at),
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
    info, chunks = state.ops.open_artifact(artifact_id)
    target = output or Path(info.name)
    partial = target.with_name(target.name + ".part")
    with Progress(transient=True, console=err) as progress, partial.open("wb") as handle:
        task = progress.add_task(f"{info.name}", total=info.size, visible=info.size > 8 * 2**20)
        for chunk in chunks:
            handle.write(chunk)
            progress.advance(task, len(chunk))
    partial.replace(target)
    click.echo(f"wrote {info.size:,} bytes to {target}")
