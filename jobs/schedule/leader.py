"""Which scheduler replica enqueues: the one holding a PostgreSQL session advisory lock.

The lock lives on a dedicated connection (autocommit, TCP keepalives): when that connection
dies, PostgreSQL releases the lock and the replica stops acting as leader at its next check.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from jobs.errors import SettingsError
from jobs.store import Database

logger = logging.getLogger("conveyor.scheduler")

#: Seconds a connection attempt of the lock may take.
LOCK_CONNECT_TIMEOUT = 3
#: libpq and server keepalives: a vanished peer is noticed within about 10 seconds, so that a
#: dead leader's lock is released and a cut-off leader's checks fail instead of hanging.
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 2}
_SERVER_SETTINGS = ("statement_timeout=5000", "tcp_keepalives_idle=5", "tcp_keepalives_interval=2")
_SERVER_OPTIONS = " ".join(f"-c {setting}" for setting in (*_SERVER_SETTINGS, "tcp_keepalives_count=2"))


def lock_key(namespace: str) -> int:
    """The advisory-lock key of a namespace's scheduler: a signed 64-bit hash of its name."""
    digest = hashlib.sha256(f"conveyor-scheduler:{namespace}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def require_postgresql(database_url: str) -> None:
    """Raises :class:`SettingsError` unless ``database_url`` is PostgreSQL (advisory locks)."""
    if make_url(database_url).get_backend_name() != "postgresql":
        raise SettingsError("conveyor scheduler needs PostgreSQL: its replicas elect a leader with a lock")


class LeaderLock:
    """``pg_try_advisory_lock`` on a connection of its own; one instance per replica and thread."""

    def __init__(self, database_url: str, namespace: str, identity: str) -> None:
        require_postgresql(database_url)
        self.key = lock_key(namespace)
        self.identity = identity
        self._engine = _lock_engine(database_url, identity)
        self._connection: Connection | None = None
        self.held = False

    def hold(self) -> bool:
        """Whether this replica leads now: checks a held lock's connection, else tries to take it.

        Never raises for a database outage: an unreachable database means not leading.
        """
        try:
            if self._connection is None:
                self._connection = self._engine.connect()
            if self.held:
                self._connection.execute(text("SELECT 1"))
            else:
                acquired = self._connection.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}
                ).scalar()
                self.held = bool(acquired)
        except DBAPIError as exc:
            if self.held:
                logger.warning("leader lock lost with its connection: %s", _reason(exc))
            self._drop()
        return self.held

    def release(self) -> None:
        """Let another replica lead (closing the connection releases the lock), and clean up."""
        if self._connection is not None and self.held:
            # A failure means the connection is gone, and the lock with it.
            with contextlib.suppress(DBAPIError):
                self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
        self._drop()
        self._engine.dispose()

    def _drop(self) -> None:
        self.held = False
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(DBAPIError):
                connection.close()


def current_leader(db: Database, namespace: str) -> str | None:
    """The identity (``host:pid:…``) of the replica holding the namespace's lock, if any."""
    unsigned = lock_key(namespace) & 0xFFFFFFFFFFFFFFFF
    query = text(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
        "AND l.classid::bigint = :high AND l.objid::bigint = :low AND l.database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    with db.session() as session:
        name = session.execute(query, {"high": unsigned >> 32, "low": unsigned & 0xFFFFFFFF}).scalar()
    if not isinstance(name, str):
        return None
    return name.removeprefix("conveyor-scheduler ") or None


def _lock_engine(database_url: str, identity: str) -> Engine:
    url = make_url(database_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    connect_args = {
        "connect_timeout": LOCK_CONNECT_TIMEOUT,
        # PostgreSQL keeps at most 63 bytes of it.
        "application_name": f"conveyor-scheduler {identity}"[:63],
        "options": _SERVER_OPTIONS,
        **_KEEPALIVES,
    }
    return create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args=connect_args)


def _reason(exc: DBAPIError) -> str:
    lines = str(exc.orig or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
