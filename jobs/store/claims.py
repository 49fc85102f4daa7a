"""Claims: which worker process runs a job, held as a PostgreSQL advisory lock (no write, no WAL).

A worker process claims each job before it runs it, on a connection of its own that lives as
long as the process: a session-level advisory lock keyed by the job id, taken with
``pg_try_advisory_lock`` for a batch of jobs in one round trip, together with a read of each
job's row (its status and attempt count). Another copy of the job's message (a republished or
redelivered one) cannot take the lock while the run lives, on any host; and when the process
dies, PostgreSQL drops its connection and the lock with it, so a dead run never blocks its
job. The lock is what lets a short run go without a committed ``running`` write before it
(SPEC §6: ``running`` may be written lazily, and no job runs beside a live run of itself).

The claims of all the process's threads are grouped: a thread hands its job id to the
claimer thread and waits for the batch's answer; releases go out with the next batch, or at
once when nothing else is waiting. When the connection breaks (PostgreSQL restarted), the
locks of the jobs still running are taken again on the new one.
"""

from __future__ import annotations

import _thread
import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobs.status import STARTABLE_STATUSES
from jobs.store.database import Database
from jobs.store.direct import DirectConnection
from jobs.store.steps import array_literal
from jobs.store.transitions import WorkerIdentity
from jobs.store.waiting import take_batch

logger = logging.getLogger("conveyor.store")

#: The most claims one round trip carries.
MAX_CLAIMS = 256

# The lock's key: the job id hashed to 64 bits (a clash between two ids only makes one wait).
_KEY = "hashtextextended(c.id::text, 7)"
# Locks, reads the job and any claim row left by a dead run, and writes the claim row of each
# job that runs at once (asked to, held, waiting, and no dead run to record first). It also lets
# go of the jobs released since the last round trip (``u``, joined so that it runs): in either
# order, a job released and claimed again here ends up held once (the lock counts its takes).
_CLAIM = f"""
WITH u AS MATERIALIZED (
    SELECT count(pg_advisory_unlock({_KEY})) AS let_go
    FROM unnest(%(released)s::uuid[]) AS c(id)
), c AS MATERIALIZED (
    SELECT c.id, c.n, c.at_once, pg_try_advisory_lock({_KEY}) AS held
    FROM unnest(%(ids)s::uuid[], %(at_once)s::bool[])
         WITH ORDINALITY AS c(id, at_once, n)
), r AS (
    SELECT c.id, c.n, c.held, j.status, j.attempts,
           c.held AND c.at_once AND j.status = ANY(%(waiting)s::varchar[]) AND m.job_id IS NULL AS go,
           m.worker, m.host, m.pid, m.started_at
    -- ``j.id = ANY``: PostgreSQL prunes the partitions of ``jobs`` to those of these ids.
    FROM c LEFT JOIN jobs AS j ON j.id = c.id AND j.id = ANY(%(ids)s::uuid[])
         LEFT JOIN job_claims AS m ON m.job_id = c.id
), marked AS (
    INSERT INTO job_claims (job_id, attempt, worker, host, pid, started_at)
    SELECT id, attempts + 1, %(worker)s, %(host)s, %(pid)s, now() FROM r WHERE go
    ON CONFLICT (job_id) DO NOTHING
)
SELECT id, held, status, attempts, go, worker, host, pid, started_at FROM r, u ORDER BY r.n
"""
#: The statuses a job may start from, as one array literal (made once, not on each claim).
_WAITING = array_literal(sorted(status.value for status in STARTABLE_STATUSES))
_RELEASE = "SELECT pg_advisory_unlock(" + _KEY + ") FROM unnest(%(ids)s::uuid[]) AS c(id)"
_RETAKE = "SELECT c.id, pg_try_advisory_lock(" + _KEY + ") FROM unnest(%(ids)s::uuid[]) AS c(id)"


@dataclass(frozen=True)
class DeadRun:
    """A run started without a write whose worker died: its claim row was left behind."""

    worker: WorkerIdentity
    started_at: datetime


@dataclass(frozen=True)
class Claim:
    """What claiming a job found."""

    #: Whether this process now holds the job (False: a live run holds it, here or elsewhere).
    held: bool
    #: The job's status and attempt count, None when the store has no row for it.
    status: str | None
    attempts: int | None
    #: Whether the job runs at once, its start unwritten (its claim row is written).
    at_once: bool = False
    #: A run of the job started without a write and lost with its worker (held claims only).
    dead_run: DeadRun | None = None


class _Ask:
    """One thread's claim, answered by the claimer thread: a lock held until the answer is in
    (a ``Future`` costs a condition and its lock per claim, a measurable share of a worker)."""

    __slots__ = ("_answered", "_claim", "_error", "at_once", "job_id")

    def __init__(self, job_id: str, at_once: bool) -> None:
        self.job_id, self.at_once = job_id, at_once
        self._claim: Claim | None = None
        self._error: BaseException | None = None
        self._answered = _thread.allocate_lock()
        self._answered.acquire()

    def answer(self, claim: Claim) -> None:
        self._claim = claim
        self._answered.release()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._answered.release()

    def wait(self) -> Claim:
        self._answered.acquire()
        if self._error is not None:
            raise self._error
        assert self._claim is not None
        return self._claim

    @property
    def answered(self) -> bool:
        return self._claim is not None or self._error is not None


class Claims:
    """The job claims of one worker process, on one PostgreSQL connection."""

    def __init__(self, db: Database, worker: WorkerIdentity) -> None:
        self._connection = DirectConnection(db.url, db.translate)
        self._worker = worker
        self._queue: queue.SimpleQueue[_Ask | str | None] = queue.SimpleQueue()
        #: The jobs this process holds (taken again after a reconnect).
        self._held: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="conveyor-claims", daemon=True)
        self._thread.start()

    def claim(self, job_id: str, *, at_once: bool) -> Claim:
        """Take the job for this process, and read its row; ``at_once``: the job may run at once,
        its start unwritten, if it is waiting (a claim row then stands for the run).

        Raises:
            ServiceUnavailable: PostgreSQL cannot be reached (nothing is held).
        """
        ask = _Ask(job_id, at_once)
        self._queue.put(ask)
        return ask.wait()

    def release(self, job_id: str) -> None:
        """Let go of a job this process holds (its run's end is stored, or it did not run)."""
        self._queue.put(job_id)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
        self._connection.close()

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            items = take_batch(self._queue, first, MAX_CLAIMS)
            asks = [item for item in items if isinstance(item, _Ask)]
            releases = [item for item in items if isinstance(item, str)]
            try:
                self._round_trip(asks, releases)
            except Exception as exc:
                for ask in asks:
                    if not ask.answered:
                        ask.fail(exc)

    def _round_trip(self, asks: Sequence[_Ask], releases: Sequence[str]) -> None:
        # Each statement goes through libpq's prepared-statement call (``DirectConnection.fetch``):
        # psycopg's cursor was a third of a worker's CPU.
        if not self._connection.connected and self._held:
            self._take_again()
        let_go = [job_id for job_id in releases if job_id in self._held]
        self._held.difference_update(let_go)
        if not asks:
            if let_go:
                self._release(let_go)
            return
        rows = self._connection.fetch(_CLAIM, self._params(asks, let_go))
        extra = []
        for ask, row in zip(asks, rows, strict=True):
            held = bool(row[1])
            # The lock is re-entrant within a session: a second copy of a job this process
            # already runs takes it again, and is told the job is held (by this very process).
            mine = held and ask.job_id not in self._held
            if held and not mine:
                extra.append(ask.job_id)
            if mine:
                self._held.add(ask.job_id)
            ask.answer(_claim(row) if mine else Claim(False, row[2], row[3]))
        if extra:
            self._release(extra)

    def _release(self, job_ids: Sequence[str]) -> None:
        self._connection.fetch(_RELEASE, {"ids": array_literal(job_ids)})

    def _params(self, asks: Sequence[_Ask], released: Sequence[str]) -> dict[str, Any]:
        worker = self._worker
        return {
            # One literal each: psycopg's array dumpers cost far more CPU per value.
            "released": array_literal(released),
            "ids": array_literal([ask.job_id for ask in asks]),
            "at_once": array_literal([ask.at_once for ask in asks]),
            "waiting": _WAITING,
            "worker": worker.worker_id,
            "host": worker.host,
            "pid": worker.pid,
        }

    def _take_again(self) -> None:
        """A new connection holds nothing: take again the jobs still running here."""
        rows = self._connection.fetch(_RETAKE, {"ids": array_literal(sorted(self._held))})
        lost = [str(job_id) for job_id, held in rows if not held]
        if lost:
            logger.warning(
                "after a reconnect to PostgreSQL, %d running jobs are held elsewhere too: %s",
                len(lost),
                ", ".join(lost[:5]),
            )


def _claim(row: Sequence[Any]) -> Claim:
    _, _, status, attempts, at_once, worker, host, pid, started_at = row
    dead = None
    if worker is not None:
        dead = DeadRun(WorkerIdentity(worker_id=worker, host=host, pid=int(pid)), started_at)
    return Claim(True, status, None if attempts is None else int(attempts), bool(at_once), dead)
