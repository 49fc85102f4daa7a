"""`conveyor dlq …`: what the dead-letter queues hold; run it again, or drop it for good."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

import click
from rich.progress import Progress, TaskID
from rich.table import Table

from console.common import AppState, echo_json, err, json_option, out
from console.exit_codes import EXIT_FAILURE
from console.text import cell, visible
from console.views import short, status_markup, when
from jobs.admin.audit import ActionRecord
from jobs.admin.dlq import DeadLetter, Outcome, select_dead
from jobs.logs import mask_secrets

#: Above this many messages, requeue and purge show a progress bar.
PROGRESS_FROM = 20

F = TypeVar("F", bound=Callable[..., Any])


def queue_option(command: F) -> F:
    return click.option(
        "--queue", "-q", help="Only this queue's dead letters (e.g. email or conveyor.email)."
    )(command)


def selection_arguments(command: F) -> F:
    """``ID…`` or ``--all``, and ``--queue``: the dead letters requeue and purge act on."""
    command = queue_option(command)
    command = click.option("--all", "everything", is_flag=True, help="Every dead letter (of --queue).")(
        command
    )
    return click.argument("job_ids", nargs=-1, metavar="[ID]...")(command)


@click.group()
def dlq() -> None:
    """Dead-lettered jobs: list them, run them again, or purge them for good."""


@dlq.command("list")
@queue_option
@json_option
@click.pass_obj
def dlq_list(state: AppState, queue: str | None, as_json: bool) -> None:
    """Messages in the dead-letter queues, oldest first per queue (nothing is removed)."""
    letters = state.ops.dead_letters(queue)
    if as_json:
        echo_json([letter.to_dict() for letter in letters])
    elif not letters:
        out.print("no dead-lettered messages", markup=False)
    else:
        out.print(dead_letters_table(letters))


@dlq.command("requeue")
@selection_arguments
@json_option
@click.pass_obj
def dlq_requeue(
    state: AppState, job_ids: tuple[str, ...], everything: bool, queue: str | None, as_json: bool
) -> None:
    """Run dead-lettered jobs again: same id and history, a fresh retry budget.

    Foreign messages (no job row) are never requeued: purge them.
    """
    _check_selection(job_ids, everything)
    with (
        _audited(state, "dlq.requeue", job_ids, everything, queue) as record,
        _progress("requeueing") as progress,
    ):
        outcome = state.ops.requeue_dead(job_ids, all=everything, queue=queue, progress=progress)
        _tally(record, outcome)
    _report(outcome, "requeued", as_json, strict=bool(job_ids))


@dlq.command("purge")
@selection_arguments
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_obj
def dlq_purge(
    state: AppState, job_ids: tuple[str, ...], everything: bool, queue: str | None, yes: bool, as_json: bool
) -> None:
    """Remove dead-lettered messages for good; their jobs stay failed."""
    _check_selection(job_ids, everything)
    if not yes:
        # Unknown ids fail here, before anyone is asked anything.
        letters = state.ops.dead_letters(queue)
        chosen = set(select_dead(letters, job_ids, all=everything))
        count = sum(letter.id in chosen for letter in letters)
        if not count:
            err.print("the dead-letter queues are empty: nothing to purge", markup=False)
            return
        click.confirm(
            f"Remove {count} dead-lettered message(s) for good (their jobs stay failed)?",
            abort=True,
            err=True,
        )
    with _audited(state, "dlq.purge", job_ids, everything, queue) as record, _progress("purging") as progress:
        outcome = state.ops.purge_dead(job_ids, all=everything, queue=queue, progress=progress)
        _tally(record, outcome)
    _report(outcome, "purged", as_json, strict=bool(job_ids))


def _audited(
    state: AppState, action: str, job_ids: tuple[str, ...], everything: bool, queue: str | None
) -> AbstractContextManager[ActionRecord]:
    """The audit row of a requeue or purge: the ids named, or ``--all`` (and ``--queue``)."""
    if job_ids:
        return state.ops.audit(action, job_ids=job_ids, selection={"queue": queue})
    return state.ops.audit(action, selection={"all": everything, "queue": queue})


def _tally(record: ActionRecord, outcome: Outcome) -> None:
    record.count = outcome.count
    record.job_ids = list(outcome.done)
    if outcome.skipped:
        record.details["skipped"] = len(outcome.skipped)


def dead_letters_table(letters: Sequence[DeadLetter]) -> Table:
    """One line per dead letter; a foreign message shows why it is foreign as its error."""
    table = Table(title=f"{len(letters)} dead-lettered message(s)", title_justify="left")
    for column in ("job id", "kind", "queue", "status", "dead since", "attempts"):
        table.add_column(column, no_wrap=True)
    table.add_column("last error", overflow="fold")
    for letter in letters:
        # Errors, foreign ids and kinds are arbitrary text: never markup, never raw control characters.
        error = (
            f"[dim]foreign: {cell(letter.reason or '')}[/]"
            if letter.foreign
            else cell(short(mask_secrets(letter.error or "")))
        )
        table.add_row(
            cell(letter.id),
            cell(letter.kind),
            cell(letter.queue),
            status_markup(letter.status) if letter.status else "",
            when(letter.dead_since),
            "" if letter.attempts is None else str(letter.attempts),
            error,
        )
    return table


def _check_selection(job_ids: tuple[str, ...], everything: bool) -> None:
    if bool(job_ids) == everything:
        raise click.UsageError("give job ids, or --all (not both)")


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A ``(done, total)`` callback drawing a progress bar on stderr for large batches."""
    with Progress(console=err, transient=True) as bar:
        task: list[TaskID] = []

        def advance(done: int, total: int) -> None:
            if not task:  # the total is known once the dead-letter queues are read
                task.append(bar.add_task(label, total=total, visible=total > PROGRESS_FROM))
            bar.update(task[0], completed=done)

        yield advance


def _report(outcome: Outcome, verb: str, as_json: bool, *, strict: bool) -> None:
    """Print what was done and skipped; named ids that were skipped make the command fail."""
    if as_json:
        echo_json(outcome.to_dict())
    else:
        click.echo(f"{verb} {outcome.count} dead letter(s)")
        for ident, reason in outcome.skipped:
            err.print(visible(f"skipped {ident}: {reason}"), markup=False)
    if strict and outcome.skipped:
        sys.exit(EXIT_FAILURE)
