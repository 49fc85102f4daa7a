"""Table ``schedule_ticks``: per namespace and entry, the last tick the scheduler dealt with."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite

from jobs.store import Database
from jobs.store.models import ScheduleTickRow


class TickStore:
    """The ``schedule_ticks`` rows of one namespace. A row only ever moves forward."""

    def __init__(self, db: Database, namespace: str) -> None:
        self.db = db
        self.namespace = namespace

    def last_ticks(self) -> dict[str, datetime]:
        """Entry name → its last tick (UTC).

        Raises:
            ServiceUnavailable: the database cannot be reached.
            SchemaMissing: ``conveyor db upgrade`` has not created the table yet.
        """
        query = select(ScheduleTickRow.name, ScheduleTickRow.last_tick).where(
            ScheduleTickRow.namespace == self.namespace
        )
        with self.db.session() as session:
            return {name: _utc(tick) for name, tick in session.execute(query)}

    def start(self, name: str, tick: datetime) -> datetime:
        """Record ``tick`` as an entry's starting point unless it has a row; return the row's tick."""
        values = self._values(name, tick)
        with self.db.session() as session:
            session.execute(self._insert(values).on_conflict_do_nothing())
            stored = session.scalar(
                select(ScheduleTickRow.last_tick).where(
                    ScheduleTickRow.namespace == self.namespace, ScheduleTickRow.name == name
                )
            )
        return _utc(stored) if stored is not None else tick

    def advance(self, name: str, tick: datetime) -> None:
        """Move an entry's last tick forward to ``tick`` (never backwards, whoever else writes)."""
        values = self._values(name, tick)
        statement = self._insert(values)
        newest = "greatest" if self.db.dialect == "postgresql" else "max"
        statement = statement.on_conflict_do_update(
            index_elements=[ScheduleTickRow.namespace, ScheduleTickRow.name],
            set_={
                "last_tick": getattr(func, newest)(ScheduleTickRow.last_tick, statement.excluded.last_tick),
                "updated_at": statement.excluded.updated_at,
            },
        )
        with self.db.session() as session:
            session.execute(statement)

    def _values(self, name: str, tick: datetime) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": name,
            "last_tick": tick.astimezone(UTC),
            "updated_at": datetime.now(UTC),
        }

    def _insert(self, values: dict[str, Any]) -> Any:
        dialect = postgresql if self.db.dialect == "postgresql" else sqlite
        return dialect.insert(ScheduleTickRow).values(**values)


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; PostgreSQL aware ones in the session's zone.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
