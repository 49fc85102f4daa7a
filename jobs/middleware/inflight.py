"""In-flight middleware: which job each worker thread runs, so that a forced stop can record them.

A worker thread holds its job in :class:`~jobs.middleware.state.InFlightJobs` from its start
to the hand-over of its end. Placed before ``Recording``, its ``after_*`` hooks run after the
recorder's (Dramatiq runs them in reverse order): a job leaves the registry only once its end
is tracked as being written, so a copy of its message never finds it idle in between, and a
skipped message leaves no entry behind.
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from jobs.middleware.state import Attempt, InFlightJobs
from jobs.status import AttemptOutcome
from jobs.store import AttemptEnd, AttemptStore

logger = logging.getLogger("conveyor.lifecycle")


class InFlight(Middleware):
    """Lets go of a thread's job when Dramatiq is done with its message; interrupts them at a forced stop."""

    def __init__(self, attempts: AttemptStore, jobs: InFlightJobs) -> None:
        self.attempts = attempts
        self.jobs = jobs

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self.jobs.leave()

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        self.jobs.leave()

    def interrupt(self, reason: str) -> int:
        """Record the jobs still running as ``interrupted``: their worker stops without waiting.

        One try each, no waiting out an outage (the process is about to exit); an attempt
        left open is marked ``lost`` when its message is redelivered. Returns how many were recorded.
        """
        attempts = [a for a in self.jobs.take_running() if a.context is not None]
        running = [a.context for a in attempts if a.context is not None]
        recorded = 0
        for attempt in attempts:
            try:
                self._interrupted(
                    attempt, AttemptEnd(AttemptOutcome.INTERRUPTED, error=f"WorkerStopped: {reason}")
                )
                recorded += 1
            except Exception as exc:  # best effort on the way out: never block the exit
                logger.warning("job %s: could not record the interruption: %s", attempt.job_id, exc)
        for ctx in running:
            logger.warning(
                "job %s %s attempt %d: interrupted (%s)", ctx.job_id, ctx.kind, ctx.attempt, reason
            )
        return recorded

    def _interrupted(self, attempt: Attempt, end: AttemptEnd) -> None:
        ctx = attempt.context
        assert ctx is not None
        with attempt.guard:
            attempt.ending = True
        if attempt.lazy and attempt.worker is not None and attempt.started_at is not None:
            self.attempts.finish_run(attempt.seen, attempt.worker, ctx.attempt, attempt.started_at, end)
        else:
            self.attempts.finish(ctx.job_id, ctx.attempt, end)
