"""Paused queues (``queue_pauses``): which queues of a namespace workers must not fetch from.

A queue is paused while its row exists. Pausing twice keeps the first row (who paused it and
when); resuming a queue that is not paused changes nothing. Workers read :meth:`paused` about
once a second (``workers/pauses.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql

from jobs.store.database import Database
from jobs.store.jobs import as_utc
from jobs.store.tables import QueuePauses


@dataclass(frozen=True)
class QueuePause:
    """A paused queue: its full name, since when, and by whom (``source:actor@host``)."""

    queue: str
    paused_at: datetime
    paused_by: str

    def to_dict(self) -> dict[str, Any]:
        return {"queue": self.queue, "paused_at": self.paused_at.isoformat(), "paused_by": self.paused_by}


class QueuePauseStore:
    """The paused queues of one namespace."""

    def __init__(self, db: Database, namespace: str) -> None:
        self.db = db
        self.namespace = namespace

    def pause(self, queue: str, by: str) -> bool:
        """Pause ``queue``; whether it was running until now (False: it was paused already).

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        values = {
            "namespace": self.namespace,
            "queue": queue,
            "paused_at": datetime.now(UTC),
            "paused_by": by,
        }
        if self.db.dialect == "postgresql":
            dialect: Any = postgresql
        else:  # the demo: SQLite's dialect is imported only there (half a MiB in every worker)
            from sqlalchemy.dialects import sqlite as dialect
        statement = dialect.insert(QueuePauses).values(**values).on_conflict_do_nothing()
        with self.db.transaction() as session:
            inserted = session.execute(statement.returning(QueuePauses.queue)).first()
        return inserted is not None

    def resume(self, queue: str) -> bool:
        """Resume ``queue``; whether it was paused.

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        statement = (
            delete(QueuePauses)
            .where(QueuePauses.namespace == self.namespace, QueuePauses.queue == queue)
            .returning(QueuePauses.queue)
        )
        with self.db.transaction() as session:
            deleted = session.execute(statement).first()
        return deleted is not None

    def paused(self) -> dict[str, QueuePause]:
        """Queue name → its pause, for every paused queue of the namespace.

        Raises:
            ServiceUnavailable: the database cannot be reached.
            SchemaMissing: ``conveyor db upgrade`` has not created the table yet.
        """
        query = select(QueuePauses.queue, QueuePauses.paused_at, QueuePauses.paused_by).where(
            QueuePauses.namespace == self.namespace
        )
        with self.db.transaction() as session:
            rows = session.execute(query).all()
        return {queue: QueuePause(queue, as_utc(at) or datetime.now(UTC), by) for queue, at, by in rows}
