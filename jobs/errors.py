"""Conveyor's own exceptions. Driver errors (pika, psycopg, redis) are translated into
these at the boundary, so callers and the CLI never see a driver's traceback."""

from __future__ import annotations

from typing import Any


class ConveyorError(Exception):
    """Base class of every error Conveyor raises on purpose."""

    #: Exit code of the CLI when this error ends a command.
    exit_code = 1


class SettingsError(ConveyorError, ValueError):
    """A ``CONVEYOR_*`` variable or CLI flag is unknown or malformed."""

    exit_code = 2


class ServiceUnavailable(ConveyorError):
    """RabbitMQ, PostgreSQL or Redis cannot be reached.

    The message names the service and its URL with the password masked.
    """

    exit_code = 3

    def __init__(self, service: str, masked_url: str, reason: str) -> None:
        self.service = service
        self.masked_url = masked_url
        self.reason = reason
        super().__init__(f"{service} is unreachable at {masked_url}: {reason}")


class JobNotRecorded(ServiceUnavailable):
    """PostgreSQL stayed unreachable after RabbitMQ took the job's message: the job is not lost,
    it runs once PostgreSQL is back (its worker writes the row), so it must not be enqueued again."""

    def __init__(self, job_id: str, cause: ServiceUnavailable) -> None:
        self.job_id = job_id
        super().__init__(
            cause.service,
            cause.masked_url,
            f"{cause.reason} (job {job_id} was sent and runs once it is back: do not enqueue it again)",
        )


class JobNotFound(ConveyorError, LookupError):
    """No job has this id."""


class PermanentError(Exception):
    """Raised by a job to fail at once: no retry, the message goes to the dead-letter queue.

    Bad input (an unknown template, an undecodable image) is permanent; a timeout is not.
    """


class TransientError(Exception):
    """Raised by a job for a failure worth retrying with backoff."""


class JobFailed(ConveyorError):
    """``Job.wait`` found the job ``failed`` or ``cancelled``; ``error`` is the job's last error."""

    def __init__(self, job_id: str, status: str, error: str | None) -> None:
        self.job_id = job_id
        self.status = status
        self.error = error
        super().__init__(f"job {job_id} {status}: {error or 'no error recorded'}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.job_id, self.status, self.error))


class ArtifactNotFound(ConveyorError, LookupError):
    """No artifact has this id."""
