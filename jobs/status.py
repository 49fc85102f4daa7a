"""Job statuses (SPEC §3) and which moves between them are allowed."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """The life of a job: ``queued`` → ``running`` → ``succeeded``; ``running`` → ``retrying`` →
    ``running`` …; → ``failed``; ``queued``/``retrying`` → ``cancelled``."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
#: A message found in one of these states may (re)start: a redelivery after a crash finds ``running``.
#: Statuses in which a delivered message starts its job at once (a ``running`` job is taken
#: over only when its worker is gone: see ``Lifecycle``).
STARTABLE_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.RETRYING})


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
