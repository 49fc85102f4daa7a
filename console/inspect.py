"""`conveyor artifacts …`: list and download the files jobs produce and consume."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import click
from rich.progress import Progress
from rich.table import Table

from console.common import (
    AppState,
    echo_json,
    err,
    fail,
    json_option,
    out,
)
from console.exit_codes import EXIT_FAILURE
from console.text import cell, visible
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
    help="File to write, replaced if it exists (default: the artifact's name, in this folder).",
)
@click.option("--force", "-f", is_flag=True, help="Replace a file of the artifact's name in this folder.")
@click.pass_obj
def artifacts_get(state: AppState, artifact_id: str, output: Path | None, force: bool) -> None:
    """Download an artifact, in chunks, with a progress bar for large ones.

    Without -o, the file is named after the artifact, in this folder, as curl -O does. That name
    comes from whoever stored the artifact: a name that is a path (../x, /etc/x), hidden (.x) or
    holds control characters is refused, and an existing file is never replaced unless --force.
    """
    info, chunks = state.ops.open_artifact(artifact_id)
    target = output if output is not None else Path(local_name(info.name))
    replace = force or output is not None
    if target.exists() and not replace:
        fail(f"{target} already exists: give --force to replace it, or -o PATH", EXIT_FAILURE)
    try:
        with Progress(transient=True, console=err) as progress:
            task = progress.add_task(cell(info.name), total=info.size, visible=info.size > 8 * 2**20)
            written = _write_new(target, chunks, replace, lambda n: progress.advance(task, n))
    except OSError as exc:
        fail(f"cannot write {target}: {exc.strerror or exc}", EXIT_FAILURE)
    if not written:
        fail(f"{target} appeared meanwhile: give --force to replace it, or -o PATH", EXIT_FAILURE)
    click.echo(f"wrote {info.size:,} bytes to {visible(target)}")


def local_name(name: str) -> str:
    """``name`` when it is safe as a file name in the current folder.

    Raises:
        click.ClickException: a path (separators, ``..``, absolute), a hidden or empty name, or one
            with control characters: the admin must choose the file with ``-o``.
    """
    unsafe = (
        not name
        or name in (".", "..")
        or name.startswith(".")
        or any(c in name for c in "/\\\0")
        or visible(name) != name
    )
    if unsafe:
        raise click.ClickException(
            f"the artifact's name {visible(name)!r} is not a safe file name here (a path, a hidden "
            "name or control characters): choose the file with -o PATH"
        )
    return name


def _write_new(target: Path, chunks: Iterable[bytes], replace: bool, advance: Callable[[int], None]) -> bool:
    """Write ``chunks`` to a temporary file beside ``target``, then move it into place: replacing
    ``target`` only when ``replace``, otherwise linking it (which fails if a file appeared since:
    no check-then-write race). False when ``target`` exists and may not be replaced."""
    fd, temporary = tempfile.mkstemp(dir=target.absolute().parent, prefix=".conveyor-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
                advance(len(chunk))
        if replace:
            os.replace(temporary, target)
            return True
        try:
            os.link(temporary, target)
        except FileExistsError:
            return False
        return True
    finally:
        Path(temporary).unlink(missing_ok=True)
