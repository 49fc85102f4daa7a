"""Lifecycle middleware: every transition and every attempt of a job, recorded in the store.

Its ``after_*`` hooks run after those of Dramatiq's ``Retries`` middleware (it is
placed before it), so that when it records the end of an attempt it knows whether
the message will be retried or dead-lettered. Dramatiq acks or nacks the message
only after this middleware's hooks return, so a message is acknowledged only after
its outcome is committed.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import dramatiq
from dramatiq.common import q_name
from dramatiq.middleware import Middleware, SkipMessage

from jobs.context import JobContext, current_job, set_current_job
from jobs.ids import is_uuid
from jobs.kinds import ACTOR_KINDS, JobKind
from jobs.status import AttemptOutcome
from jobs.store import AttemptEnd, AttemptStore, SeenMessage, WorkerIdentity
from jobs.store.waiting import wait_for_store

logger = logging.getLogger("conveyor.lifecycle")

T = TypeVar("T")


class Lifecycle(Middleware):
    """Records ``running`` / ``succeeded`` / ``retrying`` / ``failed`` and one row per attempt."""

    def __init__(
        self,
        attempts: AttemptStore,
        identity: WorkerIdentity,
        kinds: Mapping[str, JobKind] = ACTOR_KINDS,
        stopping: threading.Event | None = None,
    ) -> None:
        self.attempts = attempts
        self.identity = identity
        self.kinds = kinds
        self.stopping = stopping or threading.Event()
        self._local = threading.local()

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        kind = self.kinds.get(message.actor_name)
        if kind is None:  # an actor of the application's own: not a Conveyor job
            return
        if not is_uuid(message.message_id):
            logger.error("rejecting message %r: its id is not a UUID", message.message_id)
            message.fail()
            raise SkipMessage("malformed message id")
        seen = _seen_message(message, kind, broker)
        started = self._write(lambda: self.attempts.start(seen, self.identity))
        if started is None:
            logger.info("job %s %s: already finished or cancelled, skipping", seen.job_id, kind.name)
            raise SkipMessage("job already finished or cancelled")
        self._local.started = time.monotonic()
        self._local.eta = None
        job_id = seen.job_id
        set_current_job(
            JobContext(
                job_id=job_id,
                kind=kind.name,
                attempt=started.number,
                cancel_check=lambda: self.attempts.cancel_requested(job_id),
            )
        )
        budget = seen.max_retries if seen.max_retries is not None else kind.max_retries
        if started.lost_runs > budget:
            # A message whose runs keep killing their worker is dead-lettered, not run forever.
            message.fail()
            self._finish(message, AttemptEnd(AttemptOutcome.FAILED, error=_gave_up(started.lost_runs)))
            raise SkipMessage("too many lost attempts")
        logger.info("job %s %s attempt %d: running", job_id, kind.name, started.number)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        ctx = current_job()
        if ctx is None or ctx.job_id != message.message_id:
            return
        if exception is None and ctx.cancelled:
            end = AttemptEnd(AttemptOutcome.CANCELLED, error="JobCancelled: cancelled while running")
        elif exception is None:
            end = AttemptEnd(AttemptOutcome.SUCCEEDED, result=ctx.result)
        else:
            outcome = AttemptOutcome.FAILED if message.failed else AttemptOutcome.RETRYING
            end = AttemptEnd(
                outcome,
                error=describe_error(exception),
                traceback="".join(traceback.format_exception(exception, limit=30)),
                eta=getattr(self._local, "eta", None),
            )
        self._finish(message, end)

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        set_current_job(None)

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int) -> None:
        # Retries re-enqueues the failed message with a delay: remember when it is due.
        ctx = current_job()
        if ctx is not None and ctx.job_id == message.message_id and delay:
            self._local.eta = datetime.fromtimestamp(message.options["eta"] / 1000, UTC)

    def _finish(self, message: dramatiq.MessageProxy, end: AttemptEnd) -> None:
        ctx = current_job()
        assert ctx is not None
        set_current_job(None)
        self._write(lambda: self.attempts.finish(ctx.job_id, ctx.attempt, end))
        duration = time.monotonic() - getattr(self._local, "started", time.monotonic())
        log = logger.info if end.outcome is AttemptOutcome.SUCCEEDED else logger.warning
        suffix = f": {end.error}" if end.error else ""
        log(
            "job %s %s attempt %d: %s after %.1f ms%s",
            ctx.job_id,
            ctx.kind,
            ctx.attempt,
            end.outcome.value,
            duration * 1000,
            suffix,
        )

    def _write(self, operation: Callable[[], T]) -> T:
        return wait_for_store(operation, self.stopping)


def describe_error(exception: BaseException) -> str:
    """``Type: message`` — what ``jobs.error`` holds."""
    text = str(exception).strip()
    return f"{type(exception).__name__}: {text}" if text else type(exception).__name__


def _gave_up(lost_runs: int) -> str:
    return f"WorkerLost: gave up after {lost_runs} runs that ended with their worker dying"


def _seen_message(message: dramatiq.MessageProxy, kind: JobKind, broker: dramatiq.Broker) -> SeenMessage:
    max_retries = message.options.get("max_retries")
    if max_retries is None:
        max_retries = broker.get_actor(message.actor_name).options.get("max_retries", kind.max_retries)
    return SeenMessage(
        job_id=message.message_id,
        kind=kind.name,
        queue=q_name(message.queue_name),
        payload=dict(message.kwargs),
        max_retries=max_retries,
        created_at=datetime.fromtimestamp(message.message_timestamp / 1000, UTC),
    )
