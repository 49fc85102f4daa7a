"""The transactional outbox: jobs written in the application's own transaction, published by relays
once it has committed (SPEC §11).

``Client.enqueue(kind, session=S)`` hands the caller's SQLAlchemy ``Session`` or ``Connection`` to
:meth:`OutboxStore.write`, which adds the job's row and an ``outbox`` entry holding its message to
that transaction, in one statement. Nothing is published then: a rollback leaves nothing behind.
A relay in every worker process (``workers/relay.py``) wakes on the ``conveyor_outbox`` notification
the commit delivers, locks a batch of entries (``FOR UPDATE SKIP LOCKED``: relays share the work,
none publishes an entry another holds), publishes them with confirms, and deletes them in the
transaction that locked them. A relay that dies between the confirms and its commit leaves the
entries to be published again: at-least-once, the copies absorbed by the workers' duplicate guards.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dramatiq
import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import Connection, Engine, TextClause, delete, func, select, text, update

from jobs import crypto
from jobs.errors import DecryptionError
from jobs.store.database import Database
from jobs.store.delayed import hold
from jobs.store.direct import DirectConnection
from jobs.store.jobs import QUEUED_COLUMNS, JobInfo, JobStore, NewJob, holder_of_key
from jobs.store.tables import Outbox

logger = logging.getLogger("conveyor.store")

#: The channel an outbox insert notifies (migration 0014's trigger), with the namespace as payload.
CHANNEL = "conveyor_outbox"

_COLUMNS = ", ".join(QUEUED_COLUMNS)
_VALUES = ", ".join(f":{c}" for c in QUEUED_COLUMNS)
#: An idempotency key's row: nothing when the key is taken.
_KEY = (
    "key AS (INSERT INTO job_keys (idempotency_key, kind, queue, job_id) "
    "VALUES (:idempotency_key, :kind, :queue, :id) ON CONFLICT DO NOTHING RETURNING job_id)"
)
#: The job's row, unless its id is taken; keyed, only when its key's row was written (the key's
#: reference to the job is checked at the statement's end, when both rows are there).
_JOB = {
    keyed: f"job AS (INSERT INTO jobs ({_COLUMNS}) {source} ON CONFLICT DO NOTHING RETURNING id)"
    for keyed, source in ((False, f"VALUES ({_VALUES})"), (True, f"SELECT {_VALUES} FROM key"))
}
#: The job's outbox entry, when its row was written.
_ENTRY = (
    "INSERT INTO outbox (namespace, job_id, queue, message, created_at, attempts) "
    "SELECT :namespace, job.id, :queue, :message, :created_at, 0 FROM job RETURNING job_id"
)


def _write_sql(*, keyed: bool, entry: bool) -> TextClause:
    """One round trip in the caller's transaction: the job's row (with its key's), and its outbox
    entry only when the row was written (an idempotency key already taken writes nothing). A
    delayed job has no entry: its message is held in ``delayed_messages`` until due."""
    ctes = [_KEY, _JOB[True]] if keyed else [_JOB[False]]
    return text(f"WITH {', '.join(ctes)} {_ENTRY if entry else 'SELECT id FROM job'}")


#: By (keyed, with an outbox entry).
_WRITE_SQL = {(k, e): _write_sql(keyed=k, entry=e) for k in (False, True) for e in (False, True)}
_COPY_JOBS_SQL = "COPY jobs ({}) FROM STDIN".format(", ".join(QUEUED_COLUMNS))
_COPY_OUTBOX_SQL = "COPY outbox (namespace, job_id, queue, message, created_at, attempts) FROM STDIN"
#: What names a database server and database: two connections that agree are on the same one.
_WHERE_SQL = text("SELECT current_database(), pg_postmaster_start_time()")


@dataclass(frozen=True)
class Pending:
    """A namespace's entries waiting to be published, and the age of the oldest (seconds)."""

    count: int
    oldest_age: float | None


class OutboxStore:
    """Writes jobs into a caller's transaction, and relays committed entries to RabbitMQ."""

    #: Entries published per relay transaction.
    BATCH = 500

    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs
        self.db: Database = jobs.db
        # Engines whose database was checked to be this store's (checked once per engine).
        self._same_database: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()

    def write(
        self, executor: object, job: NewJob, message: dramatiq.Message[Any], *, namespace: str
    ) -> tuple[JobInfo, bool]:
        """Add the job's row and its outbox entry (or, for a delayed job, its held message) to the
        transaction of ``executor``, a SQLAlchemy ``Session`` or ``Connection`` on this store's
        PostgreSQL database. Nothing is committed or published here.

        Returns:
            The job and whether this call created it (False: its idempotency key was taken, by a
            committed job or earlier in this transaction; nothing was written).

        Raises:
            TypeError: ``executor`` is neither a ``Session`` nor a ``Connection``.
            ValueError: it is not on PostgreSQL, or not on this store's database.
        """
        connection = self._connection_of(executor)
        values, stored = self.jobs.queued_values(job)
        params = {**stored, "payload": Jsonb(stored["payload"])}
        with self.db.translated():
            if job.held is None:
                params.update(namespace=namespace, message=self._sealed(message))
            sql = _WRITE_SQL[job.idempotency_key is not None, job.held is None]
            created = connection.execute(sql, params).first() is not None
            if created and job.held is not None:
                hold(connection, job.held, sealer=self.db.sealer)
            if created:
                return self.jobs.queued_info(values), True
            return self._existing(connection, job), False

    def write_many(
        self,
        executor: object,
        jobs: list[NewJob],
        messages: list[dramatiq.Message[Any]],
        *,
        namespace: str,
    ) -> list[JobInfo]:
        """Add the rows of ``jobs`` (none with an idempotency key) and the outbox entries of their
        ``messages`` (held messages for delayed ones) to ``executor``'s transaction: one ``COPY``
        each, as ``enqueue_many`` writes rows.

        Raises:
            TypeError, ValueError: as :meth:`write`; ValueError also for an idempotency key.
        """
        if any(job.idempotency_key is not None for job in jobs):
            raise ValueError("enqueue_many takes no idempotency_key: enqueue such jobs one by one")
        connection = self._connection_of(executor)
        rows = [self.jobs.queued_values(job) for job in jobs]
        now = datetime.now(UTC)
        copied = ([Jsonb(row[c]) if c == "payload" else row[c] for c in QUEUED_COLUMNS] for _, row in rows)
        self._copy(connection, _COPY_JOBS_SQL, copied)
        with self.db.translated():
            hold(connection, *(job.held for job in jobs if job.held is not None), sealer=self.db.sealer)
        entries = (
            [namespace, job.id, message.queue_name, self._sealed(message), now, 0]
            for job, message in zip(jobs, messages, strict=True)
            if job.held is None
        )
        self._copy(connection, _COPY_OUTBOX_SQL, entries)
        return [self.jobs.queued_info(values) for values, _ in rows]

    def _sealed(self, message: dramatiq.Message[Any]) -> bytes:
        return self.db.sealer.seal_bytes(message.encode(), crypto.OUTBOX_MESSAGE, message.message_id)

    def _copy(self, connection: Connection, sql: str, rows: Iterable[list[Any]]) -> None:
        """``COPY`` ``rows`` in through the psycopg connection under ``connection`` (its transaction)."""
        driver = connection.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)  # checked by _connection_of
        try:
            with driver.cursor() as cursor, cursor.copy(sql) as copy:
                for row in rows:
                    copy.write_row(row)
        except psycopg.Error as exc:
            error = self.db.translate(exc)
            if error is None:
                raise
            raise error from None

    def _connection_of(self, executor: object) -> Connection:
        if isinstance(executor, Connection):
            connection = executor
        else:
            # Imported here: an application passing an ORM session has loaded the ORM already,
            # and a worker process (which relays, but never takes a session) does not need it.
            from sqlalchemy.orm import Session

            if not isinstance(executor, Session):
                raise TypeError(
                    f"session= takes a SQLAlchemy Session or Connection, not {type(executor).__name__}"
                )
            connection = executor.connection()
        if connection.dialect.name != "postgresql":
            raise ValueError(
                f"session= needs PostgreSQL: this session is on {connection.dialect.name} "
                "(the embedded demo has no outbox; enqueue without session=)"
            )
        if connection.dialect.driver != "psycopg":
            raise ValueError(
                f"session= needs the psycopg driver (postgresql+psycopg://), Conveyor's own: this "
                f"session uses {connection.dialect.driver}"
            )
        if not self._same_database.get(connection.engine, False):
            self._check_same_database(connection)
            self._same_database[connection.engine] = True
        return connection

    def _check_same_database(self, connection: Connection) -> None:
        with self.db.translated():
            theirs = tuple(connection.execute(_WHERE_SQL).one())
            with self.db.transaction() as own:
                ours = tuple(own.execute(_WHERE_SQL).one())
        if theirs != ours:
            raise ValueError(
                f"session= must be on Conveyor's database ({ours[0]} at {self.db.masked_url}); "
                f"this session is on {theirs[0]}"
            )

    def _existing(self, connection: Connection, job: NewJob) -> JobInfo:
        """The job holding ``job``'s idempotency key, read in the caller's transaction (it may
        have been written there, uncommitted)."""
        key = job.idempotency_key
        row = (
            None
            if key is None
            else connection.execute(holder_of_key(key, kind=job.kind, queue=job.queue)).first()
        )
        if row is None:  # a conflict on something else than the key: not ours to hide
            raise ValueError(f"job {job.id} could not be written: its id is taken")
        return JobInfo.from_row(row, self.db.sealer)

    def relay(
        self,
        publish: Callable[[list[dramatiq.Message[Any]]], object],
        *,
        namespace: str,
        limit: int = BATCH,
    ) -> int:
        """Publish up to ``limit`` of the namespace's committed entries, oldest first, and delete
        them in the transaction that locked them, once ``publish`` returned (RabbitMQ confirmed).

        Entries another relay holds are skipped. When ``publish`` raises, the entries stay (their
        ``attempts`` and ``last_error`` updated) and its error is raised.

        Returns:
            How many entries were published.
        """
        query = (
            select(Outbox.id, Outbox.job_id, Outbox.message)
            .where(Outbox.namespace == namespace)
            .order_by(Outbox.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        failure: Exception | None = None
        with self.db.transaction() as session:
            rows = session.execute(query).all()
            messages = {entry: m for entry, job_id, body in rows if (m := self._open(str(job_id), body))}
            if not messages:
                return 0
            try:
                publish(list(messages.values()))
            except Exception as exc:  # recorded on the entries, then raised to the relay
                failure = exc
                session.execute(
                    update(Outbox)
                    .where(Outbox.id.in_(list(messages)))
                    .values(attempts=Outbox.attempts + 1, last_error=str(exc)[:1000] or type(exc).__name__)
                )
            else:
                session.execute(delete(Outbox).where(Outbox.id.in_(list(messages))))
        if failure is not None:
            raise failure
        return len(messages)

    def _open(self, job_id: str, body: bytes) -> dramatiq.Message[Any] | None:
        """The entry's message; None (it stays, the others go on) when its sealed body does not
        open here: its key is missing on this replica, or it was altered."""
        try:
            plain = self.db.sealer.open_bytes(body, crypto.OUTBOX_MESSAGE, job_id)
        except DecryptionError as exc:
            logger.warning("outbox entry of job %s stays unpublished: %s", job_id, exc)
            return None
        return dramatiq.Message.decode(plain)

    def pending(self, namespace: str) -> Pending:
        """How many entries of the namespace wait, and how long the oldest has."""
        query = select(func.count(), func.min(Outbox.created_at)).where(Outbox.namespace == namespace)
        with self.db.transaction() as session:
            count, oldest = session.execute(query).one()
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else None
        return Pending(int(count), age)

    def listener(self) -> OutboxListener:
        """A connection of its own that waits for the commits of outbox entries."""
        return OutboxListener(self.db)


class OutboxListener:
    """``LISTEN conveyor_outbox`` on an autocommit connection of its own, reopened after it broke
    (notifications sent while it was down are lost: the relay's poll covers them)."""

    def __init__(self, db: Database) -> None:
        self._direct = DirectConnection(db.url, db.translate)
        self._listening: psycopg.Connection[Any] | None = None

    def wait(self, timeout: float) -> bool:
        """Block until an entry is committed (True) or ``timeout`` seconds have passed (False).

        Raises:
            ServiceUnavailable: PostgreSQL cannot be reached.
        """
        with self._direct.connect() as connection:
            if self._listening is not connection:
                connection.execute(f"LISTEN {CHANNEL}")
                self._listening = connection
            woke = any(True for _ in connection.notifies(timeout=timeout, stop_after=1))
            if woke:  # the other commits of the moment: one scan covers them all
                for _ in connection.notifies(timeout=0.0):
                    pass
        return woke

    def close(self) -> None:
        self._listening = None
        self._direct.close()
