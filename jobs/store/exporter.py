"""What the cluster exporter reads from PostgreSQL for one namespace, at scrape time.

Two kinds of figures: :meth:`ExporterStore.live_figures` reads the jobs that are not final
(waiting, running, retrying) and the held messages, cheap because those rows are few and reached
through the ``status`` index; :meth:`ExporterStore.final_counts` counts the finished rows, a
scan of the whole table that the exporter runs off the scrape path (see
``jobs/admin/exporter.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import String, and_, case, cast, func, or_, select

from jobs.status import FINAL_STATUSES, JobStatus
from jobs.store.database import Database
from jobs.store.models import DelayedMessageRow, JobRow

#: ``(queue, kind, status)`` → job rows.
JobCounts = dict[tuple[str, str, str], int]

_LIVE = sorted(s.value for s in JobStatus if s not in FINAL_STATUSES)
_FINAL = sorted(s.value for s in FINAL_STATUSES)
#: The statuses of a job that waits for a message to run it: new or requeued, or between tries.
_WAITING = (JobStatus.QUEUED.value, JobStatus.RETRYING.value)


@dataclass(frozen=True)
class LiveFigures:
    """The namespace's jobs that are not final, and its held messages, per queue."""

    #: Rows of each ``(queue, kind, status)`` for the statuses that are not final.
    counts: JobCounts = field(default_factory=dict)
    #: Creation time of the oldest ``queued`` job whose ``eta`` has come (``conveyor queues``).
    oldest_waiting: dict[str, datetime] = field(default_factory=dict)
    #: Start of the oldest attempt of a ``running`` job.
    oldest_running: dict[str, datetime] = field(default_factory=dict)
    #: ``queued`` or ``retrying`` jobs due for longer than the grace period that have no held
    #: message: each needs a message in RabbitMQ, or nothing will run it.
    unheld_due: dict[str, int] = field(default_factory=dict)
    #: Messages held in ``delayed_messages`` (delayed enqueues, retries in their backoff).
    held: dict[str, int] = field(default_factory=dict)


class ExporterStore:
    """Aggregates over ``jobs`` and ``delayed_messages`` for one namespace (its queues' prefix)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def live_figures(self, namespace: str, now: datetime, grace: timedelta) -> LiveFigures:
        """Counts and ages of the jobs that are not final, and the held messages, per queue.

        One statement reads the jobs (through the ``status`` index, so its cost follows the
        jobs not yet final, not the size of the table), one the held messages.

        Raises:
            ServiceUnavailable: the database cannot be reached.
            SchemaMissing: the database has no schema.
        """
        own = JobRow.queue.startswith(f"{namespace}.", autoescape=True)
        waiting = (JobRow.status == JobStatus.QUEUED.value) & or_(JobRow.eta.is_(None), JobRow.eta <= now)
        due = func.coalesce(JobRow.eta, JobRow.created_at) <= now - grace
        unheld = and_(JobRow.status.in_(_WAITING), due, DelayedMessageRow.message_id.is_(None))
        jobs = (
            select(
                JobRow.queue,
                JobRow.kind,
                JobRow.status,
                func.count(),
                func.min(case((waiting, JobRow.created_at))),
                func.min(case((JobRow.status == JobStatus.RUNNING.value, JobRow.started_at))),
                func.count(case((unheld, 1))),
            )
            .outerjoin(DelayedMessageRow, DelayedMessageRow.message_id == cast(JobRow.id, String))
            .where(JobRow.status.in_(_LIVE), own)
            .group_by(JobRow.queue, JobRow.kind, JobRow.status)
        )
        held = (
            select(DelayedMessageRow.queue, func.count())
            .where(DelayedMessageRow.queue.startswith(f"{namespace}.", autoescape=True))
            .group_by(DelayedMessageRow.queue)
        )
        figures = LiveFigures()
        with self.db.session() as session:
            for queue, kind, status, count, oldest_wait, oldest_run, stranded in session.execute(jobs):
                figures.counts[(queue, kind, status)] = int(count)
                _earliest(figures.oldest_waiting, queue, oldest_wait)
                _earliest(figures.oldest_running, queue, oldest_run)
                figures.unheld_due[queue] = figures.unheld_due.get(queue, 0) + int(stranded)
            figures.held.update((queue, int(count)) for queue, count in session.execute(held))
        return figures

    def final_counts(self, namespace: str) -> JobCounts:
        """Rows of each ``(queue, kind, status)`` for the final statuses: a scan of the table.

        Raises:
            ServiceUnavailable: the database cannot be reached.
            SchemaMissing: the database has no schema.
        """
        query = (
            select(JobRow.queue, JobRow.kind, JobRow.status, func.count())
            .where(JobRow.status.in_(_FINAL), JobRow.queue.startswith(f"{namespace}.", autoescape=True))
            .group_by(JobRow.queue, JobRow.kind, JobRow.status)
        )
        with self.db.session() as session:
            return {
                (queue, kind, status): int(count) for queue, kind, status, count in session.execute(query)
            }


def _earliest(earliest: dict[str, datetime], queue: str, moment: datetime | None) -> None:
    if moment is None:
        return
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if queue not in earliest or moment < earliest[queue]:
        earliest[queue] = moment
