"""Lost-runs middleware: a message whose runs keep killing their worker is dead-lettered, not run forever.

A run is lost when its worker dies mid-job (the store marks its open attempt ``lost`` when the
job starts again). Past the job's retry budget of lost runs, the attempt just started ends as
``failed`` without running, and its message goes to the dead-letter queue.

Placed after ``Recording`` and ``TakeOver``, whichever started the attempt; the end is written by
``Recording`` when Dramatiq reports the skip.
"""

from __future__ import annotations

import dramatiq
from dramatiq.middleware import Middleware, SkipMessage

from jobs.middleware.state import attempt_of
from jobs.status import AttemptOutcome
from jobs.store import AttemptEnd


class LostRuns(Middleware):
    """Fails, before it runs, an attempt whose job has lost more runs than it may retry."""

    @property
    def actor_options(self) -> set[str]:
        # The budget: the message's ``max_retries``, else the actor's (read by ``Recording``).
        return {"max_retries"}

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        attempt = attempt_of(message)
        if attempt is None or attempt.started is None:
            return
        budget = attempt.seen.max_retries
        if budget is None:
            budget = attempt.kind.max_retries
        if attempt.started.lost_runs > budget:
            message.fail()
            attempt.end = AttemptEnd(AttemptOutcome.FAILED, error=gave_up(attempt.started.lost_runs))
            raise SkipMessage("too many lost attempts")


def gave_up(lost_runs: int) -> str:
    """The error of a job dead-lettered for its lost runs."""
    return f"WorkerLost: gave up after {lost_runs} runs that ended with their worker dying"
