"""The narrow boundary to the SQL driver: engines, sessions, and error translation.

Every storage operation goes through :meth:`Database.session`, :meth:`Database.transaction` or
:meth:`Database.translated`, which turn a driver's error into Conveyor's own
(:class:`~jobs.errors.ServiceUnavailable`, :class:`~jobs.errors.SchemaMissing`) once, here:
no module outside ``jobs.store`` sees a driver exception.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import InterfaceError as SAInterfaceError

from jobs.crypto import Sealer
from jobs.defaults import DEFAULT_CONNECT_TIMEOUT
from jobs.errors import SchemaMissing, ServiceUnavailable, StoreConflict, StoreRefused
from jobs.keyring import Keyring
from jobs.settings import mask_url
from jobs.store.direct import DirectConnection, hide_quoted_values, is_conflict
from jobs.tls import explained

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

__all__ = ["Database", "SchemaMissing", "backend_name", "hide_quoted_values", "wrap_exceptions"]


class Database:
    """An engine and a session factory for one database URL (PostgreSQL, or SQLite for the demo)."""

    def __init__(
        self, url: str, *, pool_size: int = 5, pre_ping: bool = True, keyring: Keyring | None = None
    ) -> None:
        self.url = url
        #: Seals and opens the values stored encrypted (``keyring``: CONVEYOR_ENCRYPTION_KEYS);
        #: only the store's modules use it, so every reader sees plaintext.
        self.sealer = Sealer(keyring)
        self.masked_url = mask_url(url)
        self.engine = _make_engine(url, pool_size=pool_size, pre_ping=pre_ping)
        self._sessions: sessionmaker[Session] | None = None  # made on first use: see session()
        #: One statement, one round trip, for the hot single-statement writes (PostgreSQL only);
        #: whoever finds its lock taken goes through the pool instead.
        self.direct = DirectConnection(url, self.translate) if self.dialect == "postgresql" else None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def service(self) -> str:
        return "PostgreSQL" if self.dialect == "postgresql" else "SQLite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error.

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        if self._sessions is None:
            # The ORM (about 7 MiB resident) is imported on first use: worker processes write
            # through Core connections (``transaction``) and never load it.
            from sqlalchemy.orm import sessionmaker

            self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        with self.translated(), self._sessions.begin() as session:
            yield session

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A Core connection in one transaction, without the ORM session's bookkeeping (hot paths).

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        with self.translated(), self.engine.begin() as connection:
            yield connection

    @contextmanager
    def free_direct(self) -> Iterator[psycopg.Connection[Any] | None]:
        """The direct connection (PostgreSQL: one round trip a statement, each committed by
        itself) when no other thread holds it; None when another does, or with SQLite: the
        caller then goes through :meth:`session` or :meth:`transaction`.

        Raises:
            ServiceUnavailable: the database cannot be reached.
            SchemaMissing: the database has no (or an older) Conveyor schema.
        """
        if self.direct is None:
            yield None
            return
        with self.direct.free() as connection:
            yield connection

    def translated(self) -> AbstractContextManager[None]:
        """A block whose driver errors become Conveyor's own (for work outside :meth:`session`,
        such as a streamed read).

        Raises:
            ServiceUnavailable: the database cannot be reached.
            SchemaMissing: the database has no (or an older) Conveyor schema.
        """
        return wrap_exceptions(self.translate)

    def translate(self, exc: BaseException, *, unreachable: bool = False) -> Exception | None:
        """Conveyor's own error for a driver error (None to let it through).

        ``unreachable``: the caller knows the error means the database could not be used.
        """
        sqlstate = getattr(exc, "sqlstate", None)
        # PostgreSQL's undefined_table, SQLite's "no such table": the schema was never made.
        if sqlstate == "42P01" or "no such table" in str(exc):
            return SchemaMissing(self.masked_url)
        if sqlstate == "42703":  # undefined_column: an older schema
            return SchemaMissing(self.masked_url, outdated=True)
        if is_conflict(exc):
            return StoreConflict(self.service, self.masked_url, explained(exc))
        if unreachable or isinstance(exc, psycopg.OperationalError):
            return self.unavailable(exc)
        if isinstance(exc, psycopg.DataError):  # class 22: a value the column cannot hold
            return StoreRefused(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        return None

    def unavailable(self, exc: BaseException) -> ServiceUnavailable:
        reason = explained(getattr(exc, "orig", None) or exc)
        if "does not exist" in reason:
            reason += " (`conveyor db upgrade` creates it)"
        return ServiceUnavailable(self.service, self.masked_url, reason)

    def check(self) -> None:
        """Raise :class:`ServiceUnavailable` unless the database answers."""
        with self.transaction() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        if self.direct is not None:
            self.direct.close()
        self.engine.dispose()


@contextmanager
def wrap_exceptions(translate: Callable[..., Exception | None]) -> Iterator[None]:
    """Turn a SQLAlchemy driver error raised in the block into ``translate``'s own error
    (``translate(orig, unreachable=…)``; when it returns None the driver error goes through)."""
    try:
        yield
    except DBAPIError as exc:
        unreachable = isinstance(exc, OperationalError | SAInterfaceError) or exc.connection_invalidated
        error = translate(exc.orig or exc, unreachable=unreachable)
        if error is None:
            hide_quoted_values(exc.orig)
            raise
        raise error from None


def backend_name(url: str) -> str:
    """The database a URL names: ``postgresql``, ``sqlite``…"""
    return make_url(url).get_backend_name()


def _make_engine(url: str, *, pool_size: int, pre_ping: bool) -> Engine:
    parsed = make_url(url)
    # hide_parameters: a statement's values (payloads, addresses) never land in an exception's
    # text, and so never in a log line or a traceback stored with an attempt.
    kwargs: dict[str, Any] = {"pool_pre_ping": pre_ping, "pool_recycle": 1800, "hide_parameters": True}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.drivername == "postgresql":
        # psycopg 3 is the driver we ship; the bare scheme would ask for psycopg2.
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    kwargs["connect_args"] = {"connect_timeout": DEFAULT_CONNECT_TIMEOUT, "application_name": "conveyor"}
    kwargs["pool_size"] = pool_size
    kwargs["max_overflow"] = pool_size
    engine = create_engine(url, **kwargs)
    event.listen(engine, "handle_error", _hide_quoted_values)
    return engine


def _hide_quoted_values(context: Any) -> None:
    # Every driver error of the engine, whoever runs the statement (see hide_quoted_values); the
    # SQLAlchemy error wrapping it already copied its text, so that copy is cut too.
    orig, wrapper = context.original_exception, context.sqlalchemy_exception
    hide_quoted_values(orig)
    if isinstance(orig, psycopg.Error) and wrapper is not None and wrapper.args:
        wrapper.args = (f"({type(orig).__module__}.{type(orig).__name__}) {orig}", *wrapper.args[1:])


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the demo's worker threads write while the client reads.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
