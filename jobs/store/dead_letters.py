"""The job rows behind dead-lettered messages: read them, reopen one to be requeued, fail one purged."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Text, cast, func, select, update
from sqlalchemy.sql import ColumnElement

from jobs import crypto
from jobs.status import Event, JobStatus, sources, target
from jobs.store.database import Database
from jobs.store.jobs import as_utc, utcnow
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
    #: The error fingerprint's key the worker stored when it dead-lettered the job (None: before
    #: migration 0016, or its message was requeued or purged since).
    group: str | None = None


@dataclass(frozen=True)
class MarkedJob:
    """A job row marked as dead-lettered (``dead_fingerprint`` set)."""

    id: str
    kind: str
    queue: str
    status: str
    attempts: int
    #: When it failed for good: when its message went to the dead-letter queue.
    finished_at: datetime | None
    group: str
    error: str | None


@dataclass(frozen=True)
class MarkedGroup:
    """The rows marked with one fingerprint key: counted, dated and listed by the database."""

    group: str
    ids: tuple[str, ...]
    first: datetime | None
    last: datetime | None
    queues: tuple[str, ...]
    #: Its newest member: its kind and error (opened) show what the group died of.
    kind: str
    error: str | None


@dataclass(frozen=True)
class Reopened:
    """A job's row as it was before :meth:`DeadJobStore.reopen`; ``reopened`` False when its
    status was not one of those asked for (then nothing changed)."""

    status: str
    error: str | None
    finished_at: datetime | None
    reopened: bool
    #: Its ``dead_fingerprint``, put back with the rest when the requeue is undone.
    group: str | None = None


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
        columns = (
            JobRow.id,
            JobRow.kind,
            JobRow.status,
            JobRow.attempts,
            JobRow.error,
            JobRow.dead_fingerprint,
        )
        found: dict[str, DeadJob] = {}
        with self.db.session() as session:
            for start in range(0, len(ids), _CHUNK):
                query = select(*columns).where(JobRow.id.in_(ids[start : start + _CHUNK]))
                for ident, kind, status, attempts, error, group in session.execute(query):
                    error = self.db.sealer.open_text(error, crypto.ERROR, str(ident))
                    found[str(ident)] = DeadJob(str(ident), kind, status, attempts, error, group)
        return found

    def marked(self, queues: Iterable[str], since: datetime, limit: int) -> list[MarkedJob]:
        """The newest ``limit`` rows of ``queues`` marked as dead-lettered that failed after
        ``since`` (older messages have expired from their queue), read from ``ix_jobs_dead_letters``.

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        columns = (JobRow.id, JobRow.kind, JobRow.queue, JobRow.status, JobRow.attempts, JobRow.finished_at)
        query = (
            select(*columns, JobRow.dead_fingerprint, JobRow.error)
            .where(*_marked(queues, since))
            .order_by(JobRow.finished_at.desc(), JobRow.id)
            .limit(limit)
        )
        with self.db.session() as session:
            return [
                MarkedJob(
                    str(ident),
                    kind,
                    queue,
                    status,
                    attempts,
                    as_utc(end),
                    str(group),
                    self._open(error, ident),
                )
                for ident, kind, queue, status, attempts, end, group, error in session.execute(query)
            ]

    def marked_groups(self, queues: Iterable[str], since: datetime) -> list[MarkedGroup]:
        """The same rows (all of them) by fingerprint key: their ids, first and last end, queues,
        and the newest member's kind and error. Aggregated by the database per key and queue, the
        newest member per key picked by a window function: two statements, a row per group.

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        where = _marked(queues, since)
        ids = func.aggregate_strings(cast(JobRow.id, Text), ",")
        ends = (func.min(JobRow.finished_at), func.max(JobRow.finished_at))
        per_queue = select(JobRow.dead_fingerprint, JobRow.queue, ids, *ends).where(*where)
        newest = func.row_number().over(
            partition_by=JobRow.dead_fingerprint, order_by=(JobRow.finished_at.desc(), JobRow.id)
        )
        ranked = select(JobRow.dead_fingerprint, JobRow.id, JobRow.kind, JobRow.error, newest.label("rank"))
        ranked_rows = ranked.where(*where).subquery()
        heads = select(*(c for c in ranked_rows.c if c.key != "rank")).where(ranked_rows.c.rank == 1)
        with self.db.session() as session:
            parts = session.execute(per_queue.group_by(JobRow.dead_fingerprint, JobRow.queue)).all()
            kinds = {str(g): (kind, self._open(error, i)) for g, i, kind, error in session.execute(heads)}
        return _merged(parts, kinds)

    def _open(self, error: str | None, job_id: object) -> str | None:
        return self.db.sealer.open_text(error, crypto.ERROR, str(job_id))

    def reopen(self, job_id: str) -> Reopened | None:
        """Back to ``queued`` (no error, eta, progress or end) when the transition table lets a
        dead message be requeued from its status, under a row lock; ``None`` when the row is gone.

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        columns = (JobRow.status, JobRow.error, JobRow.finished_at, JobRow.dead_fingerprint)
        query = select(*columns).where(JobRow.id == job_id)
        with self.db.session() as session:
            row = session.execute(query.with_for_update()).one_or_none()
            if row is None:
                return None
            requeuable = row.status in _REQUEUABLE
            before = Reopened(row.status, row.error, row.finished_at, requeuable, row.dead_fingerprint)
            if before.reopened:
                queued = {"status": target(Event.REQUEUE).value, "error": None, "finished_at": None}
                # Its message leaves the dead-letter queue: the row is no longer one of its letters.
                queued["dead_fingerprint"] = None
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
        values = {"status": before.status, "error": before.error, "finished_at": before.finished_at}
        with self.db.session() as session:
            session.execute(back.values(**values, dead_fingerprint=before.group))

    def fail(self, job_id: str, error: str) -> None:
        """``failed`` for good when the transition table lets a dead message be purged from its
        status: its own error and end are kept, ``error`` and now fill them when missing. Whatever
        its status, the row is no longer marked as dead-lettered: its message goes.

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
        unmark = update(JobRow).where(JobRow.id == job_id, JobRow.dead_fingerprint.is_not(None))
        with self.db.session() as session:
            session.execute(dead.values(**values))
            session.execute(unmark.values(dead_fingerprint=None))


def _marked(queues: Iterable[str], since: datetime) -> tuple[ColumnElement[bool], ...]:
    """Rows marked as dead-lettered in ``queues`` since ``since``: what ``ix_jobs_dead_letters`` holds."""
    return (
        JobRow.dead_fingerprint.is_not(None),
        JobRow.queue.in_(sorted(set(queues))),
        JobRow.finished_at > since,
    )


def _merged(parts: Iterable[Any], heads: dict[str, tuple[str, str | None]]) -> list[MarkedGroup]:
    """One :class:`MarkedGroup` per key from its per-queue aggregates and its newest member."""
    merged: dict[str, dict[str, Any]] = {}
    for group, queue, ids, first, last in parts:
        entry = merged.setdefault(str(group), {"ids": [], "ends": [], "queues": []})
        entry["ids"].extend(_canonical(ident) for ident in ids.split(","))
        entry["ends"].extend(as_utc(end) for end in (first, last) if end is not None)
        entry["queues"].append(queue)
    found = []
    for group, entry in merged.items():
        kind, error = heads.get(group, ("?", None))
        ends = entry["ends"]
        first, last = (min(ends), max(ends)) if ends else (None, None)
        found.append(
            MarkedGroup(group, tuple(entry["ids"]), first, last, tuple(sorted(entry["queues"])), kind, error)
        )
    return found


def _canonical(ident: str) -> str:
    """A job id as text in its canonical form (SQLite casts the stored UUID as 32 hex digits)."""
    return ident if len(ident) == 36 else str(uuid.UUID(ident))
