"""Every exception Conveyor raises on purpose. Driver errors (pika, psycopg, redis) are translated
into these at the boundary, so callers and the CLI never see a driver's traceback.

The CLI maps them to its exit codes (``console/exit_codes.py``); nothing here knows about exit codes.
"""

from __future__ import annotations

from typing import Any


class ConveyorError(Exception):
    """Base class of every error Conveyor raises on purpose."""


class SettingsError(ConveyorError, ValueError):
    """A ``CONVEYOR_*`` variable or CLI flag is unknown or malformed."""


class ServiceUnavailable(ConveyorError):
    """RabbitMQ, PostgreSQL or Redis cannot be reached.

    The message names the service and its URL with the password masked.
    """

    #: The message, from ``service``, ``masked_url`` and ``reason``.
    template = "{service} is unreachable at {masked_url}: {reason}"

    def __init__(self, service: str, masked_url: str, reason: str) -> None:
        self.service = service
        self.masked_url = masked_url
        self.reason = reason
        super().__init__(self.template.format(service=service, masked_url=masked_url, reason=reason))


class StoreConflict(ServiceUnavailable):
    """PostgreSQL rolled back a transaction that conflicted with another (a deadlock, or a
    serialization failure: SQLSTATE class 40). Nothing of it was written, and it can be tried
    again: a :class:`ServiceUnavailable`, so that every caller that waits out an outage and tries
    again (the producer, the workers' writers) does the same here, and the CLI exits with 3."""

    template = (
        "{service} at {masked_url} rolled back a transaction that conflicted with another: "
        "{reason}; it can be tried again"
    )


class RegistryUnavailable(ConveyorError):
    """Redis failed or could not be reached while a worker read or wrote the worker registry
    (``jobs/redis_lite.py``); the registry is an aid, so callers log it and go on."""


class JobNotRecorded(ServiceUnavailable):
    """PostgreSQL stayed unreachable after RabbitMQ took the job's message: the job is not lost,
    it runs once PostgreSQL is back (its worker writes the row), so it must not be enqueued again.

    ``job_ids``: every job of an ``enqueue_many`` batch in that case (``job_id`` is the first)."""

    def __init__(self, job_id: str, cause: ServiceUnavailable, *, job_ids: list[str] | None = None) -> None:
        self.job_id = job_id
        self.job_ids = job_ids or [job_id]
        if len(self.job_ids) == 1:
            what = f"job {job_id} was sent and runs once it is back: do not enqueue it again"
        else:
            what = (
                f"its {len(self.job_ids)} jobs, {job_id} first, were sent and run once it is back: "
                "do not enqueue them again"
            )
        super().__init__(cause.service, cause.masked_url, f"{cause.reason} ({what})")


class SchemaMissing(ConveyorError):
    """The database answers but has no Conveyor tables yet (or an older schema)."""

    def __init__(self, masked_url: str, *, outdated: bool = False) -> None:
        state = "has an older schema than this Conveyor" if outdated else "has no schema"
        super().__init__(f"the job store at {masked_url} {state}: run `conveyor db upgrade`")


class StoreRefused(ConveyorError, ValueError):
    """The job store refused a value (PostgreSQL's data exceptions: a NUL character, an integer
    out of range…). Producers check payloads first (``jobs.storable``); a worker that meets one
    in a foreign message dead-letters the message instead of running it untracked."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the job store refused a value: {reason}")


class JobNotFound(ConveyorError, LookupError):
    """No job has this id."""


class ArtifactNotFound(ConveyorError, LookupError):
    """No artifact has this id."""


class DeadLetterNotFound(ConveyorError, LookupError):
    """An id given to requeue or purge matches no message of the dead-letter queues."""


class UnknownQueue(ConveyorError, LookupError):
    """A queue name that no job kind of this deployment uses."""


class JobFailed(ConveyorError):
    """``Job.wait`` found the job ``failed`` or ``cancelled``; ``error`` is the job's last error."""

    def __init__(self, job_id: str, status: str, error: str | None) -> None:
        self.job_id = job_id
        self.status = status
        self.error = error
        super().__init__(f"job {job_id} {status}: {error or 'no error recorded'}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.job_id, self.status, self.error))


class DecryptionError(ConveyorError):
    """A value stored encrypted does not open: altered, cut short, or moved from another row or
    field (its associated data binds it to where it was written)."""


class UnknownKey(DecryptionError):
    """A stored value names a key id that ``CONVEYOR_ENCRYPTION_KEYS`` does not hold."""

    def __init__(self, key_id: str, message: str) -> None:
        self.key_id = key_id
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key_id, str(self)))


class BenchError(ConveyorError):
    """``conveyor bench`` could not complete (no worker, or jobs failed)."""


class SignatureError(ConveyorError):
    """A message's signature is missing (``unsigned``), malformed, made with a key the worker does
    not accept, or does not match the message: the worker does not run it."""

    def __init__(self, reason: str, *, unsigned: bool = False) -> None:
        self.reason = reason
        self.unsigned = unsigned
        super().__init__(reason)


class JobCancelled(Exception):
    """Raised at a stop point of a running job that an admin cancelled."""


class PermanentError(Exception):
    """Raised by a job to fail at once: no retry, the message goes to the dead-letter queue.

    Bad input (an unknown template, an undecodable image) is permanent; a timeout is not.
    """


class TransientError(Exception):
    """Raised by a job for a failure worth retrying with backoff."""
