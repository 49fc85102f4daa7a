"""Promote middleware: a job that runs longer than a moment gets its ``running`` state written.

A claimed job (``jobs/store/claims.py``) starts without a write: if it ends within
``CONVEYOR_RUNNING_AFTER`` seconds, its start and end are written together. One that runs
longer has its start written by this middleware's thread, as any start is (the job row
``running``, its attempt row open), so that a job that has run for 1 s shows as ``running``
(SPEC §6) and its attempt is on record should its worker die.
"""

from __future__ import annotations

import logging
import threading

import dramatiq
from dramatiq.middleware import Middleware

from jobs.middleware.state import Attempt, InFlightJobs
from jobs.store import AttemptStore

logger = logging.getLogger("conveyor.lifecycle")


class Promote(Middleware):
    """Writes the start of each lazily started attempt that has run for ``after`` seconds."""

    def __init__(self, attempts: AttemptStore, in_flight: InFlightJobs, after: float) -> None:
        self.attempts = attempts
        self.in_flight = in_flight
        self.after = after
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self.attempts.claims is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="conveyor-promote", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()

    def _run(self) -> None:
        # Looks twice per window: a start is written between ``after`` and 1.5 × ``after``.
        while not self._stop.wait(self.after / 2):
            for attempt in self.in_flight.lazy_since(self.after):
                try:
                    self.promote(attempt)
                except Exception as exc:  # the next turn tries again (PostgreSQL unreachable)
                    logger.warning("job %s: its running state is not written yet: %s", attempt.job_id, exc)

    def promote(self, attempt: Attempt) -> None:
        """Write the attempt's start, unless its end is being handed over already."""
        with attempt.guard:
            if not attempt.lazy or attempt.ending or attempt.worker is None or attempt.started is None:
                return
            assert attempt.started_at is not None
            started = self.attempts.promote(attempt.seen, attempt.worker, attempt.started_at)
            if started is None or started.number != attempt.started.number:
                # The job left waiting as it began (an admin cancelled it): its end records the
                # run all the same (``AttemptStore.finish_run``).
                logger.warning(
                    "job %s: moved while it started; its run is recorded at its end", attempt.job_id
                )
                attempt.ending = True  # nothing more to write before its end; it stays lazy
                return
            attempt.lazy = False
