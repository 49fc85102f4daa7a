"""`conveyor jobs …`: find, inspect, retry, cancel and wait for jobs."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from rich.progress import Progress

from console.common import AppState, Seconds, echo_json, err, fail, json_option, out
from console.exit_codes import EXIT_FAILURE
from console.text import cell, visible
from console.views import (
    ARTIFACTS_SHOWN,
    attempts_table,
    job_details,
    job_document,
    jobs_table,
    status_markup,
    timeline,
)
from jobs.admin.audit import ActionRecord
from jobs.errors import JobFailed
from jobs.logs import mask_secrets
from jobs.status import JobStatus
from jobs.store import JobSelection

_DURATION = re.compile(r"^(\d+)\s*(s|m|h|d|w)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
#: Above this many jobs, bulk commands show a progress bar.
PROGRESS_FROM = 20


def parse_moment(
    text: str | None, now: datetime | None = None, *, option: str | None = None
) -> datetime | None:
    """``1h`` / ``30m`` / ``7d`` ago, or an ISO date or datetime (UTC unless a zone is given).

    Raises:
        click.BadParameter: neither form.
    """
    if text is None:
        return None
    match = _DURATION.match(text.strip())
    if match:
        try:
            return (now or datetime.now(UTC)) - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        except OverflowError:  # 99999999999d: before year 1
            raise click.BadParameter(f"{text!r} reaches back before year 1", param_hint=option) from None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a duration (30m, 1h, 7d) nor a date", param_hint=option
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def selection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The filters shared by `jobs list`, `jobs retry` and `jobs cancel`."""
    options = [
        click.option(
            "--status", type=click.Choice([s.value for s in JobStatus]), help="Only jobs in this status."
        ),
        click.option("--kind", help="Only jobs of this kind."),
        click.option("--queue", help="Only jobs of this queue (e.g. email or conveyor.email)."),
        click.option("--since", help="Created at or after: a duration ago (1h, 7d) or a date."),
        click.option("--until", help="Created before: a duration ago or a date."),
        click.option("--error", "error_text", help="Only jobs whose error contains this text."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _selection(state: AppState, limit: int = 50, offset: int = 0, **filters: Any) -> JobSelection:
    queue = filters.get("queue")
    if queue and "." not in queue:
        queue = state.settings.queue_name(queue)
    return JobSelection(
        status=filters.get("status"),
        kind=filters.get("kind"),
        queue=queue,
        since=parse_moment(filters.get("since"), option="--since"),
        until=parse_moment(filters.get("until"), option="--until"),
        error=filters.get("error_text"),
        limit=limit,
        offset=offset,
    )


@click.group()
def jobs() -> None:
    """Find, inspect, retry, cancel and wait for jobs."""


@jobs.command("list")
@selection_options
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(1, 100_000), help="Jobs per page."
)
@click.option(
    "--page", default=1, show_default=True, type=click.IntRange(1, 1_000_000_000), help="Page number."
)
@json_option
@click.pass_obj
def jobs_list(state: AppState, /, limit: int, page: int, as_json: bool, **filters: Any) -> None:
    """Jobs, newest first."""
    rows = state.ops.find_jobs(_selection(state, limit=limit, offset=(page - 1) * limit, **filters))
    if as_json:
        echo_json([row.to_dict() for row in rows])
        return
    out.print(jobs_table(rows))
    if len(rows) == limit:
        err.print(f"page {page}; more with --page {page + 1}", markup=False)


@jobs.command("show")
@click.argument("job_id")
@json_option
@click.pass_obj
def jobs_show(state: AppState, job_id: str, as_json: bool) -> None:
    """One job: payload (secrets masked), result, every attempt, a timeline, follow-up jobs."""
    info, attempts, children = state.ops.job(job_id)
    if as_json:
        echo_json(
            job_document(info, attempts, children, state.ops.artifacts(job_id=info.id, limit=ARTIFACTS_SHOWN))
        )
        return
    out.print(job_details(info))
    out.print(attempts_table(attempts))
    if attempts and attempts[-1].trace_id:  # the latest attempt's trace: look it up in your tracing UI
        out.print(f"trace id: {cell(attempts[-1].trace_id)} (attempt {attempts[-1].attempt})")
    failed = [a for a in attempts if a.traceback]
    if failed:
        out.print(f"traceback of attempt {failed[-1].attempt}:", style="bold")
        shown = visible(mask_secrets(failed[-1].traceback or ""), newlines=True)
        out.print(shown, markup=False, highlight=False)
    out.print(timeline(info, attempts))
    for child in children:
        out.print(f"follow-up job {cell(child.id)} ({cell(child.kind)}, {status_markup(child.status)})")


def _targets(
    state: AppState, ids: tuple[str, ...], yes: bool, verb: str, filters: dict[str, Any]
) -> list[str]:
    selection = _selection(state, **filters)
    if ids and not selection.is_empty:
        raise click.UsageError("give job ids or filters, not both")
    if not ids and selection.is_empty:
        raise click.UsageError(f"give job ids, or filters (e.g. --status failed --since 1h) to {verb} by")
    targets = list(ids) if ids else state.ops.job_ids(selection)
    if not ids and targets and not yes:
        click.confirm(f"{verb.capitalize()} {len(targets)} job(s)?", abort=True, err=True)
    return targets


def _bulk(targets: list[str], action: Callable[[str], str], as_json: bool, label: str) -> dict[str, str]:
    outcomes: dict[str, str] = {}
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task(label, total=len(targets), visible=len(targets) > PROGRESS_FROM)
        for job_id in targets:
            outcomes[job_id] = action(job_id)
            progress.advance(task)
    if as_json:
        echo_json(outcomes)
    else:
        for job_id, outcome in outcomes.items():
            click.echo(visible(f"{job_id} {outcome}"))
    return outcomes


def _audited(job_ids: tuple[str, ...], filters: dict[str, Any]) -> dict[str, Any]:
    """What an audit row says of the jobs chosen: their ids, or the filter used."""
    if job_ids:
        return {"job_ids": list(job_ids)}
    return {"selection": {k: v for k, v in filters.items() if v is not None}}


def _tally(record: ActionRecord, targets: list[str], outcomes: dict[str, str], *done: str) -> None:
    """An audit row's count (the jobs acted on), ids and outcomes per kind."""
    record.job_ids = targets
    record.count = sum(outcome in done for outcome in outcomes.values())
    record.details["outcomes"] = dict(Counter(outcomes.values()))


@jobs.command("retry")
@click.argument("job_ids", nargs=-1)
@selection_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_obj
def jobs_retry(
    state: AppState, /, job_ids: tuple[str, ...], yes: bool, as_json: bool, **filters: Any
) -> None:
    """Run failed or cancelled jobs again (same id; attempts and history continue).

    By ids, or by filter: conveyor jobs retry --status failed --kind email --since 1h
    """
    targets = _targets(state, job_ids, yes, "retry", filters)
    client = state.publisher()
    with state.ops.audit("jobs.retry", **_audited(job_ids, filters)) as record:
        outcomes = _bulk(
            targets, lambda i: "retried" if client.retry(i) else "skipped (not failed)", as_json, "retrying"
        )
        _tally(record, targets, outcomes, "retried")
    if job_ids and any(o != "retried" for o in outcomes.values()):
        raise SystemExit(EXIT_FAILURE)


@jobs.command("cancel")
@click.argument("job_ids", nargs=-1)
@selection_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_obj
def jobs_cancel(
    state: AppState, /, job_ids: tuple[str, ...], yes: bool, as_json: bool, **filters: Any
) -> None:
    """Cancel waiting jobs (workers skip them) and ask running ones to stop at their next step."""
    targets = _targets(state, job_ids, yes, "cancel", filters)
    with state.ops.audit("jobs.cancel", **_audited(job_ids, filters)) as record:
        outcomes = _bulk(targets, state.client.cancel, as_json, "cancelling")
        _tally(record, targets, outcomes, "cancelled", "requested")


@jobs.command("wait")
@click.argument("job_id")
@click.option("--timeout", type=Seconds(0), help="Seconds to wait (default: forever).")
@json_option
@click.pass_obj
def jobs_wait(state: AppState, job_id: str, timeout: float | None, as_json: bool) -> None:
    """Wait for a job to finish; print its result. Exit 1 if it failed or the wait timed out."""
    job = state.client.get(job_id)
    try:
        result = job.wait(timeout=timeout)
    except (JobFailed, TimeoutError) as exc:
        fail(str(exc), EXIT_FAILURE)
    echo_json(result, indent=2 if as_json else None)
