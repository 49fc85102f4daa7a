"""Read-side figures for the admin's views: finished jobs per group, queue figures, recent workers.

Plain values come out (dataclasses, dicts): what they mean and how they are shown lives in
``jobs/admin/``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from sqlalchemy import case, func, literal, or_, select

from jobs.status import JobStatus
from jobs.store.aggregates import percentiles_by, run_seconds, wait_seconds
from jobs.store.database import Database
from jobs.store.tables import Attempts, Jobs

#: p50/p95/p99 in seconds (``None`` without finished attempts).
Percentiles = dict[str, float | None]


@dataclass(frozen=True)
class FinishedGroup:
    """Jobs of one kind or queue that finished in a window."""

    group: str
    succeeded: int
    failed: int
    #: Finished jobs that needed more than one attempt.
    retried: int
    total: int
    #: Queue wait of first attempts, and run time of every attempt.
    wait: Percentiles
    run: Percentiles


@dataclass(frozen=True)
class QueueFigures:
    """Per queue: jobs running now, and when the oldest job waiting to run was created."""

    running: dict[str, int]
    oldest_waiting: dict[str, datetime]


@dataclass(frozen=True)
class WorkerActivity:
    """A worker process (``host``, ``pid``) as its attempts show it."""

    host: str
    pid: int
    attempts: int
    last_seen: datetime


class StatsStore:
    """Aggregates over ``jobs`` and ``job_attempts`` for ``conveyor stats``, ``queues`` and ``workers``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def finished_since(self, since: datetime, by: str = "kind") -> list[FinishedGroup]:
        """Jobs finished since ``since``, grouped by ``kind`` or ``queue``, ordered by group.

        Raises:
            ValueError: ``by`` is neither ``kind`` nor ``queue``.
            ServiceUnavailable: the database cannot be reached.
        """
        if by not in ("kind", "queue"):
            raise ValueError(f"group by kind or queue, not {by!r}")
        column = Jobs.kind if by == "kind" else Jobs.queue
        finished = [Jobs.finished_at >= since]
        dialect = self.db.dialect
        with self.db.transaction() as session:
            rows = session.execute(
                select(
                    column,
                    func.sum(case((Jobs.status == JobStatus.SUCCEEDED.value, 1), else_=0)),
                    func.sum(case((Jobs.status == JobStatus.FAILED.value, 1), else_=0)),
                    func.sum(case((Jobs.attempts > 1, 1), else_=0)),
                    func.count(),
                )
                .where(*finished)
                .group_by(column)
                .order_by(column)
            ).all()
            first = [*finished, Attempts.attempt == 1]
            waits = percentiles_by(session, dialect, wait_seconds(dialect), first, column)
            runs = percentiles_by(session, dialect, run_seconds(dialect), finished, column)
        empty: Percentiles = dict.fromkeys(("p50", "p95", "p99"))
        return [
            FinishedGroup(
                group=str(group),
                succeeded=int(done or 0),
                failed=int(failed or 0),
                retried=int(retried or 0),
                total=int(count),
                wait=waits.get(group, empty),
                run=runs.get(group, empty),
            )
            for group, done, failed, retried, count in rows
        ]

    def queue_figures(self, queues: Iterable[str], now: datetime) -> QueueFigures:
        """Running jobs, and the creation time of the oldest job due to run (``queued``, its
        ``eta`` reached), of each queue in ``queues``.

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        names = list(queues)
        # Status and queue names inline, not parameters: psycopg prepares a statement after a
        # few runs, and a generic plan, blind to which queue has a backlog, would walk every
        # queued job for a queue that has none.
        queued = literal(JobStatus.QUEUED.value, literal_execute=True)
        waiting = (Jobs.status == queued) & or_(Jobs.eta.is_(None), Jobs.eta <= now)
        with self.db.transaction() as session:
            running = session.execute(
                select(Jobs.queue, func.count())
                .where(
                    Jobs.queue.in_(names),
                    Jobs.status == literal(JobStatus.RUNNING.value, literal_execute=True),
                )
                .group_by(Jobs.queue)
            ).all()
            # One min() per queue: each is the first matching entry of the (status, created_at)
            # index, where a GROUP BY would read every queued job of a backlog.
            firsts = [
                select(func.min(Jobs.created_at))
                .where(Jobs.queue == literal(name, literal_execute=True), waiting)
                .scalar_subquery()
                for name in names
            ]
            oldest = session.execute(select(*firsts)).one() if names else ()
        return QueueFigures(
            running={queue: int(count) for queue, count in running},
            oldest_waiting={
                name: _utc(moment) for name, moment in zip(names, oldest, strict=True) if moment is not None
            },
        )

    def worker_activity(self, since: datetime) -> list[WorkerActivity]:
        """Worker processes that started or finished an attempt since ``since``, last seen first.

        Raises:
            ServiceUnavailable: the database cannot be reached.
            SchemaMissing: the database has no schema.
        """
        last_seen = func.max(func.coalesce(Attempts.finished_at, Attempts.started_at)).label("last_seen")
        query = (
            select(Attempts.host, Attempts.pid, func.count().label("attempts"), last_seen)
            .where(or_(Attempts.started_at >= since, Attempts.finished_at >= since))
            .group_by(Attempts.host, Attempts.pid)
            .order_by(last_seen.desc())
        )
        with self.db.transaction() as session:
            rows = session.execute(query).all()
        return [
            WorkerActivity(host=host, pid=pid, attempts=int(attempts), last_seen=_utc(seen))
            for host, pid, attempts, seen in rows
        ]


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time Conveyor stores is UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class RunningAttempt:
    """A job running now, and the worker process running it."""

    job_id: str
    kind: str
    queue: str
    attempt: int
    worker: str
    host: str
    pid: int
    started_at: datetime

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "started_at": self.started_at.isoformat()}


def running_attempts(db: Database, namespace: str, limit: int = 200) -> list[RunningAttempt]:
    """The attempts of ``namespace``'s ``running`` jobs that have not ended (its queues are
    ``<namespace>.<queue>``), oldest first (at most ``limit``).

    Raises:
        ServiceUnavailable: the database cannot be reached.
    """
    query = (
        select(
            Jobs.id,
            Jobs.kind,
            Jobs.queue,
            Attempts.attempt,
            Attempts.worker,
            Attempts.host,
            Attempts.pid,
            Attempts.started_at,
        )
        .join(Attempts, (Attempts.job_id == Jobs.id) & (Attempts.attempt == Jobs.attempts))
        .where(
            Jobs.status == JobStatus.RUNNING.value,
            Attempts.finished_at.is_(None),
            Jobs.queue.startswith(f"{namespace}.", autoescape=True),
        )
        .order_by(Attempts.started_at)
        .limit(limit)
    )
    with db.transaction() as session:
        rows = session.execute(query).all()
    return [
        RunningAttempt(str(job_id), kind, queue, int(attempt), worker, host, int(pid), _utc(started))
        for job_id, kind, queue, attempt, worker, host, pid, started in rows
    ]
