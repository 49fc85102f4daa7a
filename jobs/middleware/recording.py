"""Recording middleware: the start and the end of every attempt of a job, in the store.

A worker thread waits for the commit of its job's start (the guard against running a job
twice), not for that of its end: the end is handed to the store detached, and the message is
acknowledged or rejected when that write lands (``jobs.consumer.ack_after``), so only after its
outcome is committed.

Placed before ``Retries``: Dramatiq runs ``after_*`` hooks in reverse order, so when this one
records the end of an attempt, ``Retries`` has already decided whether the message is retried
(its retry then waits on the :class:`~jobs.middleware.state.Attempt`) or dead-lettered.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import dramatiq
from dramatiq.common import q_name
from dramatiq.middleware import Middleware, SkipMessage

from jobs.consumer import ack_after, is_redelivered
from jobs.errors import StoreRefused
from jobs.fingerprint import fingerprint
from jobs.ids import is_uuid
from jobs.kinds import ACTOR_KINDS, JobKind
from jobs.middleware.state import Attempt, InFlightJobs, attach, attempt_of
from jobs.status import AttemptOutcome
from jobs.storable import check_int, check_size, check_storable, storable_text
from jobs.store import AttemptEnd, AttemptStore, SeenMessage, StartedAttempt, WorkerIdentity
from jobs.store.waiting import wait_for_store
from jobs.tracing import trace_id_of

logger = logging.getLogger("conveyor.lifecycle")

#: The message option that counts how many times a copy of a running job's message has waited.
RECHECKS_OPTION = "conveyor_rechecks"


class Recording(Middleware):
    """Records ``running`` / ``succeeded`` / ``retrying`` / ``failed`` and one row per attempt."""

    def __init__(
        self,
        attempts: AttemptStore,
        identity: WorkerIdentity,
        in_flight: InFlightJobs,
        *,
        kinds: Mapping[str, JobKind] = ACTOR_KINDS,
        stopping: threading.Event | None = None,
        max_payload_bytes: int | None = None,
    ) -> None:
        self.attempts = attempts
        #: The payload cap a foreign producer's message is held to (``CONVEYOR_MAX_PAYLOAD_BYTES``).
        self.max_payload_bytes = max_payload_bytes
        self.identity = identity
        self.in_flight = in_flight
        self.kinds = kinds
        self.stopping = stopping or threading.Event()

    @property
    def actor_options(self) -> set[str]:
        # Stored with the job, so that `jobs show` and the lost-runs guard know its budget.
        return {"max_retries"}

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        kind = self.kinds.get(message.actor_name)
        if kind is None:  # an actor of the application's own: not a Conveyor job
            return
        if not is_uuid(message.message_id):
            logger.error("rejecting message %r: its id is not a UUID", message.message_id)
            message.fail()
            raise SkipMessage("malformed message id")
        seen, refusal = inbound(message, kind, broker, self.max_payload_bytes)
        attempt = Attempt(seen, kind)
        attach(message, attempt)
        lost_before = self._claim(message, attempt) if refusal is None else 0
        if lost_before is None:  # running at once, or waiting for a live run elsewhere
            return
        try:
            started = wait_for_store(lambda: self.attempts.start(seen, self.identity), self.stopping)
        except StoreRefused as exc:
            # Never run a job whose start is not recorded (SPEC §6): dead-lettered, with the reason.
            logger.error("job %s %s: dead-lettered without running: %s", seen.job_id, kind.name, exc)
            message.fail()
            raise SkipMessage("the store refused the job's row") from None
        # None: finished, cancelled, or running elsewhere; ``TakeOver`` (next) tells which.
        if started is not None:
            if lost_before > started.lost_runs:  # a run lost before its start was written
                started = StartedAttempt(number=started.number, lost_runs=lost_before)
            self.in_flight.enter(attempt, started, self.attempts)
            # Debug, not info: a line per start costs a worker measurable CPU, and `jobs show` has it.
            logger.debug("job %s %s attempt %d: running", attempt.job_id, kind.name, started.number)
        if refusal is not None:
            self._refuse(message, attempt, refusal)

    def _claim(self, message: dramatiq.MessageProxy, attempt: Attempt) -> int | None:
        """Claim the job for this process (``jobs/store/claims.py``). None when that settles it:
        the job runs at once, its start unwritten, or waits for a live run elsewhere
        (``TakeOver``). Else its start is written first: returns how many of its runs were lost.

        Only a first delivery may run at once: a redelivered message may have crashed a worker
        (its start is written first, so that a run lost again is counted), and so may a job
        whose claim row a dead run left behind (recorded ``lost`` here).
        """
        claims = self.attempts.claims
        if claims is None:
            return 0
        job_id, seen = attempt.job_id, attempt.seen
        at_once = not is_redelivered(message) and RECHECKS_OPTION not in message.options
        began = datetime.now(UTC)  # as a written start's time: before its round trip
        claim = wait_for_store(lambda: claims.claim(job_id, at_once=at_once), self.stopping)
        if not claim.held:
            attempt.busy = True
            return None
        attempt.claimed = True
        if (dead := claim.dead_run) is not None:
            logger.warning(
                "job %s: a run on %s died before its start was written", job_id, dead.worker.worker_id
            )
            return wait_for_store(lambda: self.attempts.record_lost_run(seen, dead), self.stopping)
        if not claim.at_once or claim.attempts is None:
            return 0
        attempt.lazy, attempt.worker, attempt.started_at = True, self.identity, began
        self.in_flight.enter(attempt, StartedAttempt(number=claim.attempts + 1, lost_runs=0), self.attempts)
        return None

    def _refuse(self, message: dramatiq.MessageProxy, attempt: Attempt, refusal: str) -> None:
        """Fail, without running it, a job whose message the store cannot hold as it is: its row
        keeps the reason instead of the payload, and the message goes to the dead letters."""
        logger.error("job %s %s: refused without running: %s", attempt.job_id, attempt.kind.name, refusal)
        message.fail()
        if attempt.started is not None:  # written by ``after_skip_message``
            attempt.end = AttemptEnd(AttemptOutcome.FAILED, error=f"MessageRefused: {refusal}")
        raise SkipMessage("message refused")

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        attempt = attempt_of(message)
        if attempt is None:  # not a Conveyor job
            return
        if attempt.context is None:  # it never started (a middleware after this one failed)
            self._let_go(attempt)
            return
        ctx = attempt.context
        refused = _unstorable(ctx.result) if exception is None and not ctx.cancelled else None
        if refused is not None:  # the job ran, but its result cannot be stored: failed, with why
            message.fail()
            end = AttemptEnd(AttemptOutcome.FAILED, error=f"ResultRefused: {refused}")
        elif exception is None and ctx.cancelled:
            end = AttemptEnd(AttemptOutcome.CANCELLED, error="JobCancelled: cancelled while running")
        elif exception is None:
            end = AttemptEnd(AttemptOutcome.SUCCEEDED, result=ctx.result)
        else:
            end = AttemptEnd(
                AttemptOutcome.FAILED if message.failed else AttemptOutcome.RETRYING,
                # Text of the job's own (an exception may quote a NUL): made storable, never lost.
                error=storable_text(describe_error(exception)),
                traceback=storable_text("".join(traceback.format_exception(exception, limit=30))),
                eta=attempt.retry.due_at if attempt.retry is not None else None,
            )
        self._finish(message, attempt, end)

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        attempt = attempt_of(message)
        if attempt is None:
            return
        if attempt.context is not None and attempt.end is not None:
            self._finish(message, attempt, attempt.end)
        else:
            self._let_go(attempt)

    def _finish(self, message: dramatiq.MessageProxy, attempt: Attempt, end: AttemptEnd) -> None:
        ctx = attempt.context
        assert ctx is not None
        if end.outcome is AttemptOutcome.FAILED:  # dead-lettered: the row keeps its group
            end = dataclasses.replace(end, fingerprint=fingerprint(ctx.kind, end.error).key)
        with attempt.guard:  # ``Promote`` is not writing its start, and will not
            attempt.ending = True
        if attempt.lazy:
            assert attempt.worker is not None
            assert attempt.started_at is not None
            recorded = self.attempts.finish_run_detached(
                attempt.seen,
                attempt.worker,
                ctx.attempt,
                attempt.started_at,
                end,
                held=attempt.retry,
                stopping=self.stopping,
            )
        else:
            recorded = self.attempts.finish_detached(
                ctx.job_id, ctx.attempt, end, held=attempt.retry, stopping=self.stopping
            )
        # Tracked before ``InFlight`` lets go of the job: a copy of its message never finds it idle.
        self.in_flight.ending(ctx.job_id, recorded)
        attempt.outcome = end.outcome
        ack_after(message, recorded)
        if attempt.claimed:
            recorded.add_done_callback(lambda _: self._let_go(attempt))
        duration = time.monotonic() - attempt.began
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

    def _let_go(self, attempt: Attempt) -> None:
        """Release the job's claim, once: its end is stored, or it did not run here."""
        claims = self.attempts.claims
        if attempt.claimed and claims is not None:
            attempt.claimed = False
            claims.release(attempt.job_id)


def describe_error(exception: BaseException) -> str:
    """``Type: message`` — what ``jobs.error`` holds."""
    text = str(exception).strip()
    return f"{type(exception).__name__}: {text}" if text else type(exception).__name__


def seen_message(message: dramatiq.MessageProxy, kind: JobKind, broker: dramatiq.Broker) -> SeenMessage:
    """What the store is told of a job from its message: the message's options win over the actor's."""
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
        trace_id=trace_id_of(message),
    )


#: The payload key a refused job's row holds instead of its payload: the reason.
REFUSED_KEY = "conveyor_refused"


def inbound(
    message: dramatiq.MessageProxy, kind: JobKind, broker: dramatiq.Broker, max_payload_bytes: int | None
) -> tuple[SeenMessage, str | None]:
    """What the store is told of a job, and why it must not run (None: it may).

    A message of another producer may carry what the store cannot hold (a NUL character, an
    unpaired surrogate, ``max_retries`` ≥ 2³¹, a timestamp past year 9999) or a payload over
    ``CONVEYOR_MAX_PAYLOAD_BYTES``. Its row is then written with the reason in place of the
    payload (under :data:`REFUSED_KEY`), so that the job shows as failed with why.
    """
    created_at = datetime.now(UTC)
    try:
        max_retries = message.options.get("max_retries")
        if max_retries is None:
            max_retries = broker.get_actor(message.actor_name).options.get("max_retries", kind.max_retries)
        max_retries = check_int("max_retries option", max_retries)
        created_at = _timestamp(message.message_timestamp)
        check_storable(message.kwargs, "payload")
        check_size(message.kwargs, max_payload_bytes)
    except ValueError as exc:
        refusal = str(exc)
        seen = SeenMessage(
            job_id=message.message_id,
            kind=kind.name,
            queue=q_name(message.queue_name),
            payload={REFUSED_KEY: refusal},
            max_retries=None,
            created_at=created_at,
            trace_id=trace_id_of(message),
        )
        return seen, refusal
    return seen_message(message, kind, broker), None


def _timestamp(stamp: object) -> datetime:
    """A message's ``message_timestamp`` (milliseconds since 1970) as a time the store holds."""
    if isinstance(stamp, bool) or not isinstance(stamp, int | float):
        raise ValueError(f"message_timestamp must be a number of milliseconds, not {type(stamp).__name__}")
    try:
        return datetime.fromtimestamp(stamp / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"message_timestamp {stamp!r} is not a time the store can hold") from None


def _unstorable(result: object) -> str | None:
    """Why a job's result cannot be stored, or None."""
    try:
        check_storable(result, "result")
    except ValueError as exc:
        return str(exc)
    return None
