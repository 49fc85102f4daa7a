"""The dashboard overview's figures: finished jobs and latency per time bucket, and live counts.

One aggregate query per chart, each over an indexed time column (``jobs.finished_at``,
``job_attempts.started_at``), so that a window of an hour or a day reads only its own rows
however many jobs the table holds. Percentiles need PostgreSQL (``percentile_cont``); on
SQLite (the demo) the latency chart is empty.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Float, case, cast, func, or_, select

from jobs.status import JobStatus
from jobs.store.aggregates import run_seconds, wait_seconds
from jobs.store.database import Database
from jobs.store.models import AttemptRow, JobRow


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
    """Attempts that started in one bucket: run time of all, queue wait of first attempts (seconds)."""

    at: datetime
    attempts: int
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


def _moment(epoch: Any) -> datetime:
    return datetime.fromtimestamp(float(epoch), UTC)


class OverviewStore:
    """Aggregates for the dashboard's overview page."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def finished(self, since: datetime, bucket_seconds: int) -> list[FinishedBucket]:
        """Jobs finished since ``since``, per bucket (only buckets with jobs), oldest first.

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        bucket = _bucket(self.db.dialect, JobRow.finished_at, bucket_seconds).label("bucket")
        succeeded = func.sum(case((JobRow.status == JobStatus.SUCCEEDED.value, 1), else_=0))
        failed = func.sum(case((JobRow.status == JobStatus.FAILED.value, 1), else_=0))
        query = (
            select(bucket, succeeded, failed, func.count())
            .where(JobRow.finished_at >= since)
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

    def latency(self, since: datetime, bucket_seconds: int) -> list[LatencyBucket]:
        """p50/p95 run time and queue wait of the attempts that started since ``since`` and
        finished, per bucket, oldest first (empty on SQLite).

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        dialect = self.db.dialect
        if dialect != "postgresql":
            return []
        bucket = _bucket(dialect, AttemptRow.started_at, bucket_seconds).label("bucket")
        run, wait = run_seconds(dialect), wait_seconds(dialect)
        first = AttemptRow.attempt == 1
        query = (
            select(
                bucket,
                func.count(),
                func.percentile_cont(0.5).within_group(run),
                func.percentile_cont(0.95).within_group(run),
                func.percentile_cont(0.5).within_group(wait).filter(first),
                func.percentile_cont(0.95).within_group(wait).filter(first),
            )
            .select_from(AttemptRow)
            .join(JobRow, JobRow.id == AttemptRow.job_id)
            .where(AttemptRow.started_at >= since, AttemptRow.finished_at.is_not(None))
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
        """Jobs ``queued`` and ``running`` now, and ``failed`` since ``failed_since``, in one query.

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        queued, running, failed = JobStatus.QUEUED.value, JobStatus.RUNNING.value, JobStatus.FAILED.value
        recently_failed = (JobRow.status == failed) & (JobRow.finished_at >= failed_since)
        query = select(
            func.sum(case((JobRow.status == queued, 1), else_=0)),
            func.sum(case((JobRow.status == running, 1), else_=0)),
            func.sum(case((recently_failed, 1), else_=0)),
        ).where(or_(JobRow.status.in_((queued, running)), recently_failed))
        with self.db.session() as session:
            row = session.execute(query).one()
        return JobCounts(*(int(value or 0) for value in row))
