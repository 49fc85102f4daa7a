"""What the ``jobs_summary`` report reads: aggregates over the jobs created in a window, and
the window's rows streamed through a server-side cursor.

The report (``jobs/reports/jobs_summary.py``) shapes these figures; here is only SQL.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from jobs import crypto
from jobs.crypto import Sealer
from jobs.status import JobStatus
from jobs.store.aggregates import percentiles_by, run_seconds, wait_seconds
from jobs.store.database import Database
from jobs.store.jobs import as_utc
from jobs.store.models import AttemptRow, JobRow

#: The columns :meth:`JobsReportStore.rows` may stream.
ROW_COLUMNS = frozenset(JobRow.__table__.columns.keys())


class WindowReader:
    """Aggregates over the jobs created in ``[since, until)``, read in one transaction."""

    def __init__(
        self, session: Session, dialect: str, since: datetime, until: datetime, sealer: Sealer | None = None
    ) -> None:
        self._session = session
        self._sealer = sealer or Sealer()
        self._dialect = dialect
        self._since, self._until = since, until
        self._window: tuple[ColumnElement[bool], ...] = (
            JobRow.created_at >= since,
            JobRow.created_at < until,
        )

    def counts(self) -> list[tuple[str, str, int]]:
        """``(kind, status, jobs)``, ordered by kind then status."""
        query = (
            select(JobRow.kind, JobRow.status, func.count())
            .where(*self._window)
            .group_by(JobRow.kind, JobRow.status)
            .order_by(JobRow.kind, JobRow.status)
        )
        return [(kind, status, int(count)) for kind, status, count in self._session.execute(query)]

    def finished_per_hour(self) -> dict[datetime, tuple[int, int]]:
        """Hour (UTC) → jobs finished and failed in it, for the hours of the window with any."""
        hour = self._hour(JobRow.finished_at).label("hour")
        failed = func.sum(case((JobRow.status == JobStatus.FAILED.value, 1), else_=0))
        query = (
            select(hour, func.count(), failed)
            .where(JobRow.finished_at >= self._since, JobRow.finished_at < self._until)
            .group_by(hour)
        )
        found: dict[datetime, tuple[int, int]] = {}
        for bucket, done, failures in self._session.execute(query):
            moment = bucket if isinstance(bucket, datetime) else datetime.fromisoformat(str(bucket))
            found[as_utc(moment) or moment] = (int(done), int(failures or 0))
        return found

    def wait_percentiles(self) -> dict[str, float | None]:
        """p50/p95/p99 seconds from creation to the first attempt's start."""
        value = wait_seconds(self._dialect)
        conditions = [*self._window, AttemptRow.attempt == 1]
        return percentiles_by(self._session, self._dialect, value, conditions)[None]

    def run_percentiles(self) -> dict[str, float | None]:
        """p50/p95/p99 seconds of every finished attempt."""
        value = run_seconds(self._dialect)
        return percentiles_by(self._session, self._dialect, value, list(self._window))[None]

    def retry_rate(self) -> float | None:
        """The share of finished jobs that needed more than one attempt (``None``: none finished)."""
        finished = JobRow.status.in_([JobStatus.SUCCEEDED.value, JobStatus.FAILED.value])
        query = select(func.avg(case((JobRow.attempts > 1, 1.0), else_=0.0))).where(*self._window, finished)
        value = self._session.scalar(query)
        return None if value is None else float(value)

    def top_errors(self, limit: int) -> list[tuple[str, int]]:
        """The commonest errors of failed jobs (first 200 characters), most frequent first."""
        if self._sealer.enabled:
            return self._top_sealed_errors(limit)
        error = func.substr(JobRow.error, 1, 200).label("error")
        query = (
            select(error, func.count().label("n"))
            .where(*self._window, JobRow.status == JobStatus.FAILED.value, JobRow.error.is_not(None))
            .group_by(error)
            .order_by(func.count().desc(), error)
            .limit(limit)
        )
        return [(text, int(count)) for text, count in self._session.execute(query)]

    def _top_sealed_errors(self, limit: int) -> list[tuple[str, int]]:
        """:meth:`top_errors` when errors are stored encrypted: opened and counted here."""
        query = select(JobRow.id, JobRow.error).where(
            *self._window, JobRow.status == JobStatus.FAILED.value, JobRow.error.is_not(None)
        )
        counts: Counter[str] = Counter()
        for job_id, error in self._session.execute(query.execution_options(yield_per=5000)):
            counts[(self._sealer.open_text(error, crypto.ERROR, str(job_id)) or "")[:200]] += 1
        return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]

    def row_count(self) -> int:
        """Jobs created in the window."""
        return int(self._session.scalar(select(func.count()).select_from(JobRow).where(*self._window)) or 0)

    def _hour(self, column: Any) -> Any:
        if self._dialect == "postgresql":
            return func.date_trunc("hour", column)
        return func.strftime("%Y-%m-%d %H:00:00", column)


class JobsReportStore:
    """The job store as the ``jobs_summary`` report reads it."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @contextmanager
    def window(self, since: datetime, until: datetime) -> Iterator[WindowReader]:
        """A reader of the window's aggregates, in one transaction.

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        with self.db.session() as session:
            yield WindowReader(session, self.db.dialect, since, until, self.db.sealer)

    def rows(
        self, since: datetime, until: datetime, columns: Sequence[str], batch: int
    ) -> Iterator[tuple[Any, ...]]:
        """The window's jobs, oldest first, as tuples of ``columns``, fetched ``batch`` rows per
        round trip (a server-side cursor: the whole window is never in memory).

        Raises:
            ValueError: a column ``jobs`` does not have.
            ServiceUnavailable: the database cannot be reached.
        """
        unknown = [column for column in columns if column not in ROW_COLUMNS]
        if unknown:
            raise ValueError(f"jobs has no column {', '.join(unknown)}")
        sealed = {"payload": crypto.PAYLOAD, "result": crypto.RESULT, "error": crypto.ERROR}
        opened = [(i, sealed[column]) for i, column in enumerate(columns) if column in sealed]
        query = (
            select(JobRow.id, *(getattr(JobRow, column) for column in columns))
            .where(JobRow.created_at >= since, JobRow.created_at < until)
            .order_by(JobRow.created_at)
        )
        with self.db.translated(), self.db.engine.connect() as connection:
            result = connection.execution_options(stream_results=True, yield_per=batch).execute(query)
            for job_id, *values in result:
                for i, field in opened:  # encrypted values opened (plaintext ones stay as they are)
                    values[i] = self._open(values[i], field, str(job_id))
                yield tuple(values)

    def _open(self, value: Any, field: str, job_id: str) -> Any:
        if field == crypto.ERROR:
            return self.db.sealer.open_text(value, field, job_id)
        return self.db.sealer.open_json(value, field, job_id)
