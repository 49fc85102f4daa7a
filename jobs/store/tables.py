"""The job store's tables (SPEC §3) in SQLAlchemy Core: what worker processes build their
statements from, without the ORM (about 7 MiB in every process, issue 14).

``jobs/store/models.py`` maps its ORM classes onto these same tables, for the commands and the
dashboard. Alembic migrations must keep equal to them (tested).

Each table is also reachable as a :class:`Columns` class (``Jobs.status``, ``select(Jobs)``,
``update(Jobs)``), so that a Core statement reads as the ORM one did.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

# Stable constraint names, so that migrations can name what they alter.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

JsonType = JSON().with_variant(JSONB(), "postgresql")
#: Keyed hashes (GDPR subjects): ``bytea[]`` on PostgreSQL, a JSON list on SQLite (the demo).
HashesType = JSON().with_variant(ARRAY(LargeBinary()), "postgresql")
UuidStr = Uuid(as_uuid=False)
BigId = BigInteger().with_variant(Integer, "sqlite")


def _moment(name: str, *, nullable: bool = False, index: bool | None = None) -> Column[Any]:
    return Column(name, DateTime(timezone=True), nullable=nullable, index=index)


#: One job: its payload, where it is in its life, and its result or last error.
jobs = Table(
    "jobs",
    metadata,
    Column("id", UuidStr, primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("queue", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("payload", JsonType, nullable=False),
    Column("result", JsonType, nullable=True),
    Column("error", Text, nullable=True),
    Column("attempts", Integer, server_default=text("0"), nullable=False),
    Column("max_retries", Integer, nullable=True),
    Column("priority", Integer, nullable=True),
    # Unique per namespace and kind (see below); the queue names the namespace.
    Column("idempotency_key", String(255), nullable=True),
    Column("progress", Integer, nullable=True),
    # An admin asked a running job to stop; it does at its next step (a cooperative check).
    _moment("cancel_requested_at", nullable=True),
    # The job that enqueued this one (a report's follow-up email).
    Column("parent_id", UuidStr, ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True),
    # When a delayed or retrying job is due.
    _moment("eta", nullable=True),
    _moment("created_at"),
    _moment("started_at", nullable=True),
    _moment("finished_at", nullable=True),
    # HMAC-SHA256 of each address the payload names (``jobs.subjects``), when encryption keys are
    # set: how `conveyor gdpr` finds a person's jobs without reading payloads.
    Column("subjects", HashesType, nullable=True),
    # The error fingerprint's key (``jobs.fingerprint``) while the job's message is in its
    # dead-letter queue: written by the worker with the failed end that dead-letters it, cleared
    # when ``conveyor dlq`` (or the dashboard) requeues or purges that message.
    Column("dead_fingerprint", String(16), nullable=True),
    # `jobs list --status S` and `--kind K`, newest first; stats over a time window.
    Index(None, "status", "created_at"),
    Index(None, "kind", "created_at"),
    Index(None, "created_at"),
    Index(None, "queue", "status"),
    # Partial indexes (migration 0018, partial on SQLite too): a row enters them only once the
    # column is set, and every query that reads them compares that column, which implies it.
    # `conveyor stats`, `top`, `prune` and the dashboard's overview read what finished in a
    # window: finished jobs and their latency per minute, from the index alone.
    Index(
        None,
        "finished_at",
        "status",
        postgresql_include=["started_at", "created_at", "attempts", "queue"],
        postgresql_where=text("finished_at IS NOT NULL"),
    ),
    # A job's follow-ups (`parent_id = …`); most jobs have no parent.
    Index(None, "parent_id", postgresql_where=text("parent_id IS NOT NULL")),
    # `conveyor gdpr` finds a subject's jobs with `subjects && ARRAY[…]` (hashes are written only
    # with encryption keys).
    Index(None, "subjects", postgresql_using="gin", postgresql_where=text("subjects IS NOT NULL")),
    # The dashboard: one queue's jobs newest first; payload search (`payload @> …`, migration
    # 0012 makes it on PostgreSQL only).
    Index(None, "queue", "created_at"),
    Index(None, "payload", postgresql_using="gin", postgresql_ops={"payload": "jsonb_path_ops"}),
    # The dashboard's error search walks only the jobs that have an error, newest first.
    Index("ix_jobs_errors_created_at", "created_at", "id", postgresql_where=text("error IS NOT NULL")),
    # The dashboard's dead letters: the marked rows of a queue, newest first.
    Index(
        "ix_jobs_dead_letters",
        "queue",
        "finished_at",
        # Partial on SQLite too (migration 0016); naming ``sqlite_where`` here would load
        # SQLAlchemy's SQLite dialect in every worker process.
        postgresql_where=text("dead_fingerprint IS NOT NULL"),
    ),
    # One partition a day of UUIDv7 ids, and a DEFAULT one for other ids (``partitions.py``);
    # migration 0017 makes it so on PostgreSQL.
    postgresql_partition_by="RANGE (id)",
)

#: The idempotency key of a job enqueued with one (``enqueue(..., idempotency_key=K)``). Its
#: scope is the namespace (the queue's prefix) and kind. Kept out of ``jobs``: a unique
#: constraint of a partitioned table must hold its partition key, and a key must be unique
#: across every partition. Written with the job's row, deleted with it (cascade).
job_keys = Table(
    "job_keys",
    metadata,
    Column("idempotency_key", String(255), primary_key=True),
    Column("kind", String(64), primary_key=True),
    Column("queue", String(255), primary_key=True),
    Column("job_id", UuidStr, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True),
)

#: One run of a job on one worker.
job_attempts = Table(
    "job_attempts",
    metadata,
    Column("id", BigId, primary_key=True),
    # No foreign key: a check against the partitioned ``jobs`` is planned anew for every row
    # inserted, and every job writes one. A trigger deletes a job's attempts with it instead
    # (migration 0017), and the store writes an attempt only beside its job's own move.
    Column("job_id", UuidStr, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("worker", String(255), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    _moment("started_at"),
    _moment("finished_at", nullable=True),
    Column("outcome", String(16), nullable=True),
    Column("error", Text, nullable=True),
    Column("traceback", Text, nullable=True),
    # The W3C trace id (32 hex digits) the attempt ran under, when its message carried one.
    Column("trace_id", String(32), nullable=True),
    UniqueConstraint("job_id", "attempt"),
    # `conveyor workers` falls back to the attempts of the last minutes when Redis is down.
    Index(None, "started_at"),
)

#: A run started without a write to its job (``jobs/store/claims.py``), until its end is written.
#: Written by the claim that let the run go (unlogged on PostgreSQL, migration 0015: no WAL, and
#: a crash of PostgreSQL drops the claims with their locks), deleted in the transaction that
#: records the run. A row whose job's message comes again is a run whose worker died: it is
#: recorded as a ``lost`` attempt then.
job_claims = Table(
    "job_claims",
    metadata,
    Column("job_id", UuidStr, primary_key=True),
    # The attempt number the run took.
    Column("attempt", Integer, nullable=False),
    Column("worker", String(255), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    _moment("started_at"),
)

#: A file a job consumes or produces. Small files live in ``data``; others at ``location``.
artifacts = Table(
    "artifacts",
    metadata,
    Column("id", UuidStr, primary_key=True),
    Column("name", String(255), nullable=False),
    Column("content_type", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("data", LargeBinary, nullable=True),
    Column("location", Text, nullable=True),
    Column("job_id", UuidStr, ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True, index=True),
    _moment("created_at"),
)

#: What became of an email job's message: ``sending`` while DATA is in flight, then ``sent``.
#: Checked before every send, so that a retry or a redelivery never sends twice.
email_deliveries = Table(
    "email_deliveries",
    metadata,
    Column("job_id", UuidStr, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("message_id", String(255), nullable=False),
    Column("accepted", JsonType, nullable=True),
    Column("rejected", JsonType, nullable=True),
    _moment("updated_at"),
)

#: A message held until it is due: a delayed enqueue, or a retry waiting out its backoff. Held
#: here rather than in a worker's memory (Dramatiq's ``.DQ``), so that a delay of days trips no
#: ``consumer_timeout`` and costs no worker memory; every replica's dispatcher publishes what is due.
delayed_messages = Table(
    "delayed_messages",
    metadata,
    Column("message_id", String(64), primary_key=True),
    Column("queue", String(255), nullable=False),
    _moment("due_at", index=True),
    # The Dramatiq message as it will be published (its JSON wire format).
    Column("body", LargeBinary, nullable=False),
    _moment("created_at"),
)

#: A job's message written in the application's own transaction (``enqueue(..., session=S)``),
#: waiting for a relay to publish it once that transaction has committed. A relay locks entries
#: (``FOR UPDATE SKIP LOCKED``), publishes them with confirms and deletes them in the transaction
#: that locked them; an insert notifies the relays (``LISTEN conveyor_outbox``, the namespace as
#: payload) through a trigger on PostgreSQL.
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("namespace", String(63), nullable=False),
    Column("job_id", UuidStr, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("queue", String(255), nullable=False),
    # The Dramatiq message as it will be published (its JSON wire format, sealed when encryption is on).
    Column("message", LargeBinary, nullable=False),
    _moment("created_at"),
    # Publishing rounds that failed (RabbitMQ unreachable or refusing), and the last one's error.
    Column("attempts", Integer, server_default=text("0"), nullable=False),
    Column("last_error", Text, nullable=True),
    # The relays' scan: a namespace's entries, oldest first.
    Index(None, "namespace", "id"),
)

#: The last tick of one schedule entry the scheduler has dealt with (enqueued, or skipped by the
#: entry's catch-up rule); the leader moves it forward after each enqueue.
schedule_ticks = Table(
    "schedule_ticks",
    metadata,
    Column("namespace", String(63), primary_key=True),
    Column("name", String(100), primary_key=True),
    _moment("last_tick"),
    _moment("updated_at"),
)

#: A paused queue of a namespace: workers stop fetching its messages until the row is deleted.
queue_pauses = Table(
    "queue_pauses",
    metadata,
    Column("namespace", String(63), primary_key=True),
    # The queue's full name (``<namespace>.email``), as RabbitMQ knows it.
    Column("queue", String(255), primary_key=True),
    _moment("paused_at"),
    # Who paused it (``source:actor@host``, as in the audit log).
    Column("paused_by", String(255), nullable=False),
)

#: One state-changing admin action: who, what, when, which jobs, how many.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True),
    _moment("at"),
    Column("namespace", String(63), nullable=False),
    # ``cli``, ``web`` or ``scheduler``.
    Column("source", String(16), nullable=False),
    # The OS user (CLI), the web user, or the scheduler replica.
    Column("actor", String(255), nullable=False),
    Column("host", String(255), nullable=False),
    Column("action", String(64), nullable=False),
    # ``ok`` or ``error`` (the action stopped part-way; ``details`` says why).
    Column("outcome", String(16), nullable=False),
    Column("count", Integer, nullable=True),
    # The jobs (or messages) acted on, by id; ``selection`` when they were chosen by a filter.
    Column("job_ids", JsonType, nullable=True),
    Column("selection", JsonType, nullable=True),
    Column("details", JsonType, nullable=True),
    Index(None, "namespace", "at"),
    Index(None, "action", "at"),
)

#: One row: a random secret made by the migration, keying the audit log's subject hashes.
installation = Table(
    "installation",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("secret", LargeBinary, nullable=False),
    _moment("created_at"),
)


class _ColumnsOf(type):
    """``Jobs.status`` is the ``status`` column of ``Jobs.__table__``; ``Jobs`` in a statement is
    the table (SQLAlchemy takes any object with ``__clause_element__``)."""

    __table__: Table

    def __getattr__(cls, name: str) -> Column[Any]:
        try:
            return cls.__table__.c[name]
        except KeyError:
            raise AttributeError(f"table {cls.__table__.name} has no column {name!r}") from None

    def __clause_element__(cls) -> Table:
        return cls.__table__


class Columns(metaclass=_ColumnsOf):
    """A table as a class of columns, for Core statements: see the module's docstring."""

    __table__: Table


class Jobs(Columns):
    __table__ = jobs


class JobKeys(Columns):
    __table__ = job_keys


class Attempts(Columns):
    __table__ = job_attempts


class Claims(Columns):
    __table__ = job_claims


class Artifacts(Columns):
    __table__ = artifacts


class EmailDeliveries(Columns):
    __table__ = email_deliveries


class DelayedMessages(Columns):
    __table__ = delayed_messages


class Outbox(Columns):
    __table__ = outbox


class QueuePauses(Columns):
    __table__ = queue_pauses
