"""Storage operations of the worker side: an attempt starts, an attempt ends.

Both are guarded so that ordering between replicas does not matter: a job row is
upserted on first sight (a plain Dramatiq producer's message gets one too), and an
attempt only moves the job's status while it is still the job's latest attempt. The
writes themselves are defined once, in ``jobs/store/transitions.py``; this store runs them
one at a time through SQLAlchemy (the SQLite demo, and the rare writes a batch leaves out).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, select

from jobs import crypto
from jobs.crypto import Sealer
from jobs.fingerprint import fingerprint
from jobs.status import END_EVENTS, AttemptOutcome, JobStatus, target
from jobs.store import transitions
from jobs.store.claims import Claims, DeadRun
from jobs.store.database import Database
from jobs.store.delayed import HeldMessage
from jobs.store.jobs import JobStore, utcnow
from jobs.store.steps import through
from jobs.store.tables import Attempts, Jobs
from jobs.store.transitions import AttemptEnd, SeenMessage, StartedAttempt, WorkerIdentity
from jobs.store.waiting import wait_for_store

logger = logging.getLogger("conveyor.store")

__all__ = [
    "JOB_STATUS_AFTER",
    "AttemptEnd",
    "AttemptStore",
    "RunningAttempt",
    "SeenMessage",
    "StartedAttempt",
    "WorkerIdentity",
]


_CANCEL_REQUESTED_SQL = "SELECT cancel_requested_at FROM jobs WHERE id = %s"


@dataclass(frozen=True)
class RunningAttempt:
    """The open attempt of a ``running`` job."""

    number: int
    #: The worker process that runs it (None when no attempt row is open).
    worker: str | None


#: The status an attempt's end moves its job to (from ``jobs.status.TRANSITIONS``).
JOB_STATUS_AFTER = {outcome: target(event) for outcome, event in END_EVENTS.items()}


class AttemptStore:
    """Records the start and the end of each run of a job."""

    def __init__(self, db: Database) -> None:
        self.db = db
        #: The process's job claims (``jobs/store/claims.py``), which let a short run go without a
        #: ``running`` write first; None here: every start is written before its job runs.
        self.claims: Claims | None = None

    def start(
        self, seen: SeenMessage, worker: WorkerIdentity, *, take_over: int | None = None
    ) -> StartedAttempt | None:
        """Mark the job ``running`` and open an attempt row, in one transaction.

        ``take_over`` is the number of a ``running`` attempt whose worker is gone: the job
        starts again only if that attempt is still its latest.

        Returns:
            The attempt, or ``None`` when the job must not start: it is already succeeded,
            failed or cancelled, or running (see :meth:`running_attempt`), or it moved
            since ``take_over`` was read.
        """
        now = utcnow()
        seen = sealed_seen(self.db.sealer, seen)
        with self.db.transaction() as connection:
            run = through(connection)
            number = transitions.start(run, seen, worker, now, take_over=take_over)()
            if number is None:
                return None
            # A first attempt has no earlier run that could have been lost: no statement for it.
            lost = transitions.mark_lost(run, seen.job_id, number, now)() if number > 1 else 0
        return StartedAttempt(number=number, lost_runs=lost)

    def refuse(self, seen: SeenMessage, worker: WorkerIdentity, error: str) -> bool:
        """Fail a waiting job whose message the worker refuses to run (a bad signature):
        its start and its failed end, in one transaction, through the usual transitions.

        Returns:
            Whether the job was failed: ``False`` when it has no row (none is created), or is
            not waiting to run (running, finished or cancelled: left as it is).
        """
        now, sealer = utcnow(), self.db.sealer
        seen = sealed_seen(sealer, seen)
        with self.db.transaction() as connection:
            exists = select(Jobs.id).where(Jobs.id == seen.job_id).with_for_update()
            if connection.execute(exists).first() is None:
                return False
            run = through(connection)
            number = transitions.start(run, seen, worker, now)()
            if number is None:
                return False
            if number > 1:
                transitions.mark_lost(run, seen.job_id, number, now)()
            failed = AttemptEnd(
                AttemptOutcome.FAILED, error=error, fingerprint=fingerprint(seen.kind, error).key
            )
            ending = sealed_end(sealer, seen.job_id, failed)
            return transitions.end(run, seen.job_id, number, ending, now, sealer=sealer)()

    def running_attempt(self, job_id: str) -> RunningAttempt | None:
        """The job's open attempt if the job is ``running`` (None when it is not)."""
        query = (
            select(Jobs.attempts, Attempts.worker)
            .outerjoin(
                Attempts,
                and_(
                    Attempts.job_id == Jobs.id,
                    Attempts.attempt == Jobs.attempts,
                    Attempts.finished_at.is_(None),
                ),
            )
            .where(Jobs.id == job_id, Jobs.status == JobStatus.RUNNING.value)
        )
        with self.db.transaction() as session:
            row = session.execute(query).first()
        return None if row is None else RunningAttempt(number=int(row[0]), worker=row[1])

    def promote(
        self, seen: SeenMessage, worker: WorkerIdentity, started_at: datetime
    ) -> StartedAttempt | None:
        """Write the start of a run that began at ``started_at`` without one (claimed,
        ``jobs/store/claims.py``): :meth:`start`, with the run's claim row deleted in the same
        transaction."""
        seen = sealed_seen(self.db.sealer, seen)
        with self.db.transaction() as connection:
            run = through(connection)
            number = transitions.start(run, seen, worker, started_at)()
            if number is not None:
                run(transitions.UNMARK, {"job": seen.job_id})
        return None if number is None else StartedAttempt(number=number, lost_runs=0)

    def record_lost_run(self, seen: SeenMessage, dead: DeadRun) -> int:
        """Record as ``lost`` a run started without a write whose worker died (its claim row
        was left behind); returns how many runs of the job were lost so far."""
        with self.db.transaction() as connection:
            run = through(connection)
            return transitions.record_lost_run(run, seen, dead.worker, dead.started_at, utcnow())()

    def cancel_requested(self, job_id: str) -> bool:
        """Whether an admin asked this running job to stop (a job's first check, often its only
        one: one statement on the direct connection when it is free)."""
        with self.db.free_direct() as connection:
            if connection is not None:
                found = connection.execute(_CANCEL_REQUESTED_SQL, (job_id,)).fetchone()
                return found is not None and found[0] is not None
        with self.db.transaction() as session:
            return session.scalar(select(Jobs.cancel_requested_at).where(Jobs.id == job_id)) is not None

    def set_progress(self, job_id: str, percent: int) -> None:
        """Record how far a running job is (0–100)."""
        JobStore(self.db).set_progress(job_id, percent)

    def finish(self, job_id: str, attempt: int, end: AttemptEnd, *, held: HeldMessage | None = None) -> bool:
        """Close the attempt and move the job on, in one transaction (with the retry's message, if any).

        Returns:
            Whether the job row moved: ``False`` when a newer attempt has started meanwhile.
        """
        sealer = self.db.sealer
        end = sealed_end(sealer, job_id, end)
        with self.db.transaction() as connection:
            run = through(connection)
            return transitions.end(run, job_id, attempt, end, utcnow(), held=held, sealer=sealer)()

    def finish_run(
        self,
        seen: SeenMessage,
        worker: WorkerIdentity,
        number: int,
        started_at: datetime,
        end: AttemptEnd,
        *,
        held: HeldMessage | None = None,
    ) -> bool:
        """Record a whole run whose start was not written (a claimed job, ``jobs/store/claims.py``):
        the job moves from waiting to the end's status, and gets its closed attempt row.

        A run whose job moved meanwhile (an admin cancelled it as it began) is still recorded: its
        attempt row is written, and the job's status left as it is.

        Returns:
            Whether the job moved.
        """
        sealed = sealed_end(self.db.sealer, seen.job_id, end)
        return self.write_run(seen, worker, number, started_at, sealed, held=held)

    def write_run(
        self,
        seen: SeenMessage,
        worker: WorkerIdentity,
        number: int,
        started_at: datetime,
        end: AttemptEnd,
        *,
        held: HeldMessage | None = None,
    ) -> bool:
        """:meth:`finish_run` of an end already sealed (``sealed_end``)."""
        now, sealer = utcnow(), self.db.sealer
        with self.db.transaction() as connection:
            run = through(connection)
            if transitions.run(run, seen, worker, number, started_at, end, now, held=held, sealer=sealer)():
                return True
            transitions.record_stray_run(run, seen, worker, started_at, end, now)
        logger.warning(
            "job %s: attempt ran while the job moved elsewhere; recorded, status kept", seen.job_id
        )
        return False

    def finish_run_detached(
        self,
        seen: SeenMessage,
        worker: WorkerIdentity,
        number: int,
        started_at: datetime,
        end: AttemptEnd,
        *,
        held: HeldMessage | None = None,
        stopping: threading.Event | None = None,
    ) -> Future[bool]:
        """:meth:`finish_run` for a caller that does not wait for the commit (as :meth:`finish_detached`)."""
        recorded: Future[bool] = Future()
        try:
            recorded.set_result(
                wait_for_store(
                    lambda: self.finish_run(seen, worker, number, started_at, end, held=held), stopping
                )
            )
        except Exception as exc:
            recorded.set_exception(exc)
        return recorded

    def finish_detached(
        self,
        job_id: str,
        attempt: int,
        end: AttemptEnd,
        *,
        held: HeldMessage | None = None,
        stopping: threading.Event | None = None,
    ) -> Future[bool]:
        """:meth:`finish`, for a caller that does not wait for the commit: the Future tells when.

        Here the end is written at once, waiting out an outage until ``stopping`` is set (the
        Future then holds the ``ServiceUnavailable``); a batching store writes it with a batch.
        """
        recorded: Future[bool] = Future()
        try:  # finish() seals the end
            moved = wait_for_store(lambda: self.finish(job_id, attempt, end, held=held), stopping)
            recorded.set_result(moved)
        except Exception as exc:
            recorded.set_exception(exc)
        return recorded

    def close(self) -> None:
        """Nothing to release here (a batching store stops its writer)."""


def sealed_seen(sealer: Sealer, seen: SeenMessage) -> SeenMessage:
    """``seen`` as its start writes it: the payload sealed when encryption is on."""
    if not sealer.enabled:
        return seen
    return dataclasses.replace(seen, payload=sealer.seal_json(seen.payload, crypto.PAYLOAD, seen.job_id))


def sealed_end(sealer: Sealer, job_id: str, end: AttemptEnd) -> AttemptEnd:
    """``end`` as it is written: result, error and traceback sealed when encryption is on."""
    if not sealer.enabled:
        return end
    return dataclasses.replace(
        end,
        result=sealer.seal_json(end.result, crypto.RESULT, job_id),
        error=sealer.seal_text(end.error, crypto.ERROR, job_id),
        traceback=sealer.seal_text(end.traceback, crypto.TRACEBACK, job_id),
    )
