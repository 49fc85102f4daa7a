"""The job rows behind dead-lettered messages: read them, reopen one to be requeued, fail one purged."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update

from jobs import crypto
from jobs.status import Event, JobStatus, sources, target
from jobs.store.database import Database
from jobs.store.jobs import utcnow
from jobs.store.models import JobRow

_REQUEUABLE = sorted(status.value for status in sources(Event.REQUEUE))
_PURGEABLE = sorted(status.value for status in sources(Event.PURGE))
#: Ids per ``IN (…)`` when reading many rows.
_CHUNK = 500


@dataclass(frozen=True)
class DeadJob:
    """The facts a dead-letter listing shows of a job."""

    id: str
    kind: str
    status: str
    attempts: int
    error: str | None


@dataclass(frozen=True)
class Reopened:
    """A job's row as it was before :meth:`DeadJobStore.reopen`; ``reopened`` False when its
    status was not one of those asked for (then nothing changed)."""

    status: str
    error: str | None
    finished_at: datetime | None
    reopened: bool


class DeadJobStore:
    """Job rows of messages in the dead-letter queues."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def rows(self, job_ids: Iterable[str]) -> dict[str, DeadJob]:
        """The rows of those ids that exist (ids must be canonical UUIDs).

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        ids = sorted(set(job_ids))
        columns = (JobRow.id, JobRow.kind, JobRow.status, JobRow.attempts, JobRow.error)
        found: dict[str, DeadJob] = {}
        with self.db.session() as session:
            for start in range(0, len(ids), _CHUNK):
                query = select(*columns).where(JobRow.id.in_(ids[start : start + _CHUNK]))
                for ident, kind, status, attempts, error in session.execute(query):
                    error = self.db.sealer.open_text(error, crypto.ERROR, str(ident))
                    found[str(ident)] = DeadJob(str(ident), kind, status, attempts, error)
        return found

    def reopen(self, job_id: str) -> Reopened | None:
        """Back to ``queued`` (no error, eta, progress or end) when the transition table lets a
        dead message be requeued from its status, under a row lock; ``None`` when the row is gone.

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        query = select(JobRow.status, JobRow.error, JobRow.finished_at).where(JobRow.id == job_id)
        with self.db.session() as session:
            row = session.execute(query.with_for_update()).one_or_none()
            if row is None:
                return None
            before = Reopened(row.status, row.error, row.finished_at, reopened=row.status in _REQUEUABLE)
            if before.reopened:
                queued = {"status": target(Event.REQUEUE).value, "error": None, "finished_at": None}
                session.execute(
                    update(JobRow).where(JobRow.id == job_id).values(**queued, eta=None, progress=None)
                )
            return before

    def undo_reopen(self, job_id: str, before: Reopened) -> None:
        """Put back a reopened row's status, error and end, unless it moved on from ``queued``.

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        back = update(JobRow).where(JobRow.id == job_id, JobRow.status == JobStatus.QUEUED.value)
        with self.db.session() as session:
            session.execute(
                back.values(status=before.status, error=before.error, finished_at=before.finished_at)
            )

    def fail(self, job_id: str, error: str) -> None:
        """``failed`` for good when the transition table lets a dead message be purged from its
        status: its own error and end are kept, ``error`` and now fill them when missing.

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        dead = update(JobRow).where(JobRow.id == job_id, JobRow.status.in_(_PURGEABLE))
        values: dict[str, Any] = {
            "status": target(Event.PURGE).value,
            "error": func.coalesce(JobRow.error, self.db.sealer.seal_text(error, crypto.ERROR, job_id)),
            "finished_at": func.coalesce(JobRow.finished_at, utcnow()),
            "eta": None,
        }
        with self.db.session() as session:
            session.execute(dead.values(**values))
