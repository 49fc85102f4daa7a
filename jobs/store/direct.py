"""A dedicated PostgreSQL connection for the hot paths: autocommit, statements prepared at once.

The lifecycle's writer threads (``jobs/store/batched.py``), a worker process's claims
(``jobs/store/claims.py``) and a producer's plain enqueue (``JobStore.create_sent``) each send
one self-contained statement per operation. Through a pooled SQLAlchemy session that statement
costs six round trips (pre-ping, BEGIN, the statement, COMMIT, the pool's reset); here it costs
one, committed by itself, and far less CPU on both sides.

Plans stay custom (PostgreSQL's default): a generic plan cannot know how many rows an
``unnest`` of a parameter gives, and picks sequential scans that cost PostgreSQL far more time.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID

import psycopg
import psycopg.errors
from psycopg import abc
from psycopg.adapt import Transformer
from psycopg.pq import ConnStatus, DiagnosticField, ExecStatus
from psycopg.pq.abc import PGresult
from psycopg.types.json import Jsonb
from sqlalchemy.engine import make_url

from jobs.defaults import DEFAULT_CONNECT_TIMEOUT

logger = logging.getLogger("conveyor.store")


class DirectConnection:
    """One psycopg connection, opened on first use and again after it broke.

    Not for concurrent use: a writer thread owns one; a shared one is taken with ``lock``.
    """

    def __init__(self, url: str, translate: Callable[[psycopg.Error], Exception | None]) -> None:
        self._conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        #: Turns a driver error into Conveyor's own (``Database.translate``), None to let it through.
        self._translate = translate
        self._connection: psycopg.Connection[Any] | None = None
        #: The statements :meth:`fetch` prepared on the current connection.
        self._prepared: set[str] = set()
        #: Loads :meth:`fetch`'s rows (made for each connection).
        self._loader: abc.Transformer | None = None
        self.lock = threading.Lock()

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection[Any]]:
        """The connection; each statement on it commits by itself.

        Raises:
            ServiceUnavailable: PostgreSQL cannot be reached (the next call reconnects).
            SchemaMissing: the database has no (or an older) Conveyor schema.
        """
        try:
            yield self._connect()
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError) and not is_conflict(exc):
                self.close()
            error = self._translate(exc)
            if error is None:
                hide_quoted_values(exc)
                raise
            raise error from None

    @contextmanager
    def free(self) -> Iterator[psycopg.Connection[Any] | None]:
        """The connection when no other thread holds it, else None: the caller then goes through
        the pool rather than wait (a statement holds it for one round trip).

        Raises:
            ServiceUnavailable: PostgreSQL cannot be reached (the next call reconnects).
            SchemaMissing: the database has no (or an older) Conveyor schema.
        """
        if not self.lock.acquire(blocking=False):
            yield None
            return
        try:
            with self.connect() as connection:
                yield connection
        finally:
            self.lock.release()

    def fetch(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """``execute(sql, params).fetchall()`` for a statement with psycopg's placeholders
        (``%(name)s``), through libpq's own prepared-statement call rather than psycopg's cursor,
        whose conversions of the query and its parameters were a fifth of a plain enqueue's CPU
        and a third of a worker's claim round trip's. The statement's libpq form (``$1``…) is
        made once and prepared on first use on each connection; its parameters are sent as text,
        each cast in the SQL to its type; the rows are loaded as a cursor loads them (none for a
        statement that returns none). Raises as :meth:`connect`.
        """
        form = _libpq_form(sql)
        values = [_as_text(params[name]) for name in form.names]
        with self.connect() as connection:
            pgconn = connection.pgconn
            if form.name not in self._prepared:
                _checked(connection, pgconn.prepare(form.name.encode(), form.text.encode()))
                self._prepared.add(form.name)
            # None is SQL NULL (libpq's own convention; psycopg's stub leaves it out of the type).
            result = pgconn.exec_prepared(form.name.encode(), values)  # type: ignore[arg-type]
            if result.error_field(DiagnosticField.SQLSTATE) == b"26000":
                # Gone: psycopg sends DEALLOCATE ALL after a ROLLBACK on the connection.
                _checked(connection, pgconn.prepare(form.name.encode(), form.text.encode()))
                result = pgconn.exec_prepared(form.name.encode(), values)  # type: ignore[arg-type]
            _checked(connection, result)
            if self._loader is None:
                self._loader = Transformer(connection)
            self._loader.set_pgresult(result)
            return self._loader.load_rows(0, result.ntuples, tuple)

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.closed

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except psycopg.Error as exc:  # closing a broken connection: nothing left to save
                logger.debug("closing a direct connection: %s", exc)

    def _connect(self) -> psycopg.Connection[Any]:
        if self._connection is None or self._connection.closed or self._connection.broken:
            self._prepared.clear()
            self._loader = None
            self._connection = psycopg.connect(
                self._conninfo,
                autocommit=True,
                prepare_threshold=0,
                connect_timeout=DEFAULT_CONNECT_TIMEOUT,
                application_name="conveyor",
            )
        return self._connection


@dataclass(frozen=True)
class _LibpqForm:
    """A statement as libpq's prepared-statement calls take it."""

    name: str
    text: str
    #: The parameters' names, for ``$1``, ``$2``…
    names: tuple[str, ...]


#: The libpq form of each statement seen (a fixed set: the store's statements, built at import).
_FORMS: dict[str, _LibpqForm] = {}
_FORM_NUMBERS = itertools.count(1)
_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")


def _libpq_form(sql: str) -> _LibpqForm:
    form = _FORMS.get(sql)
    if form is None:
        names: list[str] = []

        def numbered(match: re.Match[str]) -> str:
            name = match.group(1)
            if name is None:
                return "%"
            if name not in names:
                names.append(name)
            return f"${names.index(name) + 1}"

        text = _PLACEHOLDER.sub(numbered, sql)
        form = _FORMS.setdefault(sql, _LibpqForm(f"conveyor_{next(_FORM_NUMBERS)}", text, tuple(names)))
    return form


def _as_text(value: Any) -> bytes | None:
    """A parameter as PostgreSQL reads it in text form (the statement casts it)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int | float | UUID):
        return str(value).encode()
    if isinstance(value, datetime | date):
        return value.isoformat().encode()
    if isinstance(value, Jsonb):
        return json.dumps(value.obj).encode()
    raise TypeError(f"no text form for a {type(value).__name__} parameter")


def _checked(connection: psycopg.Connection[Any], result: PGresult) -> None:
    """Raise what psycopg would for a failed ``result``: ``OperationalError`` when the connection
    broke, else the error of its SQLSTATE."""
    if result.status in (ExecStatus.COMMAND_OK, ExecStatus.TUPLES_OK):
        return
    pgconn = connection.pgconn
    if pgconn.status != ConnStatus.OK:
        message = pgconn.error_message.decode("utf-8", "replace").strip()
        raise psycopg.OperationalError(message or "the connection to PostgreSQL broke")
    raise psycopg.errors.error_from_result(result, encoding=connection.info.encoding)


def is_conflict(exc: BaseException) -> bool:
    """PostgreSQL rolled the transaction back for a conflict with another (SQLSTATE class 40: a
    deadlock, a serialization failure): the connection stays usable, and the work can be tried
    again. (psycopg files a deadlock under ``OperationalError``, not ``TransactionRollback``.)"""
    return str(getattr(exc, "sqlstate", None) or "").startswith("40")


def hide_quoted_values(exc: BaseException | None) -> None:
    """Keep only the first line of a PostgreSQL error's message: its DETAIL and CONTEXT lines quote
    the values the server refused (a payload's JSON, a duplicate key), which would then reach
    exception texts, logs and stored tracebacks. The SQLSTATE and ``diag`` stay for code to read."""
    if isinstance(exc, psycopg.Error) and exc.args and isinstance(exc.args[0], str):
        exc.args = (exc.args[0].split("\n", 1)[0], *exc.args[1:])
