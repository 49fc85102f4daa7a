"""`conveyor queues`, `stats`, `top`, `prune`, `config`: the admin's view of the platform."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime, timedelta

import click
from rich.console import Group
from rich.live import Live
from rich.progress import Progress
from rich.table import Table

from console.common import AppState, Seconds, echo_json, err, json_option, out
from console.jobs import parse_moment
from console.text import cell
from console.views import jobs_table
from console.workers import workers_table
from jobs.admin.prune import PruneResult
from jobs.admin.queues import QueueStats
from jobs.admin.stats import GroupStats
from jobs.status import FINAL_STATUSES, JobStatus
from jobs.store import JobSelection

SPARK = "▁▂▃▄▅▆▇█"


QUEUES_EPILOG = """\b
Examples:
  conveyor queues
  conveyor queues --json
  conveyor queues pause email      # workers stop fetching from it; its messages wait in RabbitMQ
  conveyor queues resume email
"""


@click.group(invoke_without_command=True, epilog=QUEUES_EPILOG)
@json_option
@click.pass_context
def queues(ctx: click.Context, as_json: bool) -> None:
    """Per queue: ready, delayed, dead-lettered, consumers (RabbitMQ), running and the oldest
    waiting job's age (PostgreSQL), and whether it is paused."""
    if ctx.invoked_subcommand is not None:
        return
    state: AppState = ctx.obj
    rows = state.ops.queues()
    if as_json:
        echo_json([row.to_dict() for row in rows])
        return
    out.print(queues_table(rows))


@queues.command("pause")
@click.argument("queue")
@json_option
@click.pass_obj
def queues_pause(state: AppState, queue: str, as_json: bool) -> None:
    """Pause QUEUE (email, or conveyor.email): every worker stops fetching from it within about
    a second; its messages stay in RabbitMQ until `conveyor queues resume`. Audited."""
    outcome = state.ops.pause_queue(queue)
    if as_json:
        echo_json(outcome.to_dict())
        return
    out.print(cell(outcome.message))


@queues.command("resume")
@click.argument("queue")
@json_option
@click.pass_obj
def queues_resume(state: AppState, queue: str, as_json: bool) -> None:
    """Resume a paused QUEUE: workers fetch from it again within about a second. Audited."""
    outcome = state.ops.resume_queue(queue)
    if as_json:
        echo_json(outcome.to_dict())
        return
    out.print(cell(outcome.message))


def queues_table(rows: list[QueueStats]) -> Table:
    api = any(r.unacked is not None for r in rows)
    title = "queues — ready/dead/consumers: RabbitMQ; delayed: PostgreSQL + .DQ; running/oldest: PostgreSQL"
    table = Table(
        title=title + ("; unacked, in/s, out/s: management API" if api else ""), title_justify="left"
    )
    columns = ["queue", "kinds", "state", "ready", "delayed", "dead", "consumers", "running", "oldest wait"]
    for column in columns + (["unacked", "in/s", "out/s"] if api else []):
        table.add_column(column, justify="left" if column in ("queue", "kinds", "state") else "right")
    for r in rows:
        wait = "" if r.oldest_wait_seconds is None else _age(r.oldest_wait_seconds)
        dead = f"[red]{r.dead}[/]" if r.dead else "0"
        cells = [
            cell(r.queue),
            cell(", ".join(r.kinds)),
            "[yellow]paused[/]" if r.paused else "active",
            str(r.ready),
            str(r.delayed),
            dead,
            str(r.consumers),
            str(r.running),
            wait,
        ]
        if api:
            cells += [str(r.unacked), f"{r.publish_rate or 0:.1f}", f"{r.deliver_rate or 0:.1f}"]
        table.add_row(*cells)
    return table


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@click.command()
@click.option("--since", default="1h", show_default=True, help="A duration ago (15m, 1h, 7d) or a date.")
@click.option("--by", type=click.Choice(["kind", "queue"]), default="kind", show_default=True)
@json_option
@click.pass_obj
def stats(state: AppState, since: str, by: str, as_json: bool) -> None:
    """Done, failed, retried, throughput per minute and queue wait / run time p50/p95/p99."""
    moment = parse_moment(since, option="--since")
    assert moment is not None
    rows = state.ops.stats(moment, by)
    if as_json:
        echo_json({"since": moment.isoformat(), "by": by, "groups": [r.to_dict() for r in rows]})
        return
    out.print(stats_table(rows, by, moment))


def stats_table(rows: list[GroupStats], by: str, since: datetime) -> Table:
    table = Table(title=f"finished since {since:%Y-%m-%d %H:%M} UTC", title_justify="left")
    for column in (by, "done", "failed", "retried", "per min", "wait p50/p95/p99 s", "run p50/p95/p99 s"):
        table.add_column(column, justify="left" if column == by else "right")
    for r in rows:
        table.add_row(
            cell(r.group),
            str(r.done),
            f"[red]{r.failed}[/]" if r.failed else "0",
            str(r.retried),
            f"{r.per_minute:.2f}",
            _triple(r.wait),
            _triple(r.run),
        )
    return table


def _triple(values: dict[str, float | None]) -> str:
    return " / ".join("–" if values[k] is None else f"{values[k]:.3f}" for k in ("p50", "p95", "p99"))


@click.command()
@click.option("--once", is_flag=True, help="Render one frame and exit (for scripts and tests).")
@click.option(
    "--interval", default=2.0, show_default=True, type=Seconds(0.5, 3600), help="Seconds per refresh."
)
@click.pass_obj
def top(state: AppState, once: bool, interval: float) -> None:
    """A live view: queues, throughput sparkline, recent failures. Ctrl-C quits."""
    if once:
        out.print(_frame(state))
        return
    with Live(_frame(state), console=out, refresh_per_second=4, screen=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(_frame(state))
        except KeyboardInterrupt:
            pass


def _frame(state: AppState) -> Group:
    since = datetime.now(UTC) - timedelta(minutes=30)
    per_kind = state.ops.stats(since, "kind")
    failures = state.ops.find_jobs(JobSelection(status=JobStatus.FAILED.value, since=since, limit=5))
    spark = _sparkline(state, since)
    replicas = state.ops.workers()
    return Group(
        f"[bold]Conveyor[/] · {state.settings.namespace} · {datetime.now(UTC):%H:%M:%S} UTC",
        queues_table(state.ops.queues()),
        workers_table(replicas, state.settings.namespace, now=datetime.now(UTC)),
        f"finished per minute, last 30 min: {spark}",
        stats_table(per_kind, "kind", since),
        jobs_table(failures) if failures else "no failures in the last 30 minutes",
    )


def _sparkline(state: AppState, since: datetime) -> str:
    counts = state.ops.finished_per_minute(since)
    peak = max(counts, default=0) or 1
    return (
        "".join(SPARK[min(len(SPARK) - 1, round(c / peak * (len(SPARK) - 1)))] for c in counts)
        + f"  (peak {peak})"
    )


@click.command()
@click.option(
    "--older-than", "older_than", required=True, help="Finished before this long ago (30d) or a date."
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice([s.value for s in FINAL_STATUSES]),
    help="Only these statuses (repeatable; default: every finished status).",
)
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; delete nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_obj
def prune_command(
    state: AppState, older_than: str, statuses: tuple[str, ...], dry_run: bool, yes: bool, as_json: bool
) -> None:
    """Delete old finished jobs, their attempts, their artifacts (outputs, and inputs such as source
    photos and attachments no other job uses) with their files, and their .eml copies, in batches.

    The .eml copies are those of CONVEYOR_SMTP_URL=file://DIR (a relative DIR is taken from the
    current folder: run prune where the workers run, or give an absolute folder).
    """
    cutoff = parse_moment(older_than, option="--older-than")
    assert cutoff is not None
    total = state.ops.count_prunable(cutoff, statuses or None)
    if total and not yes and not dry_run:
        click.confirm(
            f"Delete {total} job(s) finished before {cutoff:%Y-%m-%d %H:%M} UTC, "
            "with their artifacts and files?",
            abort=True,
            err=True,
        )
    result = _prune(state, cutoff, statuses, total, dry_run=dry_run)
    if as_json:
        echo_json({**result.to_dict(), "older_than": cutoff.isoformat()}, indent=None)
        return
    removed = result.removed
    click.echo(
        f"{'would delete' if dry_run else 'deleted'} {result.jobs} job(s), {removed.artifacts} artifact(s), "
        f"{removed.files} artifact file(s) and {removed.emails} email copy(ies)"
    )


def _prune(
    state: AppState, cutoff: datetime, statuses: tuple[str, ...], total: int, *, dry_run: bool
) -> PruneResult:
    """Prune with a progress bar; a real prune (not ``--dry-run``) is one audit row."""
    selection = {"older_than": cutoff, "statuses": statuses}
    with contextlib.ExitStack() as stack:
        record = None if dry_run else stack.enter_context(state.ops.audit("prune", selection=selection))
        progress = stack.enter_context(Progress(console=err, transient=True))
        task = progress.add_task("pruning", total=total, visible=total > 1000)
        result = state.ops.prune(
            cutoff, statuses or None, lambda n: progress.advance(task, n), dry_run=dry_run
        )
        if record is not None:
            record.count = result.jobs
            record.details.update(result.removed.to_dict())
    return result


@click.command()
@json_option
@click.pass_obj
def config(state: AppState, as_json: bool) -> None:
    """The effective settings (environment and flags), passwords masked."""
    values = state.settings.masked()
    if as_json:
        echo_json(values)
        return
    table = Table(title="effective settings", title_justify="left")
    table.add_column("setting")
    table.add_column("value", overflow="fold")
    for name, value in values.items():
        table.add_row(f"CONVEYOR_{name.upper()}", cell(value))
    out.print(table)
