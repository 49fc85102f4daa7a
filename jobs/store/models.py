"""The job store's tables (SPEC §3). Alembic migrations must keep equal to these (tested)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names, so that migrations can name what they alter.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JsonType = JSON().with_variant(JSONB(), "postgresql")
#: Keyed hashes (GDPR subjects): ``bytea[]`` on PostgreSQL, a JSON list on SQLite (the demo).
HashesType = JSON().with_variant(ARRAY(LargeBinary()), "postgresql")
UuidStr = Uuid(as_uuid=False)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class JobRow(Base):
    """One job: its payload, where it is in its life, and its result or last error."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(UuidStr, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonType)
    result: Mapped[dict[str, Any] | None] = mapped_column(JsonType, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    max_retries: Mapped[int | None] = mapped_column(Integer, nullable=True)
    priority: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: Unique per namespace and kind (see ``__table_args__``); the queue names the namespace.
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    progress: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: An admin asked a running job to stop; it does at its next step (a cooperative check).
    cancel_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: The job that enqueued this one (a report's follow-up email).
    parent_id: Mapped[str | None] = mapped_column(
        UuidStr, ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True, index=True
    )
    #: When a delayed or retrying job is due.
    eta: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: HMAC-SHA256 of each address the payload names (``jobs.subjects``), when encryption keys are
    #: set: how `conveyor gdpr` finds a person's jobs without reading payloads.
    subjects: Mapped[list[bytes] | None] = mapped_column(HashesType, nullable=True)
    #: The error fingerprint's key (``jobs.fingerprint``) while the job's message is in its
    #: dead-letter queue: written by the worker with the failed end that dead-letters it, cleared
    #: when ``conveyor dlq`` (or the dashboard) requeues or purges that message.
    dead_fingerprint: Mapped[str | None] = mapped_column(String(16), nullable=True)

    __table_args__ = (
        # `jobs list --status S` and `--kind K`, newest first; stats over a time window.
        Index(None, "status", "created_at"),
        Index(None, "kind", "created_at"),
        Index(None, "created_at"),
        Index(None, "queue", "status"),
        # `conveyor stats` and `top` read what finished in a window; `prune` what finished long ago.
        Index(None, "finished_at"),
        # The dashboard's overview: finished jobs and their latency per minute, from the index alone.
        Index(
            None,
            "finished_at",
            "status",
            postgresql_include=["started_at", "created_at", "attempts", "queue"],
        ),
        # An idempotency key's scope is its namespace (the queue's prefix) and kind.
        UniqueConstraint("idempotency_key", "kind", "queue"),
        # `conveyor gdpr` finds a subject's jobs with `subjects && ARRAY[…]`.
        Index(None, "subjects", postgresql_using="gin"),
        # The dashboard: one queue's jobs newest first; payload search (`payload @> …`, migration
        # 0012 makes it on PostgreSQL only).
        Index(None, "queue", "created_at"),
        Index(None, "payload", postgresql_using="gin", postgresql_ops={"payload": "jsonb_path_ops"}),
        # The dashboard's error search walks only the jobs that have an error, newest first.
        Index("ix_jobs_errors_created_at", "created_at", "id", postgresql_where=text("error IS NOT NULL")),
        # The dashboard's dead letters: only the dead-lettered jobs, per queue (migration 0016).
        Index(
            "ix_jobs_dead_letters",
            "queue",
            "finished_at",
            postgresql_where=text("dead_fingerprint IS NOT NULL"),
            sqlite_where=text("dead_fingerprint IS NOT NULL"),
        ),
    )


class AttemptRow(Base):
    """One run of a job on one worker."""

    __tablename__ = "job_attempts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[str] = mapped_column(UuidStr, ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(255))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    traceback: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The W3C trace id (32 hex digits) the attempt ran under, when its message carried one.
    trace_id: Mapped[str | None] = mapped_column(String(32), nullable=True)

    __table_args__ = (
        UniqueConstraint("job_id", "attempt"),
        # `conveyor workers` falls back to the attempts of the last minutes when Redis is down.
        Index(None, "started_at"),
    )


class ClaimRow(Base):
    """A run started without a write to its job (``jobs/store/claims.py``), until its end is written.

    Written by the claim that let the run go (unlogged on PostgreSQL: no WAL, and a crash of
    PostgreSQL drops the claims with their locks), deleted in the transaction that records the
    run. A row whose job's message comes again is a run whose worker died: it is recorded as a
    ``lost`` attempt then.
    """

    __tablename__ = "job_claims"

    job_id: Mapped[str] = mapped_column(UuidStr, primary_key=True)
    #: The attempt number the run took.
    attempt: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(255))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ArtifactRow(Base):
    """A file a job consumes or produces. Small files live in ``data``; others at ``location``."""

    __tablename__ = "artifacts"

    id: Mapped[str] = mapped_column(UuidStr, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    location: Mapped[str | None] = mapped_column(Text, nullable=True)
    job_id: Mapped[str | None] = mapped_column(
        UuidStr, ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class EmailDeliveryRow(Base):
    """What became of an email job's message: ``sending`` while DATA is in flight, then ``sent``.

    Checked before every send, so that a retry or a redelivery never sends twice.
    """

    __tablename__ = "email_deliveries"

    job_id: Mapped[str] = mapped_column(UuidStr, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    message_id: Mapped[str] = mapped_column(String(255))
    accepted: Mapped[list[str] | None] = mapped_column(JsonType, nullable=True)
    rejected: Mapped[dict[str, str] | None] = mapped_column(JsonType, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DelayedMessageRow(Base):
    """A message held until it is due: a delayed enqueue, or a retry waiting out its backoff.

    Held here rather than in a worker's memory (Dramatiq's ``.DQ``), so that a delay of
    days trips no ``consumer_timeout`` and costs no worker memory; every replica's
    dispatcher publishes what is due.
    """

    __tablename__ = "delayed_messages"

    message_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    queue: Mapped[str] = mapped_column(String(255))
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    #: The Dramatiq message as it will be published (its JSON wire format).
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OutboxRow(Base):
    """A job's message written in the application's own transaction (``enqueue(..., session=S)``),
    waiting for a relay to publish it once that transaction has committed.

    A relay locks entries (``FOR UPDATE SKIP LOCKED``), publishes them with confirms and deletes
    them in the transaction that locked them; an insert notifies the relays (``LISTEN
    conveyor_outbox``, the namespace as payload) through a trigger on PostgreSQL.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(63))
    job_id: Mapped[str] = mapped_column(UuidStr, ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    queue: Mapped[str] = mapped_column(String(255))
    #: The Dramatiq message as it will be published (its JSON wire format, sealed when encryption is on).
    message: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: Publishing rounds that failed (RabbitMQ unreachable or refusing), and the last one's error.
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)

    #: The relays' scan: a namespace's entries, oldest first.
    __table_args__ = (Index(None, "namespace", "id"),)


class ScheduleTickRow(Base):
    """The last tick of one schedule entry the scheduler has dealt with (enqueued, or skipped
    by the entry's catch-up rule); the leader moves it forward after each enqueue."""

    __tablename__ = "schedule_ticks"

    namespace: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_tick: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class QueuePauseRow(Base):
    """A paused queue of a namespace: workers stop fetching its messages until the row is deleted."""

    __tablename__ = "queue_pauses"

    namespace: Mapped[str] = mapped_column(String(63), primary_key=True)
    #: The queue's full name (``<namespace>.email``), as RabbitMQ knows it.
    queue: Mapped[str] = mapped_column(String(255), primary_key=True)
    paused_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: Who paused it (``source:actor@host``, as in the audit log).
    paused_by: Mapped[str] = mapped_column(String(255))


# ---------------------------------------------------------------- audit log and GDPR


class AuditRow(Base):
    """One state-changing admin action: who, what, when, which jobs, how many."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    namespace: Mapped[str] = mapped_column(String(63))
    #: ``cli``, ``web`` or ``scheduler``.
    source: Mapped[str] = mapped_column(String(16))
    #: The OS user (CLI), the web user, or the scheduler replica.
    actor: Mapped[str] = mapped_column(String(255))
    host: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    #: ``ok`` or ``error`` (the action stopped part-way; ``details`` says why).
    outcome: Mapped[str] = mapped_column(String(16))
    count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: The jobs (or messages) acted on, by id; ``selection`` when they were chosen by a filter.
    job_ids: Mapped[list[str] | None] = mapped_column(JsonType, nullable=True)
    selection: Mapped[dict[str, Any] | None] = mapped_column(JsonType, nullable=True)
    details: Mapped[dict[str, Any] | None] = mapped_column(JsonType, nullable=True)

    __table_args__ = (Index(None, "namespace", "at"), Index(None, "action", "at"))


class InstallationRow(Base):
    """One row: a random secret made by the migration, keying the audit log's subject hashes."""

    __tablename__ = "installation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
