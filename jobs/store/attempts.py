"""Storage operations of the worker side: an attempt starts, an attempt ends.

Both are guarded so that ordering between replicas does not matter: a job row is
upserted on first sight (a plain Dramatiq producer's message gets one too), and an
attempt only moves the job's status while it is still the job's latest attempt.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert

from jobs.status import STARTABLE_STATUSES, AttemptOutcome, JobStatus
from jobs.store.database import Database
from jobs.store.delayed import HeldMessage, hold
from jobs.store.jobs import utcnow
from jobs.store.models import AttemptRow, JobRow
from jobs.store.waiting import wait_for_store

_STARTABLE = [status.value for status in STARTABLE_STATUSES]


@dataclass(frozen=True)
class WorkerIdentity:
    """Who runs an attempt."""

    worker_id: str
    host: str
    pid: int


@dataclass(frozen=True)
class SeenMessage:
    """What the worker knows of a job from its message alone."""

    job_id: str
    kind: str
    queue: str
    payload: dict[str, Any]
    max_retries: int | None
    created_at: datetime


@dataclass(frozen=True)
class StartedAttempt:
    number: int
    #: Runs of this job that ended with their worker dying (a poison message kills workers).
    lost_runs: int


@dataclass(frozen=True)
class RunningAttempt:
    """The open attempt of a ``running`` job."""

    number: int
    #: The worker process that runs it (None when no attempt row is open).
    worker: str | None


@dataclass(frozen=True)
class AttemptEnd:
    """How an attempt ended."""

    outcome: AttemptOutcome
    result: dict[str, Any] | None = None
    error: str | None = None
    traceback: str | None = None
    #: When a retry is due.
    eta: datetime | None = None


JOB_STATUS_AFTER = {
    AttemptOutcome.SUCCEEDED: JobStatus.SUCCEEDED,
    AttemptOutcome.RETRYING: JobStatus.RETRYING,
    AttemptOutcome.FAILED: JobStatus.FAILED,
    AttemptOutcome.CANCELLED: JobStatus.CANCELLED,
    AttemptOutcome.INTERRUPTED: JobStatus.RETRYING,
}


class AttemptStore:
    """Records the start and the end of each run of a job."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def start(
        self, seen: SeenMessage, worker: WorkerIdentity, *, take_over: int | None = None
    ) -> StartedAttempt | None:
        """Mark the job ``running`` and open an attempt row, in one transaction.

        ``take_over`` is the number of a ``running`` attempt whose worker is gone: the job
        starts again only if that attempt is still its latest.

        Returns:
            The attempt, or ``None`` when the job must not start: it is already succeeded,
            failed or cancelled, or running (see :meth:`running_attempt`), or it moved
            since ``take_over`` was read.
        """
        now = utcnow()
        insert = self._insert(JobRow).values(
            id=seen.job_id,
            kind=seen.kind,
            queue=seen.queue,
            status=JobStatus.RUNNING.value,
            payload=seen.payload,
            attempts=1,
            max_retries=seen.max_retries,
            created_at=seen.created_at,
            started_at=now,
        )
        upsert = insert.on_conflict_do_update(
            index_elements=[JobRow.id],
            set_={
                "status": JobStatus.RUNNING.value,
                "attempts": JobRow.attempts + 1,
                "started_at": now,
                "eta": None,
                "error": None,
            },
            where=JobRow.status.in_(_STARTABLE)
            if take_over is None
            else and_(JobRow.status == JobStatus.RUNNING.value, JobRow.attempts == take_over),
        ).returning(JobRow.attempts)
        with self.db.session() as session:
            attempt = session.execute(upsert).scalar_one_or_none()
            if attempt is None:
                return None
            # A first attempt has no earlier run that could have been lost: save the round trip.
            lost = mark_lost_runs(session, seen.job_id, now) if attempt > 1 else 0
            session.add(
                AttemptRow(
                    job_id=seen.job_id,
                    attempt=attempt,
                    worker=worker.worker_id,
                    host=worker.host,
                    pid=worker.pid,
                    started_at=now,
                )
            )
            return StartedAttempt(number=int(attempt), lost_runs=int(lost))

    def running_attempt(self, job_id: str) -> RunningAttempt | None:
        """The job's open attempt if the job is ``running`` (None when it is not)."""
        query = (
            select(JobRow.attempts, AttemptRow.worker)
            .outerjoin(
                AttemptRow,
                and_(
                    AttemptRow.job_id == JobRow.id,
                    AttemptRow.attempt == JobRow.attempts,
                    AttemptRow.finished_at.is_(None),
                ),
            )
            .where(JobRow.id == job_id, JobRow.status == JobStatus.RUNNING.value)
        )
        with self.db.session() as session:
            row = session.execute(query).first()
        return None if row is None else RunningAttempt(number=int(row[0]), worker=row[1])

    def cancel_requested(self, job_id: str) -> bool:
        """Whether an admin asked this running job to stop."""
        with self.db.session() as session:
            return session.scalar(select(JobRow.cancel_requested_at).where(JobRow.id == job_id)) is not None

    def finish(self, job_id: str, attempt: int, end: AttemptEnd, *, held: HeldMessage | None = None) -> bool:
        """Close the attempt and move the job on, in one transaction (with the retry's message, if any).

        Returns:
            Whether the job row moved: ``False`` when a newer attempt has started meanwhile.
        """
        now = utcnow()
        status = JOB_STATUS_AFTER[end.outcome]
        with self.db.session() as session:
            session.execute(
                update(AttemptRow)
                .where(and_(AttemptRow.job_id == job_id, AttemptRow.attempt == attempt))
                .values(outcome=end.outcome.value, finished_at=now, error=end.error, traceback=end.traceback)
            )
            values: dict[str, Any] = {"status": status.value, "error": end.error}
            if end.outcome is AttemptOutcome.SUCCEEDED:
                values.update(result=end.result, finished_at=now)
            elif end.outcome in (AttemptOutcome.FAILED, AttemptOutcome.CANCELLED):
                values.update(finished_at=now)
            else:
                values.update(eta=end.eta)
            moved = session.execute(
                update(JobRow).where(and_(JobRow.id == job_id, JobRow.attempts == attempt)).values(**values)
            )
            if held is not None:
                hold(session, held)
            return bool(moved.rowcount)  # type: ignore[attr-defined]

    def finish_detached(
        self,
        job_id: str,
        attempt: int,
        end: AttemptEnd,
        *,
        held: HeldMessage | None = None,
        stopping: threading.Event | None = None,
    ) -> Future[bool]:
        """:meth:`finish`, for a caller that does not wait for the commit: the Future tells when.

        Here the end is written at once, waiting out an outage until ``stopping`` is set (the
        Future then holds the ``ServiceUnavailable``); a batching store writes it with a batch.
        """
        recorded: Future[bool] = Future()
        try:
            moved = wait_for_store(lambda: self.finish(job_id, attempt, end, held=held), stopping)
            recorded.set_result(moved)
        except Exception as exc:
            recorded.set_exception(exc)
        return recorded

    def close(self) -> None:
        """Nothing to release here (a batching store stops its writer)."""

    def _insert(self, table: type[JobRow]) -> Any:
        dialect_insert = postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert
        statement: Insert = dialect_insert(table)
        return statement


def mark_lost_runs(
    session: Session | Connection, job_id: str, now: datetime, *, before: int | None = None
) -> int:
    """Close attempts still open (their worker died mid-run), those numbered below ``before`` if
    given; return how many runs were lost so far."""
    open_attempts = and_(AttemptRow.job_id == job_id, AttemptRow.finished_at.is_(None))
    if before is not None:
        open_attempts = and_(open_attempts, AttemptRow.attempt < before)
    marked = session.execute(
        update(AttemptRow)
        .where(open_attempts)
        .values(outcome=AttemptOutcome.LOST.value, finished_at=now, error="worker lost mid-run")
    )
    if not marked.rowcount:  # type: ignore[attr-defined]
        return 0  # the usual case: no query for the count
    lost = session.scalar(
        select(func.count()).where(
            AttemptRow.job_id == job_id, AttemptRow.outcome == AttemptOutcome.LOST.value
        )
    )
    return int(lost or 0)
