"""What Conveyor's job middleware share: the attempt a message runs, and what this process runs.

Each middleware keeps to one concern (``recording``, ``takeover``, ``lostruns``, ``inflight``,
``delayed``, ``settle``); they hand each other no private state, only these two objects:

- an :class:`Attempt`, attached to the message it belongs to, that the recorder opens, take-over
  may start, and the lost-runs guard may end before the job runs;
- the process's :class:`InFlightJobs`: which attempt each worker thread runs, and which ends are
  still being written (such a job is still ``running`` in the store until its end lands).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jobs.context import JobContext, set_current_job
from jobs.kinds import JobKind
from jobs.status import AttemptOutcome
from jobs.store import AttemptEnd, AttemptStore, SeenMessage, StartedAttempt, WorkerIdentity
from jobs.store.delayed import HeldMessage

logger = logging.getLogger("conveyor.lifecycle")

#: The attribute of a delivered message that holds its :class:`Attempt`.
_ATTEMPT = "conveyor_attempt"


@dataclass(eq=False, slots=True)
class Attempt:
    """One delivery of a Conveyor job's message, from its start in the store to its end."""

    seen: SeenMessage
    kind: JobKind
    #: Set once the store has started the attempt (by the recorder, or by a take-over).
    started: StartedAttempt | None = None
    #: The job's view of its run, set when this thread starts running it.
    context: JobContext | None = field(default=None, repr=False)
    #: ``time.monotonic()`` when the attempt started, for the duration in the log.
    began: float = 0.0
    #: The retry ``Retries`` scheduled: written with the end, in the same transaction.
    retry: HeldMessage | None = None
    #: An end decided before the job ran (too many lost runs): the recorder writes it on the skip.
    end: AttemptEnd | None = None
    #: The outcome whose end the recorder handed to the store (read by the metrics middleware).
    outcome: AttemptOutcome | None = None
    #: This process holds the job's claim (``jobs/store/claims.py``), let go once its end is stored.
    claimed: bool = False
    #: Another live run holds the job's claim: this copy of its message must wait (``TakeOver``).
    busy: bool = False
    #: Running without its start written (a short run is written once, at its end), by ``worker``
    #: since ``started_at``; cleared once ``Promote`` writes its ``running`` state.
    lazy: bool = False
    worker: WorkerIdentity | None = None
    started_at: datetime | None = None
    #: Set once the recorder hands the end over: ``Promote`` leaves the attempt alone from then on.
    ending: bool = False
    #: Held while the lazy attempt's start is written or its end handed over (never both at once).
    guard: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def job_id(self) -> str:
        return self.seen.job_id


def attach(message: Any, attempt: Attempt) -> None:
    """Make ``attempt`` the one ``message`` runs."""
    setattr(message, _ATTEMPT, attempt)


def attempt_of(message: Any) -> Attempt | None:
    """The attempt ``message`` runs (None for an application's own actor, or before the recorder)."""
    attempt: Attempt | None = getattr(message, _ATTEMPT, None)
    return attempt


class InFlightJobs:
    """The attempts this process's worker threads run, and the ends still being written."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, Attempt] = {}
        # By job id: a job whose end is being written is still ``running`` in the store.
        self._ending: dict[str, Future[bool]] = {}

    def enter(self, attempt: Attempt, started: StartedAttempt, store: AttemptStore) -> None:
        """This thread runs ``attempt`` from now on: the job's code sees it as its context."""
        job_id = attempt.job_id
        attempt.started = started
        attempt.began = time.monotonic()
        attempt.context = JobContext(
            job_id=job_id,
            kind=attempt.kind.name,
            attempt=started.number,
            trace_id=attempt.seen.trace_id,
            cancel_check=lambda: store.cancel_requested(job_id),
            progress_sink=lambda percent: store.set_progress(job_id, percent),
        )
        set_current_job(attempt.context)
        with self._lock:
            self._running[threading.get_ident()] = attempt

    def current(self) -> Attempt | None:
        """The attempt this thread runs (None between jobs)."""
        with self._lock:
            return self._running.get(threading.get_ident())

    def leave(self) -> None:
        """This thread runs no job any more."""
        set_current_job(None)
        with self._lock:
            self._running.pop(threading.get_ident(), None)

    def runs(self, job_id: str) -> bool:
        """Whether this process runs ``job_id``, or is still writing its end."""
        with self._lock:
            return job_id in self._ending or any(a.job_id == job_id for a in self._running.values())

    def lazy_since(self, seconds: float) -> list[Attempt]:
        """The attempts running for ``seconds`` or longer whose start is not written yet."""
        since = time.monotonic() - seconds
        with self._lock:
            return [a for a in self._running.values() if a.lazy and a.began <= since]

    def take_running(self) -> list[Attempt]:
        """Every attempt still running, removed from the registry (the process stops without them)."""
        with self._lock:
            running = list(self._running.values())
            self._running.clear()
        return running

    def ending(self, job_id: str, recorded: Future[bool]) -> None:
        """``recorded`` writes the end of ``job_id``: the job counts as running here until it lands."""
        with self._lock:
            self._ending[job_id] = recorded

        # The callback takes the Future as its argument: closing over it would make a cycle.
        def landed(done: Future[bool]) -> None:
            with self._lock:
                if self._ending.get(job_id) is done:
                    del self._ending[job_id]
            if (error := done.exception()) is not None:
                logger.error("job %s: its end could not be recorded: %s", job_id, error)

        recorded.add_done_callback(landed)

    def pending_ends(self) -> list[Future[bool]]:
        """The writes of ends that have not landed yet."""
        with self._lock:
            return list(self._ending.values())
