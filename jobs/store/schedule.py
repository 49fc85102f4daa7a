"""The scheduler's storage: ``schedule_ticks`` (the last tick of each entry) and the advisory lock
that elects its leader, on a PostgreSQL connection of its own.

The lock's connection is autocommit with TCP keepalives: when it dies, PostgreSQL releases the
lock, and the holder's next check fails with :class:`~jobs.errors.ServiceUnavailable`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from jobs.errors import ServiceUnavailable
from jobs.settings import mask_url
from jobs.store.database import Database, wrap_exceptions
from jobs.store.models import ScheduleTickRow

T = TypeVar("T")

#: Seconds a connection attempt of the lock may take.
LOCK_CONNECT_TIMEOUT = 3
#: libpq and server keepalives: a vanished peer is noticed within about 10 seconds, so that a
#: dead leader's lock is released and a cut-off leader's checks fail instead of hanging.
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 2}
_SERVER_SETTINGS = ("statement_timeout=5000", "tcp_keepalives_idle=5", "tcp_keepalives_interval=2")
_SERVER_OPTIONS = " ".join(f"-c {setting}" for setting in (*_SERVER_SETTINGS, "tcp_keepalives_count=2"))
_HOLDER = text(
    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "AND l.classid::bigint = :high AND l.objid::bigint = :low AND l.database = "
    "(SELECT oid FROM pg_database WHERE datname = current_database())"
)


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


class AdvisoryLock:
    """``pg_try_advisory_lock(key)`` on a connection of its own, opened on first use.

    Every failure of that connection raises :class:`ServiceUnavailable` and drops it: a lock
    held on it is gone with it.
    """

    def __init__(self, database_url: str, key: int, application_name: str) -> None:
        self.key = key
        self._masked_url = mask_url(database_url)
        self._engine = _lock_engine(database_url, application_name)
        self._connection: Connection | None = None

    def try_acquire(self) -> bool:
        """Whether the lock is ours now (PostgreSQL's answer; no wait).

        Raises:
            ServiceUnavailable: PostgreSQL cannot be reached, or the connection broke.
        """
        statement = text("SELECT pg_try_advisory_lock(:key)")
        return bool(self._run(lambda connection: connection.execute(statement, {"key": self.key}).scalar()))

    def check(self) -> None:
        """Make sure the lock's connection still answers (the lock lives as long as it does).

        Raises:
            ServiceUnavailable: the connection broke (the lock is gone with it).
        """
        self._run(lambda connection: connection.execute(text("SELECT 1")))

    def release(self, *, unlock: bool = True) -> None:
        """Unlock (when ``unlock``: the lock is held), close the connection and its engine; never
        raises (a dead connection took the lock with it)."""
        if self._connection is not None and unlock:
            with contextlib.suppress(DBAPIError):
                self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
        self.drop()
        self._engine.dispose()

    def drop(self) -> None:
        """Close the connection (releasing a lock held on it); the next call opens another."""
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(DBAPIError):
                connection.close()

    def _run(self, operation: Callable[[Connection], T]) -> T:
        try:
            with wrap_exceptions(self._unavailable):
                if self._connection is None:
                    self._connection = self._engine.connect()
                return operation(self._connection)
        except ServiceUnavailable:
            self.drop()
            raise

    def _unavailable(self, exc: BaseException, *, unreachable: bool = False) -> Exception:
        lines = str(exc).strip().splitlines()
        return ServiceUnavailable("PostgreSQL", self._masked_url, lines[0] if lines else type(exc).__name__)


def advisory_lock_holder(db: Database, key: int) -> str | None:
    """The ``application_name`` of the session holding the advisory lock ``key``, if any.

    Raises:
        ServiceUnavailable: the database cannot be reached.
    """
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    with db.session() as session:
        name = session.execute(_HOLDER, {"high": unsigned >> 32, "low": unsigned & 0xFFFFFFFF}).scalar()
    return name if isinstance(name, str) else None


def _lock_engine(database_url: str, application_name: str) -> Engine:
    url = make_url(database_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    connect_args = {
        "connect_timeout": LOCK_CONNECT_TIMEOUT,
        # PostgreSQL keeps at most 63 bytes of it.
        "application_name": application_name[:63],
        "options": _SERVER_OPTIONS,
        **_KEEPALIVES,
    }
    return create_engine(
        url, poolclass=NullPool, isolation_level="AUTOCOMMIT", hide_parameters=True, connect_args=connect_args
    )


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; PostgreSQL aware ones in the session's zone.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
