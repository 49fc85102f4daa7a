"""The dashboard overview's figures: finished jobs and latency per time bucket, and live counts.

One aggregate query per chart, each over the index ``ix_jobs_finished_at_status`` (it holds
every column they read), so that a window of an hour or a day reads only its own index entries
however many jobs the table holds. Percentiles need PostgreSQL (``percentile_cont``); on
SQLite (the demo) the latency chart is empty.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Float, case, cast, func, literal, select

from jobs.status import JobStatus
from jobs.store.database import Database
from jobs.store.models import JobRow


@dataclass(frozen=True)
class FinishedBucket:
    """Jobs that finished in one time bucket (``at``: its start), by outcome."""

    at: datetime
    succeeded: int
    failed: int
    other: int

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "at": self.at.isoformat()}


@dataclass(frozen=True)
class LatencyBucket:
    """Jobs that finished in one bucket: run time and queue wait percentiles (seconds)."""

    at: datetime
    jobs: int
    run_p50: float | None
    run_p95: float | None
    wait_p50: float | None
    wait_p95: float | None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "at": self.at.isoformat()}


@dataclass(frozen=True)
class JobCounts:
    """Jobs queued and running now, and failed since a moment."""

    queued: int
    running: int
    failed: int


def _bucket(dialect: str, column: Any, seconds: int) -> Any:
    """The start of ``column``'s bucket of ``seconds``, as seconds since the epoch."""
    if dialect == "postgresql":
        return func.floor(func.extract("epoch", column) / seconds) * seconds
    return cast(func.strftime("%s", column), Float) - cast(func.strftime("%s", column), Float) % seconds


def _between(since: datetime, until: datetime | None) -> list[Any]:
    """The conditions of a job that finished in [``since``, ``until``)."""
    conditions = [JobRow.finished_at >= since]
    if until is not None:
        conditions.append(JobRow.finished_at < until)
    return conditions


def _rounded(seconds: Any) -> float | None:
    return None if seconds is None else round(float(seconds), 4)


def _moment(epoch: Any) -> datetime:
    return datetime.fromtimestamp(float(epoch), UTC)


class OverviewStore:
    """Aggregates for the dashboard's overview page, over one namespace's jobs (those of its
    queues, named ``<namespace>.<queue>``)."""

    def __init__(self, db: Database, namespace: str) -> None:
        self.db = db
        self.namespace = namespace
        self.mine = JobRow.queue.startswith(f"{namespace}.", autoescape=True)

    def finished(
        self, since: datetime, bucket_seconds: int, until: datetime | None = None
    ) -> list[FinishedBucket]:
        """Jobs finished since ``since`` (and before ``until``), per bucket (only buckets with
        jobs), oldest first.

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        bucket = _bucket(self.db.dialect, JobRow.finished_at, bucket_seconds).label("bucket")
        succeeded = func.sum(case((JobRow.status == JobStatus.SUCCEEDED.value, 1), else_=0))
        failed = func.sum(case((JobRow.status == JobStatus.FAILED.value, 1), else_=0))
        query = (
            select(bucket, succeeded, failed, func.count())
            .where(*_between(since, until), self.mine)
            .group_by(bucket)
            .order_by(bucket)
        )
        with self.db.session() as session:
            rows = session.execute(query).all()
        return [
            FinishedBucket(
                _moment(at), int(ok or 0), int(bad or 0), int(total) - int(ok or 0) - int(bad or 0)
            )
            for at, ok, bad, total in rows
        ]

    def latency(
        self, since: datetime, bucket_seconds: int, until: datetime | None = None
    ) -> list[LatencyBucket]:
        """p50/p95 run time and queue wait of the jobs that finished since ``since`` (and before
        ``until``) and had started, per bucket of their end, oldest first; empty on SQLite.

        Run time is the last attempt's (start to end); queue wait is from creation to start, of
        the jobs that ran once (a retried job's start is its last attempt's). Read from the jobs
        alone, so that the index ``ix_jobs_finished_at_status`` answers without a join.

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        dialect = self.db.dialect
        if dialect != "postgresql":
            return []
        bucket = _bucket(dialect, JobRow.finished_at, bucket_seconds).label("bucket")
        # Percentiles of intervals (cheaper to sort than numerics), in seconds afterwards; the
        # aggregates of one ordering share its sort.
        run = JobRow.finished_at - JobRow.started_at
        wait = JobRow.started_at - JobRow.created_at
        once = JobRow.attempts == 1
        query = (
            select(
                bucket,
                func.count(),
                func.extract("epoch", func.percentile_cont(0.5).within_group(run)),
                func.extract("epoch", func.percentile_cont(0.95).within_group(run)),
                func.extract("epoch", func.percentile_cont(0.5).within_group(wait).filter(once)),
                func.extract("epoch", func.percentile_cont(0.95).within_group(wait).filter(once)),
            )
            .where(*_between(since, until), JobRow.started_at.is_not(None), self.mine)
            .group_by(bucket)
            .order_by(bucket)
        )
        with self.db.session() as session:
            rows = session.execute(query).all()
        return [
            LatencyBucket(
                _moment(at), int(count), *(None if v is None else round(float(v), 4) for v in values)
            )
            for at, count, *values in rows
        ]

    def counts(self, failed_since: datetime) -> JobCounts:
        """Jobs ``queued`` and ``running`` now, and ``failed`` since ``failed_since``: two counts
        in one transaction, each answered by an index alone (``(status, created_at)`` and
        ``(finished_at, status)``).

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        # Statuses inline, not parameters: a generic plan (psycopg prepares a statement after a
        # few runs) would not know how few jobs are queued or running, and could read them all.
        queued, running, failed_ = (
            literal(status.value, literal_execute=True)
            for status in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.FAILED)
        )
        waiting = select(
            func.sum(case((JobRow.status == queued, 1), else_=0)),
            func.sum(case((JobRow.status == running, 1), else_=0)),
        ).where(JobRow.status.in_((queued, running)), self.mine)
        failed = select(func.count()).where(
            JobRow.finished_at >= failed_since, JobRow.status == failed_, self.mine
        )
        with self.db.session() as session:
            now_queued, now_running = session.execute(waiting).one()
            recently_failed = session.scalar(failed)
        return JobCounts(int(now_queued or 0), int(now_running or 0), int(recently_failed or 0))
