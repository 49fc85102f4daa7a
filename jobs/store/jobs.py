"""Storage operations on jobs as producers and admins see them: create, read, list."""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Generator, Iterable
from contextlib import closing
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import psycopg
import psycopg.errors
from psycopg.types.json import Jsonb
from sqlalchemy import Select, delete, insert, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError

from jobs import crypto
from jobs.crypto import Sealer
from jobs.errors import JobNotFound
from jobs.ids import is_uuid
from jobs.status import Event, JobStatus, sources, target
from jobs.store.database import Database
from jobs.store.delayed import HeldMessage, hold
from jobs.store.tables import Attempts, DelayedMessages, JobKeys, Jobs
from jobs.subjects import SubjectHasher


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every time Conveyor stores is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def key_values(job: NewJob) -> dict[str, Any]:
    """The ``job_keys`` row of a job enqueued with an idempotency key."""
    return {"idempotency_key": job.idempotency_key, "kind": job.kind, "queue": job.queue, "job_id": job.id}


def holder_of_key(key: str, *, kind: str | None = None, queue: str | None = None) -> Select[Any]:
    """The job row holding an idempotency key, within ``kind`` and ``queue`` when given."""
    query = select(Jobs).join(JobKeys, JobKeys.job_id == Jobs.id).where(JobKeys.idempotency_key == key)
    if kind is not None:
        query = query.where(JobKeys.kind == kind)
    if queue is not None:
        query = query.where(JobKeys.queue == queue)
    return query


@dataclass(frozen=True)
class NewJob:
    """A job about to be enqueued by a producer."""

    id: str
    kind: str
    queue: str
    payload: dict[str, Any]
    max_retries: int
    priority: int | None = None
    idempotency_key: str | None = None
    eta: datetime | None = None
    parent_id: str | None = None
    #: A delayed job's message, held in the store (in the row's transaction) until it is due.
    held: HeldMessage | None = None


@dataclass(frozen=True)
class JobInfo:
    """A job's row as read from the store."""

    id: str
    kind: str
    queue: str
    status: str
    payload: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    max_retries: int | None
    priority: int | None
    idempotency_key: str | None
    progress: int | None
    eta: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    parent_id: str | None = None

    @classmethod
    def from_row(cls, row: Any, sealer: Sealer) -> JobInfo:
        """The row's job, its encrypted values opened (``DecryptionError`` when one does not)."""
        job_id = str(row.id)
        return cls(
            id=job_id,
            kind=row.kind,
            queue=row.queue,
            status=row.status,
            payload=sealer.open_json(row.payload, crypto.PAYLOAD, job_id),
            result=sealer.open_json(row.result, crypto.RESULT, job_id),
            error=sealer.open_text(row.error, crypto.ERROR, job_id),
            attempts=row.attempts,
            max_retries=row.max_retries,
            priority=row.priority,
            idempotency_key=row.idempotency_key,
            progress=row.progress,
            eta=as_utc(row.eta),
            created_at=as_utc(row.created_at) or utcnow(),
            started_at=as_utc(row.started_at),
            finished_at=as_utc(row.finished_at),
            parent_id=str(row.parent_id) if row.parent_id else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: datetimes as ISO 8601 strings."""
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class AttemptInfo:
    """One run of a job, as read from the store."""

    attempt: int
    worker: str
    host: str
    pid: int
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    error: str | None
    traceback: str | None
    #: The W3C trace id the attempt ran under (None: its message carried no trace context).
    trace_id: str | None = None

    @classmethod
    def from_row(cls, row: Any, sealer: Sealer) -> AttemptInfo:
        """The row's attempt, its encrypted error and traceback opened."""
        job_id = str(row.job_id)
        return cls(
            attempt=row.attempt,
            worker=row.worker,
            host=row.host,
            pid=row.pid,
            started_at=as_utc(row.started_at) or utcnow(),
            finished_at=as_utc(row.finished_at),
            outcome=row.outcome,
            error=sealer.open_text(row.error, crypto.ERROR, job_id),
            traceback=sealer.open_text(row.traceback, crypto.TRACEBACK, job_id),
            trace_id=row.trace_id,
        )

    @property
    def duration(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        data = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()}
        data["duration"] = self.duration
        return data


@dataclass(frozen=True)
class JobSelection:
    """Which jobs: by status, kind, queue, creation window and error text; a page of them."""

    status: str | None = None
    kind: str | None = None
    queue: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    error: str | None = None
    limit: int = 50
    offset: int = 0

    def apply(self, query: Any) -> Any:
        if self.status:
            query = query.where(Jobs.status == self.status)
        if self.kind:
            query = query.where(Jobs.kind == self.kind)
        if self.queue:
            query = query.where(Jobs.queue == self.queue)
        if self.since:
            query = query.where(Jobs.created_at >= self.since)
        if self.until:
            query = query.where(Jobs.created_at < self.until)
        if self.error:
            query = query.where(Jobs.error.ilike(f"%{escape_like(self.error)}%", escape="\\"))
        return query

    @property
    def is_empty(self) -> bool:
        return not any((self.status, self.kind, self.queue, self.since, self.until, self.error))


def escape_like(text: str) -> str:
    """``text`` as a literal inside a LIKE pattern (with ``escape='\\'``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class JobStore:
    """Create, read and list jobs.

    With a ``subjects`` hasher (encryption keys set), each new row keeps the keyed hashes of the
    addresses its payload names (``jobs.subjects``, for ``conveyor gdpr``).
    """

    def __init__(self, db: Database, subjects: SubjectHasher | None = None) -> None:
        self.db = db
        self.subjects = subjects
        #: SQLite (the demo) keeps the hashes as a JSON list of hex strings.
        self._hex_subjects = db.dialect != "postgresql"

    def create(self, job: NewJob) -> tuple[JobInfo, bool]:
        """Insert a ``queued`` row. With an idempotency key already taken, return that job instead.

        Returns:
            The job and whether this call created it.
        """
        values = self._row(job, utcnow())
        stored = self._sealed(values)
        if (
            job.held is None
            and job.idempotency_key is None
            and self._insert_direct(stored, _INSERT_QUEUED_SQL)
        ):
            return _queued_info(values), True
        try:
            with self.db.transaction() as session:
                # A Core statement, not the ORM's unit of work: an enqueue's CPU is mostly this.
                # The job row goes first (the key's row refers to it); the key's primary key
                # decides before anything is held.
                session.execute(insert(Jobs).values(**stored))
                if job.idempotency_key is not None:
                    session.execute(insert(JobKeys).values(key_values(job)))
                if job.held is not None:
                    hold(session, job.held, sealer=self.db.sealer)
            return _queued_info(values), True
        except IntegrityError:
            # The key's row (idempotency_key, kind, queue) decides: whoever inserted first owns it.
            if job.idempotency_key is None:
                raise
            existing = self.find_by_idempotency_key(job.idempotency_key, kind=job.kind, queue=job.queue)
            if existing is None:  # deleted between our insert and this read: try once more
                return self.create(job)
            return existing, False

    def create_sent(self, job: NewJob) -> JobInfo:
        """Insert the ``queued`` row of a plain job whose message is already published. A worker
        that started the job first made the row itself (on first sight); that row is kept.

        The row commits without waiting for its WAL flush (:data:`_INSERT_SENT_SQL`)."""
        values = self._row(job, utcnow())
        stored = self._sealed(values)
        if not self._insert_sent_direct(stored):
            with self.db.transaction() as session:
                statement = postgresql.insert(Jobs).values(**stored)
                session.execute(statement.on_conflict_do_nothing(index_elements=[Jobs.id]))
        return _queued_info(values)

    def create_many_sent(self, jobs: list[NewJob]) -> list[JobInfo]:
        """Insert the ``queued`` rows of plain jobs whose messages are already published, in one
        transaction committed without waiting for its WAL flush (as :meth:`create_sent`). Rows a
        faster worker made first are kept."""
        now = utcnow()
        rows = [self._row(job, now) for job in jobs]
        # In id order, as the workers' batches write the rows they make on first sight
        # (``steps.Batch.compiled``): the two never wait on each other in a cycle.
        stored = sorted((self._sealed(row) for row in rows), key=_BY_ID)
        if stored and not self._copy_direct(stored, lazy=True):
            statement = postgresql.insert(Jobs).on_conflict_do_nothing(index_elements=[Jobs.id])
            with self.db.transaction() as session:
                session.execute(statement, stored)
        return [_queued_info(row) for row in rows]

    def queued_values(self, job: NewJob) -> tuple[dict[str, Any], dict[str, Any]]:
        """The ``jobs`` row of a job about to be enqueued, in the clear and as stored (sealed,
        with its subject hashes): for writers outside this class (the outbox)."""
        values = self._row(job, utcnow())
        return values, self._sealed(values)

    @staticmethod
    def queued_info(values: dict[str, Any]) -> JobInfo:
        """The :class:`JobInfo` of a row just written from :meth:`queued_values`' plain values."""
        return _queued_info(values)

    def _sealed(self, values: dict[str, Any]) -> dict[str, Any]:
        """A queued row as stored: its payload sealed when encryption is on."""
        if not self.db.sealer.enabled:
            return values
        return {
            **values,
            "payload": self.db.sealer.seal_json(values["payload"], crypto.PAYLOAD, values["id"]),
        }

    def _row(self, job: NewJob, now: datetime) -> dict[str, Any]:
        row = _queued_row(job, now)
        if self.subjects is not None and (hashes := self.subjects.payload_hashes(job.payload)):
            row["subjects"] = [h.hex() for h in hashes] if self._hex_subjects else hashes
        return row

    def _insert_direct(self, values: dict[str, Any], sql: str) -> bool:
        """Insert a plain job's row in one round trip; False when the direct connection is busy."""
        with self.db.free_direct() as connection:
            if connection is None:
                return False
            connection.execute(sql, {**values, "payload": Jsonb(values["payload"])})
        return True

    def _insert_sent_direct(self, values: dict[str, Any]) -> bool:
        """:meth:`_insert_direct` of :data:`_INSERT_SENT_SQL`, through libpq's prepared-statement
        call (``DirectConnection.fetch``): False when the direct connection is busy or missing."""
        direct = self.db.direct
        if values["subjects"] is not None:  # a bytea[] is left to psycopg
            return self._insert_direct(values, _INSERT_SENT_SQL)
        if direct is None or not direct.lock.acquire(blocking=False):
            return False
        try:
            direct.fetch(_INSERT_SENT_SQL, {**values, "payload": Jsonb(values["payload"])})
        finally:
            direct.lock.release()
        return True

    def create_many(self, jobs: list[NewJob]) -> list[JobInfo]:
        """Insert ``queued`` rows (and held messages of delayed ones) in one transaction.

        Raises:
            ValueError: an idempotency key (``create`` handles those, one job at a time).
        """
        if any(job.idempotency_key is not None for job in jobs):
            raise ValueError("enqueue_many takes no idempotency_key: enqueue such jobs one by one")
        now = utcnow()
        rows = [self._row(job, now) for job in jobs]
        if not rows:
            return []
        stored = [self._sealed(row) for row in rows]
        if any(job.held is not None for job in jobs) or not self._copy_direct(stored):
            with self.db.transaction() as session:
                session.execute(insert(Jobs), stored)  # one multi-row INSERT (insertmanyvalues)
                held = (job.held for job in jobs if job.held is not None)
                hold(session, *held, sealer=self.db.sealer)
        return [_queued_info(row) for row in rows]

    def _copy_direct(self, rows: list[dict[str, Any]], *, lazy: bool = False) -> bool:
        """Insert plain jobs' rows with one ``COPY`` (a single statement, so all or none);
        False when the direct connection is busy or missing, or (``lazy``) when a row exists.

        ``COPY`` costs a fraction of SQLAlchemy's multi-row INSERT per row, mostly in client CPU.
        ``lazy``: the rows of published messages, committed without waiting for the WAL flush,
        and a row a worker made first (``COPY`` cannot skip it) sends the caller to its fallback.
        """
        with self.db.free_direct() as connection:
            if connection is None:
                return False
            try:
                with connection.transaction() if lazy else contextlib.nullcontext():
                    if lazy:
                        connection.execute(_LAZY_COMMIT_SQL)
                    with connection.cursor() as cursor, cursor.copy(_COPY_QUEUED_SQL) as copy:
                        for row in rows:
                            values = list(_QUEUED_VALUES(row))
                            values[_PAYLOAD_AT] = Jsonb(values[_PAYLOAD_AT])
                            copy.write_row(values)
            except psycopg.errors.UniqueViolation:
                if not lazy:
                    raise
                return False
        return True

    def forget_many(self, job_ids: Iterable[str]) -> None:
        """Remove jobs whose messages could not be published (the enqueue is undone)."""
        ids = list(job_ids)
        with self.db.transaction() as session:
            session.execute(delete(Jobs).where(Jobs.id.in_(ids)))
            session.execute(delete(DelayedMessages).where(DelayedMessages.message_id.in_(ids)))

    def forget(self, job_id: str) -> None:
        """Remove a job whose message could not be published (the enqueue is undone)."""
        with self.db.transaction() as session:
            session.execute(delete(Jobs).where(Jobs.id == job_id))

    def find_by_idempotency_key(
        self, key: str, *, kind: str | None = None, queue: str | None = None
    ) -> JobInfo | None:
        """The job that holds ``key`` in the scope of ``kind`` and ``queue`` (its namespace); without
        them, the oldest job holding the key in any scope."""
        query = holder_of_key(key, kind=kind, queue=queue)
        with self.db.transaction() as session:
            row = session.execute(query.order_by(Jobs.created_at).limit(1)).first()
            return JobInfo.from_row(row, self.db.sealer) if row else None

    def get(self, job_id: str) -> JobInfo:
        """The job with this id.

        Raises:
            JobNotFound: no such job (also for an id that is not a UUID).
        """
        if not is_uuid(job_id):
            raise JobNotFound(f"no job {job_id!r}: a job id is a UUID")
        with self.db.transaction() as session:
            row = session.execute(select(Jobs).where(Jobs.id == job_id)).first()
            if row is None:
                raise JobNotFound(f"no job {job_id}")
            return JobInfo.from_row(row, self.db.sealer)

    def find(self, selection: JobSelection | None = None, **filters: Any) -> list[JobInfo]:
        """Newest first: a :class:`JobSelection`, or its fields as keywords."""
        selection = selection or JobSelection(**filters)
        if selection.error and self.db.sealer.enabled:
            with closing(self._error_matches(selection)) as matches:  # the stream ends with the page
                wanted = list(islice(matches, selection.offset, selection.offset + selection.limit))
            found = {info.id: info for info in self.by_ids(wanted)}
            return [found[i] for i in wanted if i in found]
        query = selection.apply(select(Jobs)).order_by(Jobs.created_at.desc(), Jobs.id)
        query = query.limit(selection.limit).offset(selection.offset)
        with self.db.transaction() as session:
            return [JobInfo.from_row(row, self.db.sealer) for row in session.execute(query)]

    def by_ids(self, job_ids: Iterable[str]) -> list[JobInfo]:
        """The jobs with these ids (unknown ids are left out), read 1,000 at a time."""
        wanted = [i for i in job_ids if is_uuid(i)]
        found: list[JobInfo] = []
        with self.db.transaction() as session:
            for start in range(0, len(wanted), 1000):
                rows = session.execute(select(Jobs).where(Jobs.id.in_(wanted[start : start + 1000])))
                found.extend(JobInfo.from_row(row, self.db.sealer) for row in rows)
        return found

    def ids(self, selection: JobSelection) -> list[str]:
        """The ids of every job the selection matches (no limit)."""
        if selection.error and self.db.sealer.enabled:
            return list(self._error_matches(selection))
        with self.db.transaction() as session:
            return [str(i) for i in session.scalars(selection.apply(select(Jobs.id)))]

    def _error_matches(self, selection: JobSelection) -> Generator[str, None, None]:
        """Ids of the selection's jobs whose error holds its text, newest first. Errors stored
        encrypted cannot be searched by SQL: they are streamed, opened and searched here."""
        needle = (selection.error or "").casefold()
        query = replace(selection, error=None).apply(select(Jobs.id, Jobs.error))
        query = query.where(Jobs.error.is_not(None)).order_by(Jobs.created_at.desc(), Jobs.id)
        with self.db.translated(), self.db.engine.connect() as connection:
            rows = connection.execution_options(stream_results=True, yield_per=1000).execute(query)
            try:
                for job_id, error in rows:
                    if (
                        needle
                        in (self.db.sealer.open_text(error, crypto.ERROR, str(job_id)) or "").casefold()
                    ):
                        yield str(job_id)
            finally:  # a page taken before the end closes the server-side cursor here
                rows.close()

    def cancel(self, job_id: str) -> str:
        """``cancelled`` (it was waiting), ``requested`` (it is running: it stops at its next
        check), or the final status it already had."""
        now = utcnow()
        with self.db.transaction() as session:
            done = session.execute(
                update(Jobs)
                .where(Jobs.id == job_id, Jobs.status.in_(_values(sources(Event.CANCEL))))
                .values(status=target(Event.CANCEL).value, finished_at=now, error="cancelled by an admin")
            )
            if done.rowcount:
                session.execute(delete(DelayedMessages).where(DelayedMessages.message_id == job_id))
                return "cancelled"
            asked = session.execute(
                update(Jobs)
                .where(Jobs.id == job_id, Jobs.status.in_(_values(sources(Event.REQUEST_CANCEL))))
                .values(cancel_requested_at=now)
            )
            if asked.rowcount:
                return "requested"
            status = session.scalar(select(Jobs.status).where(Jobs.id == job_id))
        if status is None:
            raise JobNotFound(f"no job {job_id}")
        return str(status)

    def reopen(self, job_id: str) -> JobInfo | None:
        """A failed or cancelled job back to ``queued`` (id, attempts and history kept), or ``None``."""
        with self.db.transaction() as session:
            row = session.execute(
                update(Jobs)
                .where(Jobs.id == job_id, Jobs.status.in_(_values(sources(Event.REOPEN))))
                .values(
                    status=target(Event.REOPEN).value,
                    error=None,
                    finished_at=None,
                    cancel_requested_at=None,
                    progress=None,
                )
                .returning(Jobs)
            ).one_or_none()
            return JobInfo.from_row(row, self.db.sealer) if row else None

    def finished_per_minute(self, since: datetime) -> list[int]:
        """How many jobs finished in each minute from ``since`` until now (oldest first)."""
        now = utcnow()
        minutes = max(1, int((now - since).total_seconds() // 60))
        counts = [0] * minutes
        with self.db.transaction() as session:
            for (moment,) in session.execute(select(Jobs.finished_at).where(Jobs.finished_at >= since)):
                index = int(((as_utc(moment) or now) - since).total_seconds() // 60)
                if 0 <= index < minutes:
                    counts[index] += 1
        return counts

    def restore(self, info: JobInfo) -> None:
        """Put back a job's status, error and end as ``info`` had them (an undone retry)."""
        with self.db.transaction() as session:
            session.execute(
                update(Jobs)
                .where(Jobs.id == info.id, Jobs.status == JobStatus.QUEUED.value)
                .values(
                    status=info.status,
                    error=self.db.sealer.seal_text(info.error, crypto.ERROR, info.id),
                    finished_at=info.finished_at,
                )
            )

    def set_progress(self, job_id: str, percent: int) -> None:
        """Record how far a running job is (0–100)."""
        with self.db.transaction() as session:
            session.execute(update(Jobs).where(Jobs.id == job_id).values(progress=percent))

    def children(self, job_id: str) -> list[JobInfo]:
        """Jobs this job enqueued."""
        query = select(Jobs).where(Jobs.parent_id == job_id).order_by(Jobs.created_at)
        with self.db.transaction() as session:
            return [JobInfo.from_row(row, self.db.sealer) for row in session.execute(query)]

    def attempts(self, job_id: str) -> list[AttemptInfo]:
        query = select(Attempts).where(Attempts.job_id == job_id).order_by(Attempts.attempt)
        with self.db.transaction() as session:
            return [AttemptInfo.from_row(row, self.db.sealer) for row in session.execute(query)]


#: The columns a producer writes: those of :func:`_queued_row`.
QUEUED_COLUMNS = (
    "id",
    "kind",
    "queue",
    "status",
    "payload",
    "attempts",
    "max_retries",
    "priority",
    "idempotency_key",
    "eta",
    "parent_id",
    "created_at",
    "subjects",
)
#: A queued row's values in :data:`QUEUED_COLUMNS`' order, and where its payload is among them.
_QUEUED_VALUES = operator.itemgetter(*QUEUED_COLUMNS)
_PAYLOAD_AT = QUEUED_COLUMNS.index("payload")
_BY_ID = operator.itemgetter("id")
_INSERT_QUEUED_SQL = "INSERT INTO jobs ({}) VALUES ({})".format(
    ", ".join(QUEUED_COLUMNS), ", ".join(f"%({c})s" for c in QUEUED_COLUMNS)
)
#: Within a statement's (or a transaction's) own transaction: its commit does not wait for the
#: WAL flush. For the rows of published messages only: should PostgreSQL crash before a later
#: commit flushes the WAL (any durable commit does, in order), a row may be lost, but its job
#: is not: the message is durable in RabbitMQ, and the worker that takes it writes the row
#: (on first sight). Every write a worker makes about the job comes later, so it flushes the row.
_LAZY_COMMIT_SQL = "SELECT set_config('synchronous_commit', 'off', true)"
_QUEUED_TYPES = {
    "id": "uuid",
    "kind": "text",
    "queue": "text",
    "status": "text",
    "payload": "jsonb",
    "attempts": "integer",
    "max_retries": "integer",
    "priority": "integer",
    "idempotency_key": "text",
    "eta": "timestamptz",
    "parent_id": "uuid",
    "created_at": "timestamptz",
    "subjects": "bytea[]",
}
#: A published job's row, in one statement committed as :data:`_LAZY_COMMIT_SQL` says; a row a
#: worker made first is kept.
_INSERT_SENT_SQL = (
    "INSERT INTO jobs ({}) SELECT {} FROM set_config('synchronous_commit', 'off', true) "
    "ON CONFLICT (id) DO NOTHING"
).format(", ".join(QUEUED_COLUMNS), ", ".join(f"CAST(%({c})s AS {_QUEUED_TYPES[c]})" for c in QUEUED_COLUMNS))
_COPY_QUEUED_SQL = "COPY jobs ({}) FROM STDIN".format(", ".join(QUEUED_COLUMNS))


def _values(statuses: frozenset[JobStatus]) -> list[str]:
    return sorted(status.value for status in statuses)


def _queued_row(job: NewJob, now: datetime) -> dict[str, Any]:
    """The ``jobs`` row of a job about to be enqueued (``subjects``: see :meth:`JobStore._row`)."""
    return {
        "id": job.id,
        "kind": job.kind,
        "queue": job.queue,
        "status": JobStatus.QUEUED.value,
        "payload": job.payload,
        "attempts": 0,
        "max_retries": job.max_retries,
        "priority": job.priority,
        "idempotency_key": job.idempotency_key,
        "eta": job.eta,
        "parent_id": job.parent_id,
        "created_at": now,
        "subjects": None,
    }


#: What a queued row has not: the rest of a :class:`JobInfo`'s fields.
_NOT_YET = {"result": None, "error": None, "progress": None, "started_at": None, "finished_at": None}


def _queued_info(values: dict[str, Any]) -> JobInfo:
    """The :class:`JobInfo` of a row just written from ``values`` (a :func:`_queued_row`).

    Its fields are filled in directly: a frozen dataclass's ``__init__`` sets each of its 17
    fields through ``object.__setattr__``, 5 µs a job, a fifth of ``enqueue_many``'s CPU."""
    info = object.__new__(JobInfo)
    fields = info.__dict__
    fields.update(values)
    fields.pop("subjects", None)
    fields.update(_NOT_YET)
    return info
