"""The client library applications use to enqueue jobs and follow them."""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import dramatiq

from jobs.broker import BROKER_ERRORS, broker_unavailable, build_broker
from jobs.delivery import DeliveryOptions
from jobs.ids import new_job_ids
from jobs.keyring import keyring_of
from jobs.kinds import JobKind, get_kind
from jobs.settings import Settings
from jobs.signing import MessageSigner
from jobs.storable import check_size, check_storable
from jobs.store import Database, JobStore, NewJob
from jobs.store.artifacts import ArtifactStore
from jobs.store.delayed import HeldMessage
from jobs.store.jobs import JobInfo
from jobs.store.outbox import OutboxStore
from jobs.subjects import SubjectHasher
from jobs.tracing import TRACEPARENT_OPTION, current_traceparent, outgoing_traceparent
from producers.job import Job
from producers.sending import Sender

logger = logging.getLogger("conveyor.producer")


class Client:
    """Enqueue jobs and look them up.

    ``Client()`` reads the ``CONVEYOR_*`` environment; keyword arguments override it.

    Raises:
        SettingsError: a bad ``CONVEYOR_*`` variable or argument.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        broker_url: str | None = None,
        database_url: str | None = None,
        namespace: str | None = None,
        broker: dramatiq.Broker | None = None,
        db: Database | None = None,
    ) -> None:
        base = settings if settings is not None else Settings.from_env(os.environ)
        self.settings = base.with_overrides(
            broker_url=broker_url, database_url=database_url, namespace=namespace
        )
        self._owns_db = db is None
        self._db = (
            db
            if db is not None
            else Database(self.settings.database_url, keyring=keyring_of(self.settings.encryption_keys))
        )
        self._jobs = JobStore(self._db, subjects=SubjectHasher.from_keys(self.settings.encryption_keys))
        self._outbox = OutboxStore(self._jobs)
        self.artifacts = ArtifactStore(self._db, self.settings.artifact_url)
        self._owns_broker = broker is None
        self.broker = broker if broker is not None else build_broker(self.settings)
        self._sender = Sender(self.settings, self.broker, self._jobs)
        #: Signs every message this client creates (None without ``CONVEYOR_SIGNING_KEY``).
        self._signer = MessageSigner.from_settings(self.settings)

    @property
    def db(self) -> Database:
        """Deprecated: the client's store is its own; admin work goes through
        ``jobs.admin.operations.Operations``."""
        warnings.warn("Client.db is private now", DeprecationWarning, stacklevel=2)
        return self._db

    @property
    def jobs(self) -> JobStore:
        """Deprecated: use :meth:`get` and :meth:`get_many` (or ``jobs.admin.operations``)."""
        warnings.warn("Client.jobs is private now: use get() or get_many()", DeprecationWarning, stacklevel=2)
        return self._jobs

    def enqueue(
        self,
        kind: str,
        /,
        *,
        idempotency_key: str | None = None,
        delay: float | timedelta | None = None,
        priority: int | None = None,
        max_retries: int | None = None,
        min_backoff: float | None = None,
        max_backoff: float | None = None,
        traceparent: str | None = None,
        session: object | None = None,
        **payload: Any,
    ) -> Job:
        """Enqueue a job of ``kind`` with ``payload``; returns once RabbitMQ confirmed it and its row exists.

        With an ``idempotency_key`` already used, the first job is returned and nothing is sent.
        The job runs in the trace of the current OpenTelemetry span, or of ``traceparent`` (a W3C
        header, e.g. an incoming request's; a malformed one is dropped with a warning).

        With ``session`` (the application's SQLAlchemy ``Session`` or ``Connection`` on Conveyor's
        PostgreSQL database), the job is written inside that session's transaction and nothing is
        sent: a relay in every ``conveyor worker`` publishes it once the transaction commits, and a
        rollback leaves no job and no message (``docs/guides/transactional-enqueue.md``).

        Raises:
            ValueError: an unknown kind, a bad payload or a bad option (nothing was sent); a
                ``session`` on another database, or with the embedded broker or SQLite.
            TypeError: ``session`` is neither a SQLAlchemy ``Session`` nor a ``Connection``.
            ServiceUnavailable: RabbitMQ or the database stayed unreachable for
                ``CONVEYOR_ENQUEUE_TIMEOUT`` seconds (no job was created).
            JobNotRecorded: a ``ServiceUnavailable`` where the database went away after RabbitMQ
                took the message: the job runs once the database is back; do not enqueue it again.
        """
        options = DeliveryOptions(
            idempotency_key, delay, priority, max_retries, min_backoff, max_backoff, traceparent
        )
        return self.enqueue_with_options(kind, payload, options, session=session)

    def enqueue_with_options(
        self,
        kind_name: str,
        payload: Mapping[str, Any],
        options: DeliveryOptions,
        *,
        parent_id: str | None = None,
        session: object | None = None,
    ) -> Job:
        """Like :meth:`enqueue`, with the payload and delivery options kept apart.

        ``parent_id`` links a follow-up job to the job that enqueued it; ``session`` writes it in
        the application's transaction, as in :meth:`enqueue`.
        """
        if session is not None:
            self._check_outbox()
        kind = get_kind(kind_name)
        clean = kind.validate(payload, self.settings)
        _check_json(kind, clean, self.settings)
        options.check(self.settings.max_priority)
        missing = self.artifacts.missing(kind.artifact_ids(clean))
        if missing:
            raise ValueError(f"{kind.name} payload: no artifact {', '.join(missing)}")
        message = self._message(kind, clean, options)
        job = self._new_job(kind, message, options, parent_id=parent_id)
        if session is not None:
            info, created = self._outbox.write(session, job, message, namespace=self.settings.namespace)
        else:
            info, created = self._sender.enqueue(message, job, options.delay_ms())
        if not created:
            _warn_if_payload_differs(info, job)
        return Job(self._jobs, info)

    def enqueue_many(
        self,
        kind: str,
        payloads: Iterable[Mapping[str, Any]],
        /,
        *,
        delay: float | timedelta | None = None,
        priority: int | None = None,
        max_retries: int | None = None,
        min_backoff: float | None = None,
        max_backoff: float | None = None,
        traceparent: str | None = None,
        session: object | None = None,
    ) -> list[Job]:
        """Enqueue one job of ``kind`` per payload: every message published with pipelined
        confirms, and every row written in one ``COPY`` while RabbitMQ confirms them (delayed
        jobs: the rows and held messages first). Returns once all are confirmed and written.

        With ``session`` (as in :meth:`enqueue`) the rows and their outbox entries are copied into
        that session's transaction instead, and the relays publish them once it commits.

        A bad payload raises ``ValueError`` before anything is written or sent. If RabbitMQ
        cannot take them all (after retrying for ``CONVEYOR_ENQUEUE_TIMEOUT`` seconds), the rows
        are removed and ``ServiceUnavailable`` is raised; a message it took before failing still
        runs (its worker writes the row again). If PostgreSQL stays unreachable once the
        messages are out, ``JobNotRecorded`` (its ``job_ids``) says the jobs run once it is back.
        Jobs that need an idempotency key go through :meth:`enqueue`.
        """
        # Resolved once: a malformed header is reported once, not per message.
        resolved = outgoing_traceparent(traceparent)
        options = DeliveryOptions(None, delay, priority, max_retries, min_backoff, max_backoff, resolved)
        options.check(self.settings.max_priority)
        if session is not None:
            self._check_outbox()
        job_kind = get_kind(kind)
        cleaned = []
        for index, payload in enumerate(payloads):
            try:
                clean = job_kind.validate(payload, self.settings)
                _check_json(job_kind, clean, self.settings)
            except ValueError as exc:
                raise ValueError(f"payload #{index}: {exc}") from None
            cleaned.append(clean)
        missing = self.artifacts.missing([a for clean in cleaned for a in job_kind.artifact_ids(clean)])
        if missing:
            raise ValueError(f"{job_kind.name} payload: no artifact {', '.join(missing)}")
        messages = self._messages(job_kind, cleaned, options)
        new_jobs = [self._new_job(job_kind, m, options) for m in messages]
        if session is not None:
            namespace = self.settings.namespace
            infos = self._outbox.write_many(session, new_jobs, messages, namespace=namespace)
        else:
            infos = self._sender.enqueue_many(messages, new_jobs, options.delay_ms())
        return [Job(self._jobs, info) for info in infos]

    def send_email(
        self,
        to: str | list[str],
        template: str,
        context: Mapping[str, Any] | None = None,
        *,
        cc: str | list[str] | None = None,
        bcc: str | list[str] | None = None,
        reply_to: str | list[str] | None = None,
        subject: str | None = None,
        attachments: list[str] | None = None,
        session: object | None = None,
        **options: Any,
    ) -> Job:
        """Send the email template ``template`` (``email/NAME/`` folder) rendered with ``context``.

        ``attachments`` are artifact ids (see :meth:`put_artifact`); ``options`` are the
        delivery options of :meth:`enqueue`, ``session`` writes the job in the application's
        transaction (as in :meth:`enqueue`).

        Raises:
            ValueError: a bad address, a line break in a header, too many recipients,
                an unknown template or attachment (nothing was sent).
        """
        payload: dict[str, Any] = {
            "to": to,
            "template": template,
            "context": {} if context is None else context,
        }
        extras = {"cc": cc, "bcc": bcc, "reply_to": reply_to, "subject": subject, "attachments": attachments}
        payload.update({k: v for k, v in extras.items() if v is not None})
        return self.enqueue_with_options("email", payload, DeliveryOptions(**options), session=session)

    def generate_report(
        self,
        report: str,
        params: Mapping[str, Any] | None = None,
        formats: list[str] | None = None,
        *,
        email_to: str | list[str] | None = None,
        session: object | None = None,
        **options: Any,
    ) -> Job:
        """Generate the report ``report`` (e.g. ``jobs_summary``) in ``formats`` (html, csv, pdf).

        The result lists the stored artifacts; with ``email_to`` a follow-up email job sends
        them as attachments. ``options`` are the delivery options of :meth:`enqueue`; ``session``
        writes the job in the application's transaction (as in :meth:`enqueue`).

        Raises:
            ValueError: an unknown report, bad params (e.g. ``since`` not a date), a bad address.
        """
        payload: dict[str, Any] = {
            "report": report,
            "params": {} if params is None else params,
            "formats": formats or ["html"],
        }
        if email_to:
            payload["email_to"] = email_to
        return self.enqueue_with_options("report", payload, DeliveryOptions(**options), session=session)

    def process_image(
        self,
        source: str,
        operations: list[dict[str, Any]] | None = None,
        format: str = "jpeg",
        quality: int = 85,
        *,
        variants: list[dict[str, Any]] | None = None,
        keep_metadata: bool = False,
        background: str = "#ffffff",
        session: object | None = None,
        **options: Any,
    ) -> Job:
        """Process the image artifact ``source``: ``operations`` in order, then encode as ``format``.

        ``variants`` (``[{"name": "small", "operations": [...], "format": "webp"}, ...]``) make
        several outputs from one decode. ``options`` are the delivery options of :meth:`enqueue`;
        ``session`` writes the job in the application's transaction (as in :meth:`enqueue`).

        Raises:
            ValueError: an unknown operation, a bad parameter, a missing source artifact.
        """
        payload: dict[str, Any] = {
            "source": source,
            "operations": operations or [],
            "format": format,
            "quality": quality,
            "keep_metadata": keep_metadata,
            "background": background,
        }
        if variants is not None:
            payload["variants"] = variants
        return self.enqueue_with_options("image", payload, DeliveryOptions(**options), session=session)

    def put_artifact(self, data: bytes, name: str, content_type: str | None = None) -> str:
        """Store a file for jobs to use (an attachment, a source image); returns its id."""
        return self.artifacts.put(data, name=name, content_type=content_type).id

    def get_artifact(self, artifact_id: str) -> bytes:
        """The bytes of an artifact. Raises ``ArtifactNotFound``."""
        return self.artifacts.read(artifact_id)[1]

    def cancel(self, job_id: str) -> str:
        """Cancel a job: ``cancelled`` when it was waiting (workers will skip it), ``requested``
        when it is running (a report or image job stops at its next step), else its final status.

        Raises:
            JobNotFound: no such job.
        """
        self._jobs.get(job_id)
        return self._jobs.cancel(job_id)

    def retry(self, job_id: str) -> bool:
        """Run a failed or cancelled job again: same id, attempts and history continue.

        Returns:
            ``False`` when the job is not failed or cancelled (nothing done).

        Raises:
            JobNotFound: no such job.
        """
        before = self._jobs.get(job_id)
        info = self._jobs.reopen(job_id)
        if info is None:
            return False
        kind = get_kind(info.kind)
        options: dict[str, Any] = {"max_retries": info.max_retries} if info.max_retries is not None else {}
        # The run again joins the trace of the caller's span, if any (the first run's may be long over).
        if (traceparent := current_traceparent()) is not None:
            options[TRACEPARENT_OPTION] = traceparent
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=info.queue,
            actor_name=kind.actor_name,
            args=(),
            kwargs=info.payload,
            options=options,
            message_id=info.id,
        )
        if self._signer is not None:
            message = self._signer.sign(message)
        try:
            self.broker.enqueue(message)
        except BROKER_ERRORS as exc:
            # Not sent: the job goes back to how it was, rather than waiting as `queued` forever.
            self._jobs.restore(before)
            raise broker_unavailable(self.settings, exc) from None
        return True

    def get(self, job_id: str) -> Job:
        """The job with this id.

        Raises:
            JobNotFound: no such job.
        """
        return Job(self._jobs, self._jobs.get(job_id))

    def get_many(self, job_ids: Iterable[str]) -> list[Job]:
        """The jobs with these ids, in one query; ids of no job are left out."""
        return [Job(self._jobs, info) for info in self._jobs.by_ids(job_ids)]

    def close(self) -> None:
        """Close connections to RabbitMQ and the database."""
        self._sender.close()
        if self._owns_broker:
            self.broker.close()
        if self._owns_db:
            self._db.dispose()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.settings!r})"

    def _check_outbox(self) -> None:
        """``session=`` needs what the relay needs: PostgreSQL and RabbitMQ."""
        if self.settings.is_embedded or self._db.dialect != "postgresql":
            raise ValueError(
                "session= needs PostgreSQL and RabbitMQ: the embedded setup (memory:// broker or "
                "SQLite) has no relay to publish committed jobs; enqueue without session="
            )

    def _message(
        self, kind: JobKind, payload: dict[str, Any], options: DeliveryOptions
    ) -> dramatiq.Message[Any]:
        return self._messages(kind, [payload], options)[0]

    def _messages(
        self, kind: JobKind, payloads: list[dict[str, Any]], options: DeliveryOptions
    ) -> list[dramatiq.Message[Any]]:
        """One message per payload, their options and ids made once for all of them."""
        message_options = options.message_options()
        if (traceparent := outgoing_traceparent(options.traceparent)) is not None:
            message_options[TRACEPARENT_OPTION] = traceparent
        queue_name = self.settings.queue_name(kind.queue)
        messages: list[dramatiq.Message[Any]] = [
            dramatiq.Message(
                queue_name=queue_name,
                actor_name=kind.actor_name,
                args=(),
                kwargs=payload,
                options=dict(message_options),  # each its own: middleware writes to a message's options
                message_id=message_id,
            )
            for payload, message_id in zip(payloads, new_job_ids(len(payloads)), strict=True)
        ]
        # Signed before anything else reads them: the rows' payloads are then the signed ones.
        if self._signer is not None:
            return [self._signer.sign(message) for message in messages]
        return messages

    def _new_job(
        self,
        kind: JobKind,
        message: dramatiq.Message[Any],
        options: DeliveryOptions,
        *,
        parent_id: str | None = None,
    ) -> NewJob:
        """The row of a job about to be enqueued. A delayed job's message waits in the store, written
        with the row, until a worker's dispatcher publishes it when due (the embedded broker keeps
        delays in memory itself)."""
        delay_ms = options.delay_ms()
        eta = datetime.now(UTC) + timedelta(milliseconds=delay_ms) if delay_ms else None
        held = HeldMessage.of(message, eta) if eta is not None and not self.settings.is_embedded else None
        return NewJob(
            id=message.message_id,
            kind=kind.name,
            queue=message.queue_name,
            payload=dict(message.kwargs),
            max_retries=options.max_retries if options.max_retries is not None else kind.max_retries,
            priority=options.priority,
            idempotency_key=options.idempotency_key,
            eta=eta,
            parent_id=parent_id,
            held=held,
        )


def _warn_if_payload_differs(info: JobInfo, job: NewJob) -> None:
    """An idempotency key reused with another payload returns the first job, as the key promises
    (the scheduler and report follow-ups rely on it), but the caller's new payload is dropped:
    said in the log (without the payloads, which may hold secrets)."""
    if json.loads(json.dumps(job.payload)) != info.payload:
        logger.warning(
            "idempotency key %r already names %s job %s in %s, with another payload: that job is "
            "returned and nothing is sent (the new payload is ignored)",
            job.idempotency_key,
            info.kind,
            info.id,
            info.queue,
        )


def _check_json(kind: JobKind, payload: dict[str, Any], settings: Settings) -> None:
    """What the store can hold (no NUL, no unpaired surrogate, finite numbers, bounded depth),
    within ``CONVEYOR_MAX_PAYLOAD_BYTES``: checked before anything is written or sent."""
    try:
        check_storable(payload, "payload")
        check_size(payload, settings.max_payload_bytes)
    except ValueError as exc:
        raise ValueError(f"{kind.name} {exc}") from None
