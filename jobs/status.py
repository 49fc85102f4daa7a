"""Job statuses (SPEC §3) and the one table of moves allowed between them.

Every store statement that moves a job's status takes its guard (``WHERE status IN …``) and
its target from :data:`TRANSITIONS`, so the rules live here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class JobStatus(StrEnum):
    """The life of a job: ``queued`` → ``running`` → ``succeeded``; ``running`` → ``retrying`` →
    ``running`` …; → ``failed``; ``queued``/``retrying`` → ``cancelled``."""

    #: Waiting for a worker; a delayed job is ``queued`` with its ``eta`` ahead.
    QUEUED = "queued"
    #: A worker is running it (its latest attempt has no end yet).
    RUNNING = "running"
    #: An attempt failed, was interrupted or was lost; the job waits for its next attempt (after a
    #: failure, its ``eta`` says when).
    RETRYING = "retrying"
    #: Done; ``result`` holds what the job returned.
    SUCCEEDED = "succeeded"
    #: Failed for good: retries exhausted, a permanent error, or its dead letter purged. ``error``
    #: holds the last error.
    FAILED = "failed"
    #: Cancelled by an admin while it waited to run, or stopped at a cooperative check while it ran.
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class AttemptOutcome(StrEnum):
    """How one run of a job ended."""

    SUCCEEDED = "succeeded"
    #: Failed and will be retried.
    RETRYING = "retrying"
    #: Failed for good: retries exhausted or a permanent error.
    FAILED = "failed"
    #: The worker died mid-run; RabbitMQ redelivered the message.
    LOST = "lost"
    #: Stopped at a cooperative check after an admin cancelled the running job.
    CANCELLED = "cancelled"
    #: Its worker was stopped (shutdown timeout, a second SIGTERM, RabbitMQ lost) before it ended;
    #: the message went back to RabbitMQ. Unlike ``lost``, it does not count towards giving up.
    INTERRUPTED = "interrupted"


class Event(StrEnum):
    """What happens to a job; :data:`TRANSITIONS` says from which statuses, and to which."""

    #: A delivered message starts its job (a job seen for the first time gets a ``running`` row).
    START = "start"
    #: A ``running`` job whose worker is gone starts again (only while that attempt is its latest).
    TAKE_OVER = "take_over"
    #: An attempt ended; one event per :class:`AttemptOutcome` a worker records.
    SUCCEED = "succeed"
    RETRY = "retry"
    FAIL = "fail"
    STOP = "stop"
    INTERRUPT = "interrupt"
    #: The reconciler found a ``running`` job's worker gone and sends its message again.
    LOSE = "lose"
    #: An admin cancels a job waiting to run.
    CANCEL = "cancel"
    #: An admin asks a running job to stop (it does at its next cooperative check).
    REQUEST_CANCEL = "request_cancel"
    #: An admin retries a failed or cancelled job (id, attempts and history kept).
    REOPEN = "reopen"
    #: An admin requeues a dead-lettered message: its job (failed, or dead-lettered before it
    #: ran) waits to run again.
    REQUEUE = "requeue"
    #: An admin purges a dead-lettered message: its job is failed for good.
    PURGE = "purge"


_QUEUED, _RUNNING, _RETRYING = JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RETRYING
#: The ends a worker records, by outcome (``lost`` is recorded by whoever notices the loss).
END_EVENTS: Mapping[AttemptOutcome, Event] = {
    AttemptOutcome.SUCCEEDED: Event.SUCCEED,
    AttemptOutcome.RETRYING: Event.RETRY,
    AttemptOutcome.FAILED: Event.FAIL,
    AttemptOutcome.CANCELLED: Event.STOP,
    AttemptOutcome.INTERRUPTED: Event.INTERRUPT,
}
_END_TARGETS = {
    Event.SUCCEED: JobStatus.SUCCEEDED,
    Event.RETRY: _RETRYING,
    Event.FAIL: JobStatus.FAILED,
    Event.STOP: JobStatus.CANCELLED,
    Event.INTERRUPT: _RETRYING,
}

#: (from status, event) → to status; a pair not listed is not allowed. An end also moves a
#: ``retrying`` job: its attempt was recorded interrupted, or lost by the reconciler, and then
#: ended after all (the attempt-number guard keeps a stale attempt from moving a newer one).
TRANSITIONS: Mapping[tuple[JobStatus, Event], JobStatus] = {
    (_QUEUED, Event.START): _RUNNING,
    (_RETRYING, Event.START): _RUNNING,
    (_RUNNING, Event.TAKE_OVER): _RUNNING,
    **{(source, event): to for event, to in _END_TARGETS.items() for source in (_RUNNING, _RETRYING)},
    (_RUNNING, Event.LOSE): _RETRYING,
    (_QUEUED, Event.CANCEL): JobStatus.CANCELLED,
    (_RETRYING, Event.CANCEL): JobStatus.CANCELLED,
    (_RUNNING, Event.REQUEST_CANCEL): _RUNNING,
    (JobStatus.FAILED, Event.REOPEN): _QUEUED,
    (JobStatus.CANCELLED, Event.REOPEN): _QUEUED,
    # A dead message is its job's only copy: the job is failed, or it never ran.
    **{(source, Event.REQUEUE): _QUEUED for source in (JobStatus.FAILED, _QUEUED, _RETRYING)},
    **{(source, Event.PURGE): JobStatus.FAILED for source in (JobStatus.FAILED, _QUEUED, _RETRYING)},
}


def sources(event: Event) -> frozenset[JobStatus]:
    """The statuses from which ``event`` may move a job."""
    return frozenset(source for source, on in TRANSITIONS if on is event)


def target(event: Event) -> JobStatus:
    """The status ``event`` moves a job to (each event has exactly one)."""
    (status,) = {to for (_, on), to in TRANSITIONS.items() if on is event}
    return status


def allowed(status: JobStatus, event: Event) -> JobStatus | None:
    """Where ``event`` takes a job in ``status``, or None when it may not happen there."""
    return TRANSITIONS.get((status, event))


#: Statuses in which a delivered message starts its job at once (a ``running`` job is taken
#: over only when its worker is gone: see ``Lifecycle``).
STARTABLE_STATUSES = sources(Event.START)
