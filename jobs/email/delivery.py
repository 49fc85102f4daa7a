"""Deliver one email job: render, build, rate-limit, send — and never send it twice."""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Callable
from typing import Any, Protocol

from jobs import metrics
from jobs.email.message import Attachment, Envelope, OutgoingMessage, build_message
from jobs.email.templates import EmailTemplates, check_subject
from jobs.email.transport import FileOutbox, SendResult, SmtpConfig, SmtpTransport
from jobs.errors import ArtifactNotFound, PermanentError, TransientError
from jobs.ratelimit import RateLimiter
from jobs.services import Services
from jobs.store.deliveries import Delivery, DeliveryState, DeliveryStore
from jobs.store.jobs import utcnow
from jobs.store.waiting import wait_for_store
from templates import search_path

logger = logging.getLogger("conveyor.email")

#: Bytes: the largest message (attachments included) Conveyor builds.
MAX_MESSAGE_BYTES = 25 * 1024 * 1024


class Transport(Protocol):
    def send(
        self, message: OutgoingMessage, sender: str, recipients: list[str], before_data: Callable[[], None]
    ) -> SendResult: ...

    def close(self) -> None: ...


class Mailer:
    """One per worker process: compiled templates, the SMTP connection pool, the rate limiter."""

    def __init__(self, services: Services) -> None:
        settings = services.settings
        self.services = services
        self.templates = EmailTemplates(search_path(settings))
        self.deliveries = DeliveryStore(services.db, batched=True)
        self.sender = settings.email_from
        self._outbox: FileOutbox | None = None
        self._smtp: SmtpTransport | None = None
        if settings.smtp_url.startswith("file:"):
            self._outbox = FileOutbox.from_url(settings.smtp_url)
        else:
            self._smtp = SmtpTransport(SmtpConfig.from_url(settings.smtp_url))
        self.limiter = (
            RateLimiter(services.redis, f"{settings.namespace}:ratelimit:email", settings.email_rate)
            if settings.email_rate
            else None
        )

    def deliver(self, job_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send the email of job ``job_id`` unless it was sent already; returns the job's result.

        Whether it was is decided by the claim written just before DATA (``DeliveryStore.claim``):
        a redelivered message finds the earlier run's ``sent`` record there, and sends nothing.
        """
        try:
            message = self._build(job_id, payload)
        except PermanentError:
            # A redelivery of a sent email whose template or attachment has gone since.
            earlier = self.deliveries.get(job_id)
            if earlier is None:
                raise
            return _earlier_result(earlier)
        if self.limiter is not None:
            metrics.rate_limit_waited(self.limiter.wait_for_slot())
        try:
            result = self._send(job_id, message)
        except Exception:
            metrics.email_delivery("failed")
            raise
        metrics.email_delivery("duplicate" if isinstance(result, Delivery) else "sent")
        if isinstance(result, Delivery):
            return _earlier_result(result)
        wait_for_store(
            lambda: self.deliveries.mark_sent(job_id, message.message_id, result.accepted, result.rejected)
        )
        return {"message_id": message.message_id, "accepted": result.accepted, "rejected": result.rejected}

    def _build(self, job_id: str, payload: dict[str, Any]) -> OutgoingMessage:
        envelope = Envelope(
            sender=self.sender,
            to=payload["to"],
            cc=payload.get("cc", []),
            bcc=payload.get("bcc", []),
            reply_to=payload.get("reply_to", []),
        )
        rendered = self.templates.render(payload["template"], payload.get("context", {}))
        if payload.get("subject"):
            check_subject(payload["subject"])
            rendered = type(rendered)(subject=payload["subject"], text=rendered.text, html=rendered.html)
        attachments = self._attachments(payload.get("attachments", []))
        try:
            message = build_message(job_id, envelope, rendered, attachments)
        except ValueError as exc:
            raise PermanentError(str(exc)) from None
        if len(message.data) > MAX_MESSAGE_BYTES:
            raise PermanentError(f"the email is larger than {MAX_MESSAGE_BYTES // 2**20} MiB")
        return message

    def _send(self, job_id: str, message: OutgoingMessage) -> SendResult | Delivery:
        """The server's answer, or the earlier delivery that the claim found (nothing sent)."""

        def claim() -> None:
            at = utcnow()  # the same for each try: a try whose answer was lost finds its own claim
            earlier = wait_for_store(lambda: self.deliveries.claim(job_id, message.message_id, at=at))
            if earlier is not None:
                raise _ClaimedBefore(earlier)

        try:
            if self._outbox is not None:
                return self._outbox.send(message, message.sender, message.recipients, claim, job_id=job_id)
            assert self._smtp is not None
            return self._smtp.send(message, message.sender, message.recipients, claim)
        except _ClaimedBefore as exc:
            return exc.delivery
        except smtplib.SMTPServerDisconnected as exc:
            if getattr(exc, "conveyor_after_data", False):
                # DATA went out and no reply came back: the server may have the message.
                raise PermanentError(_uncertain(message.message_id)) from None
            raise TransientError(f"SMTP connection lost: {exc}") from None
        except smtplib.SMTPDataError:
            # The server answered DATA with a refusal: nothing was delivered, a retry may send.
            self.deliveries.forget(job_id)
            raise

    def _attachments(self, artifact_ids: list[str]) -> list[Attachment]:
        attachments = []
        for artifact_id in artifact_ids:
            try:
                info, data = self.services.artifacts.read(artifact_id)
            except ArtifactNotFound:
                raise PermanentError(f"attachment {artifact_id} does not exist") from None
            attachments.append(Attachment(name=info.name, content_type=info.content_type, data=data))
        return attachments

    def close(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
        self.deliveries.close()


class _ClaimedBefore(Exception):
    """Raised between RCPT and DATA: an earlier run of the job claimed the delivery."""

    def __init__(self, delivery: Delivery) -> None:
        super().__init__(delivery.state)
        self.delivery = delivery


def _earlier_result(earlier: Delivery) -> dict[str, Any]:
    """The result an earlier run recorded; when it stopped before the server's answer, a failure."""
    if earlier.state is not DeliveryState.SENT:
        raise PermanentError(_uncertain(earlier.message_id))
    logger.info("job %s: email %s already sent, not sending again", earlier.job_id, earlier.message_id)
    return {"message_id": earlier.message_id, "accepted": earlier.accepted, "rejected": earlier.rejected}


def _uncertain(message_id: str) -> str:
    return (
        f"DeliveryUncertain: an earlier attempt handed message {message_id} to the SMTP server and "
        "stopped before its answer; not sent again, to never send twice"
    )


def classify_smtp_error(exc: Exception) -> Exception:
    """4xx replies, lost connections and timeouts are worth a retry; 5xx replies are final."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = {code for code, _ in exc.recipients.values()}
        detail = "; ".join(f"{r}: {c} {m.decode(errors='replace')}" for r, (c, m) in exc.recipients.items())
        kind = TransientError if all(400 <= c < 500 for c in codes) else PermanentError
        return kind(f"all recipients refused: {detail}")
    if isinstance(exc, smtplib.SMTPResponseException):
        text = (
            exc.smtp_error.decode(errors="replace")
            if isinstance(exc.smtp_error, bytes)
            else str(exc.smtp_error)
        )
        kind = TransientError if 400 <= exc.smtp_code < 500 else PermanentError
        return kind(f"SMTP {exc.smtp_code} {text}")
    return TransientError(f"SMTP {type(exc).__name__}: {exc}")
