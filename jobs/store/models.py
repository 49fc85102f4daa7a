"""The job store's tables (SPEC §3) as ORM classes, for the commands and the dashboard: each is
mapped onto its Core table in ``jobs/store/tables.py``, which worker processes use without the
ORM. Alembic migrations must keep equal to these (tested)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import DeclarativeBase, Mapped

from jobs.store import tables
from jobs.store.tables import NAMING_CONVENTION, HashesType, JsonType, UuidStr

__all__ = ["NAMING_CONVENTION", "Base", "HashesType", "JsonType", "UuidStr"]


class Base(DeclarativeBase):
    metadata = tables.metadata


class JobRow(Base):
    """One job: its payload, where it is in its life, and its result or last error."""

    __table__ = tables.jobs

    id: Mapped[str]
    kind: Mapped[str]
    queue: Mapped[str]
    status: Mapped[str]
    payload: Mapped[dict[str, Any]]
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None]
    attempts: Mapped[int]
    max_retries: Mapped[int | None]
    priority: Mapped[int | None]
    #: Unique per namespace and kind; the queue names the namespace.
    idempotency_key: Mapped[str | None]
    progress: Mapped[int | None]
    #: An admin asked a running job to stop; it does at its next step (a cooperative check).
    cancel_requested_at: Mapped[datetime | None]
    #: The job that enqueued this one (a report's follow-up email).
    parent_id: Mapped[str | None]
    #: When a delayed or retrying job is due.
    eta: Mapped[datetime | None]
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    #: HMAC-SHA256 of each address the payload names (``jobs.subjects``), when encryption keys are
    #: set: how `conveyor gdpr` finds a person's jobs without reading payloads.
    subjects: Mapped[list[bytes] | None]
    #: The error fingerprint's key while the job's message is in its dead-letter queue.
    dead_fingerprint: Mapped[str | None]


class AttemptRow(Base):
    """One run of a job on one worker."""

    __table__ = tables.job_attempts

    id: Mapped[int]
    job_id: Mapped[str]
    attempt: Mapped[int]
    worker: Mapped[str]
    host: Mapped[str]
    pid: Mapped[int]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str | None]
    error: Mapped[str | None]
    traceback: Mapped[str | None]
    #: The W3C trace id (32 hex digits) the attempt ran under, when its message carried one.
    trace_id: Mapped[str | None]


class JobKeyRow(Base):
    """The idempotency key of a job enqueued with one, unique in its namespace and kind."""

    __table__ = tables.job_keys

    idempotency_key: Mapped[str]
    kind: Mapped[str]
    queue: Mapped[str]
    job_id: Mapped[str]


class ClaimRow(Base):
    """A run started without a write to its job (``jobs/store/claims.py``), until its end is written."""

    __table__ = tables.job_claims

    job_id: Mapped[str]
    attempt: Mapped[int]
    worker: Mapped[str]
    host: Mapped[str]
    pid: Mapped[int]
    started_at: Mapped[datetime]


class ArtifactRow(Base):
    """A file a job consumes or produces. Small files live in ``data``; others at ``location``."""

    __table__ = tables.artifacts

    id: Mapped[str]
    name: Mapped[str]
    content_type: Mapped[str]
    size: Mapped[int]
    sha256: Mapped[str]
    data: Mapped[bytes | None]
    location: Mapped[str | None]
    job_id: Mapped[str | None]
    created_at: Mapped[datetime]


class EmailDeliveryRow(Base):
    """What became of an email job's message: ``sending`` while DATA is in flight, then ``sent``.

    Checked before every send, so that a retry or a redelivery never sends twice.
    """

    __table__ = tables.email_deliveries

    job_id: Mapped[str]
    state: Mapped[str]
    message_id: Mapped[str]
    accepted: Mapped[list[str] | None]
    rejected: Mapped[dict[str, str] | None]
    updated_at: Mapped[datetime]


class DelayedMessageRow(Base):
    """A message held until it is due: a delayed enqueue, or a retry waiting out its backoff.

    Held here rather than in a worker's memory (Dramatiq's ``.DQ``), so that a delay of
    days trips no ``consumer_timeout`` and costs no worker memory; every replica's
    dispatcher publishes what is due.
    """

    __table__ = tables.delayed_messages

    message_id: Mapped[str]
    queue: Mapped[str]
    due_at: Mapped[datetime]
    #: The Dramatiq message as it will be published (its JSON wire format).
    body: Mapped[bytes]
    created_at: Mapped[datetime]


class OutboxRow(Base):
    """A job's message written in the application's own transaction (``enqueue(..., session=S)``),
    waiting for a relay to publish it once that transaction has committed.

    A relay locks entries (``FOR UPDATE SKIP LOCKED``), publishes them with confirms and deletes
    them in the transaction that locked them; an insert notifies the relays (``LISTEN
    conveyor_outbox``, the namespace as payload) through a trigger on PostgreSQL.
    """

    __table__ = tables.outbox

    id: Mapped[int]
    namespace: Mapped[str]
    job_id: Mapped[str]
    queue: Mapped[str]
    #: The Dramatiq message as it will be published (its JSON wire format, sealed when encryption is on).
    message: Mapped[bytes]
    created_at: Mapped[datetime]
    #: Publishing rounds that failed (RabbitMQ unreachable or refusing), and the last one's error.
    attempts: Mapped[int]
    last_error: Mapped[str | None]


class ScheduleTickRow(Base):
    """The last tick of one schedule entry the scheduler has dealt with (enqueued, or skipped
    by the entry's catch-up rule); the leader moves it forward after each enqueue."""

    __table__ = tables.schedule_ticks

    namespace: Mapped[str]
    name: Mapped[str]
    last_tick: Mapped[datetime]
    updated_at: Mapped[datetime]


class QueuePauseRow(Base):
    """A paused queue of a namespace: workers stop fetching its messages until the row is deleted."""

    __table__ = tables.queue_pauses

    namespace: Mapped[str]
    #: The queue's full name (``<namespace>.email``), as RabbitMQ knows it.
    queue: Mapped[str]
    paused_at: Mapped[datetime]
    #: Who paused it (``source:actor@host``, as in the audit log).
    paused_by: Mapped[str]


class AuditRow(Base):
    """One state-changing admin action: who, what, when, which jobs, how many."""

    __table__ = tables.audit_log

    id: Mapped[int]
    at: Mapped[datetime]
    namespace: Mapped[str]
    #: ``cli``, ``web`` or ``scheduler``.
    source: Mapped[str]
    #: The OS user (CLI), the web user, or the scheduler replica.
    actor: Mapped[str]
    host: Mapped[str]
    action: Mapped[str]
    #: ``ok`` or ``error`` (the action stopped part-way; ``details`` says why).
    outcome: Mapped[str]
    count: Mapped[int | None]
    #: The jobs (or messages) acted on, by id; ``selection`` when they were chosen by a filter.
    job_ids: Mapped[list[str] | None]
    selection: Mapped[dict[str, Any] | None]
    details: Mapped[dict[str, Any] | None]


class InstallationRow(Base):
    """One row: a random secret made by the migration, keying the audit log's subject hashes."""

    __table__ = tables.installation

    id: Mapped[int]
    secret: Mapped[bytes]
    created_at: Mapped[datetime]
