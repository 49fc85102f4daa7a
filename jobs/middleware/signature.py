"""Signature middleware: a worker holding ``CONVEYOR_SIGNING_KEY`` runs only signed messages.

An unsigned message, or one whose signature does not verify (``jobs/signing.py``), never reaches
its actor, nor any middleware after this one: its job is failed with the reason, through the
usual start and fail transitions (``AttemptStore.refuse``), and the message is rejected to its
dead-letter queue. A message with no job row gets no row (a forger must not be able to fill the
store): it is only dead-lettered, with a log line. (``Client.enqueue`` publishes before it writes
the row, so a fresh message's row is waited for, ``ROW_GRACE``, before it counts as missing.) Nor
is a row touched when the message carries another payload than its job's (a forged copy reusing a
waiting job's id), or when the job is not waiting (running, finished): the message alone is
dead-lettered.

With ``CONVEYOR_ACCEPT_UNSIGNED=1`` (a migration from plain Dramatiq producers) an unsigned
message runs, counted and logged; a wrong signature is still refused.

Placed right after ``Heartbeat`` (which only counts messages), before every middleware that acts
on a message: nothing is written, held or run for a message before it is verified.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

import dramatiq
from dramatiq.middleware import Middleware, SkipMessage

from jobs.errors import JobNotFound, SignatureError
from jobs.ids import is_uuid
from jobs.kinds import ACTOR_KINDS, JobKind
from jobs.middleware.recording import describe_error, seen_message
from jobs.settings import Settings
from jobs.signing import MessageSigner
from jobs.store import AttemptStore, JobInfo, JobStore, WorkerIdentity
from jobs.store.waiting import wait_for_store

logger = logging.getLogger("conveyor.signature")

#: Seconds between two warnings about unsigned messages run under ``CONVEYOR_ACCEPT_UNSIGNED``.
WARN_EVERY = 60.0
#: Seconds after a refused message was published during which its missing job row may still be
#: on its way (the producer writes it once RabbitMQ confirmed the message, milliseconds later).
ROW_GRACE = 2.0
#: Seconds between two looks for that row (doubling up to the maximum).
ROW_POLL_MIN = 0.02
ROW_POLL_MAX = 0.25


class Signature(Middleware):
    """Verifies every message before anything else acts on it; refuses a bad one."""

    def __init__(
        self,
        signer: MessageSigner,
        attempts: AttemptStore,
        identity: WorkerIdentity,
        *,
        accept_unsigned: bool = False,
        kinds: Mapping[str, JobKind] = ACTOR_KINDS,
        stopping: threading.Event | None = None,
        row_grace: float = ROW_GRACE,
    ) -> None:
        self.signer = signer
        self.attempts = attempts
        self.jobs = JobStore(attempts.db)
        self.identity = identity
        self.accept_unsigned = accept_unsigned
        self.kinds = kinds
        self.stopping = stopping or threading.Event()
        self.row_grace = row_grace
        #: Messages refused, and unsigned messages run (``accept_unsigned``), by this process.
        self.refused = 0
        self.unsigned_run = 0
        self._lock = threading.Lock()
        self._warned_at: float | None = None

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        try:
            self.signer.verify(message)
            return
        except SignatureError as exc:
            if exc.unsigned and self.accept_unsigned:
                self._count_unsigned(message)
                return
            reason = str(exc)
        except Exception as exc:  # a message malformed enough to break the check: refused too
            reason = f"message signature invalid: {describe_error(exc)}"
        with self._lock:
            self.refused += 1
        try:
            self._refuse(broker, message, reason)
        except Exception:
            # Whatever the store says, the message does not run: it goes to the dead letters.
            logger.exception(
                "message %s refused (%s); its job could not be failed", _shown(message.message_id), reason
            )
        message.fail()
        raise SkipMessage(reason)

    def _refuse(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, reason: str) -> None:
        """Fail the job the message belongs to, when that is its waiting job; log what was done."""
        kind = self.kinds.get(message.actor_name)
        job_id = message.message_id
        outcome = "no job of Conveyor's: message dead-lettered"
        if kind is not None and is_uuid(job_id):
            outcome = self._fail_job(broker, message, kind, reason)
        logger.error(
            "message %s (%s on %s) refused: %s; %s",
            _shown(job_id),
            _shown(message.actor_name),
            _shown(message.queue_name),
            reason,
            outcome,
        )

    def _fail_job(
        self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, kind: JobKind, reason: str
    ) -> str:
        try:
            info = self._row_of(message)
        except JobNotFound:
            return "no job row: message dead-lettered"
        if info.kind != kind.name or info.payload != message.kwargs:
            return "its job's row holds another job: message dead-lettered, job left as it is"
        seen = seen_message(message, kind, broker)
        error = describe_error(SignatureError(reason))
        failed = wait_for_store(lambda: self.attempts.refuse(seen, self.identity, error), self.stopping)
        if not failed:
            return f"job is {info.status}, not waiting: message dead-lettered, job left as it is"
        return "job failed, message dead-lettered"

    def _row_of(self, message: dramatiq.MessageProxy) -> JobInfo:
        """The message's job row, waited for while the message is fresh: a producer publishes
        first and writes the row after RabbitMQ's confirm. The wait ends ``row_grace`` seconds
        after the message's timestamp, and never later than ``row_grace`` from now (a sender's
        timestamp in the future holds no thread longer).

        Raises:
            JobNotFound: still no row once the grace is over.
        """
        # The consumer dead-letters a message whose timestamp is not a number (``jobs.wire``).
        published = min(message.message_timestamp / 1000, time.time())
        give_up = published + self.row_grace
        pause = ROW_POLL_MIN
        while True:
            try:
                return wait_for_store(lambda: self.jobs.get(message.message_id), self.stopping)
            except JobNotFound:
                left = give_up - time.time()
                if self.stopping.is_set() or left <= 0:
                    raise
            self.stopping.wait(min(pause, left))
            pause = min(pause * 2, ROW_POLL_MAX)

    def _count_unsigned(self, message: dramatiq.MessageProxy) -> None:
        now = time.monotonic()
        with self._lock:
            self.unsigned_run += 1
            count = self.unsigned_run
            warn = self._warned_at is None or now - self._warned_at >= WARN_EVERY
            if warn:
                self._warned_at = now
        if warn:
            logger.warning(
                "message %s (%s) is not signed and runs: CONVEYOR_ACCEPT_UNSIGNED is on "
                "(%d unsigned message(s) run by this process so far)",
                _shown(message.message_id),
                _shown(message.actor_name),
                count,
            )


def _shown(value: object) -> str:
    """A sender's value in a log line: as it is when short and printable, else quoted and cut
    (no line breaks or escape codes forged into the log)."""
    if isinstance(value, str) and value.isprintable() and len(value) <= 200:
        return value
    return repr(value)[:200]


def signature_middleware(
    settings: Settings,
    attempts: AttemptStore,
    identity: WorkerIdentity,
    *,
    stopping: threading.Event | None = None,
) -> Signature | None:
    """The middleware for ``settings``; None without ``CONVEYOR_SIGNING_KEY`` (nothing is checked)."""
    signer = MessageSigner.from_settings(settings)
    if signer is None:
        return None
    return Signature(signer, attempts, identity, accept_unsigned=settings.accept_unsigned, stopping=stopping)
