"""Take-over middleware: a copy of a running job's message waits, unless that job's worker is gone.

A job's message can come twice while it runs: RabbitMQ redelivers a message whose channel
closed mid-job (a broker restart), or a producer that lost a confirm published it again.
Running it beside the live run would run it twice, so the copy waits in PostgreSQL and is
looked at again later; only a dead worker's job is started again (taken over).

Placed right after ``Recording``: it looks only at a message whose start the store refused.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import dramatiq
from dramatiq.middleware import Middleware, SkipMessage

from jobs import metrics
from jobs.middleware.recording import RECHECKS_OPTION
from jobs.middleware.state import Attempt, InFlightJobs, attempt_of
from jobs.store import AttemptStore, StartedAttempt, WorkerIdentity
from jobs.store.delayed import DelayedStore, HeldMessage
from jobs.store.waiting import wait_for_store

logger = logging.getLogger("conveyor.lifecycle")

T = TypeVar("T")


class TakeOver(Middleware):
    """Starts a ``running`` job again if its worker is gone; skips the message otherwise."""

    def __init__(
        self,
        attempts: AttemptStore,
        delayed: DelayedStore,
        identity: WorkerIdentity,
        in_flight: InFlightJobs,
        *,
        alive: Callable[[str], bool | None] = lambda worker_id: None,
        recheck_after: float = 5.0,
        stopping: threading.Event | None = None,
    ) -> None:
        self.attempts = attempts
        self.delayed = delayed
        self.identity = identity
        self.in_flight = in_flight
        #: Whether a worker process (by id) is alive, None when unknown (the registry is down).
        self.alive = alive
        #: Seconds before a message of a job still running elsewhere is looked at again.
        self.recheck_after = recheck_after
        self.stopping = stopping or threading.Event()

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        attempt = attempt_of(message)
        if attempt is None or attempt.started is not None:  # not a Conveyor job, or started already
            return
        if attempt.busy:  # another live run holds the job's claim (``jobs/store/claims.py``)
            running = self._write(lambda: self.attempts.running_attempt(attempt.job_id))
            where = "elsewhere" if running is None else f"on {running.worker}"
            number = "" if running is None else f" {running.number}"
            self._wait(message, attempt.job_id, f"attempt{number} still runs {where}")
        started = self._take_over(attempt, message)
        if started is None:
            logger.info(
                "job %s %s: already finished or cancelled, skipping", attempt.job_id, attempt.kind.name
            )
            metrics.duplicate_skipped(attempt.seen.queue, attempt.kind.name)
            raise SkipMessage("job already finished or cancelled")
        self.in_flight.enter(attempt, started, self.attempts)
        logger.debug("job %s %s attempt %d: running", attempt.job_id, attempt.kind.name, started.number)

    def _take_over(self, attempt: Attempt, message: dramatiq.MessageProxy) -> StartedAttempt | None:
        """The take-over's start; None when the job is not running (finished or cancelled)."""
        job_id = attempt.job_id
        running = self._write(lambda: self.attempts.running_attempt(job_id))
        if running is None:
            return None
        if running.worker is not None and self._runs_elsewhere(job_id, running.worker):
            self._wait(message, job_id, f"attempt {running.number} still runs on {running.worker}")
        return self._write(lambda: self.attempts.start(attempt.seen, self.identity, take_over=running.number))

    def _wait(self, message: dramatiq.MessageProxy, job_id: str, why: str) -> None:
        """Hold this copy of a running job's message in PostgreSQL, to be looked at again later."""
        # 1 s, 2 s, 4 s … up to ``recheck_after``: a worker that just died is noticed soon
        # (its supervisor drops its registry entry), a long job is not polled often.
        rechecks = int(message.options.get(RECHECKS_OPTION, 0))
        wait = min(2.0**rechecks, self.recheck_after)
        message.options[RECHECKS_OPTION] = rechecks + 1
        due = datetime.now(UTC) + timedelta(seconds=wait)
        self._write(lambda: self.delayed.hold(HeldMessage.of(message, due)))
        logger.info("job %s: %s; this copy of its message waits %.0f s", job_id, why, wait)
        raise SkipMessage("job running on a live worker")

    def _runs_elsewhere(self, job_id: str, worker_id: str) -> bool:
        if worker_id == self.identity.worker_id:  # this very process: is it running it, or ending it?
            return self.in_flight.runs(job_id)
        # Unknown (the registry is down) counts as gone: a job never stays stuck on a dead worker.
        return self.alive(worker_id) is True

    def _write(self, operation: Callable[[], T]) -> T:
        return wait_for_store(operation, self.stopping)
