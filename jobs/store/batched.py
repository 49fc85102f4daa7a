"""Group commit of the lifecycle's writes: one writer thread per worker process.

Each worker thread hands its ``start`` to the writer and waits for the commit of the batch
that carries it: the start is the guard against running a job twice. An end is handed over
detached (``finish_detached``): the thread goes on to its next message at once, and the
message is acknowledged when the batch carrying its end commits, so it is still acknowledged
only after its outcome is stored (SPEC §6). The writer takes whatever has queued up while the
previous batch was being written, and writes it with one statement for the starts and one for
the ends (the transitions of ``jobs/store/transitions.py``: no SQL of its own), each
committing by itself on the writer's own connection (``jobs/store/direct.py``): under load,
one round trip serves many jobs; when idle, a write goes alone at once, adding no latency.
The rare extras go through SQLAlchemy: an end that carries its retry's message (in one
transaction with it), and closing the earlier runs of a job started again as ``lost``.
While PostgreSQL is unreachable, a detached end is kept by the writer and written again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobs.errors import ServiceUnavailable
from jobs.store import transitions
from jobs.store.attempts import (
    AttemptEnd,
    AttemptStore,
    SeenMessage,
    StartedAttempt,
    WorkerIdentity,
    sealed_end,
    sealed_seen,
)
from jobs.store.claims import Claims
from jobs.store.database import Database
from jobs.store.delayed import HeldMessage, hold
from jobs.store.direct import DirectConnection
from jobs.store.jobs import utcnow
from jobs.store.steps import through
from jobs.store.waiting import RETRY_MAX, RETRY_MIN, take_batch

logger = logging.getLogger("conveyor.store")

#: The most writes one transaction carries.
MAX_BATCH = 256
#: Writer threads (each with its own connection) per worker process.
WRITERS = 2


@dataclass
class _Start:
    seen: SeenMessage
    worker: WorkerIdentity
    done: Future[StartedAttempt | None]


@dataclass
class _Finish:
    job_id: str
    attempt: int
    end: AttemptEnd
    held: HeldMessage | None
    done: Future[bool]
    #: Nobody waits on it (``finish_detached``): the writer waits an outage out for it.
    detached: bool = False


@dataclass
class _Run:
    """A whole short run whose start was not written (a claimed job): detached, as an end is."""

    seen: SeenMessage
    worker: WorkerIdentity
    number: int
    started_at: datetime
    end: AttemptEnd
    held: HeldMessage | None
    done: Future[bool]


_Write = _Start | _Finish | _Run


class BatchedAttemptStore(AttemptStore):
    """:class:`AttemptStore` whose ``start`` and ``finish`` are written in batches (PostgreSQL only)."""

    def __init__(
        self,
        db: Database,
        *,
        writers: int = WRITERS,
        observe: Callable[[int, float], None] | None = None,
        claims: Claims | None = None,
    ) -> None:
        """``claims``: the process's job claims (``jobs/store/claims.py``), with which a short run
        is written once, start and end together (:meth:`finish_run_detached`)."""
        super().__init__(db)
        self.claims = claims
        #: Told each batch written: its size and its seconds (the metrics' hook; the store knows no metrics).
        self.observe = observe
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        # More than one writer: while one batch waits on PostgreSQL's round trips, the next is sent.
        self._threads = [
            threading.Thread(target=self._run, name=f"conveyor-store-writer-{n}", daemon=True)
            for n in range(writers)
        ]
        for thread in self._threads:
            thread.start()

    def start(
        self, seen: SeenMessage, worker: WorkerIdentity, *, take_over: int | None = None
    ) -> StartedAttempt | None:
        if take_over is not None:  # rare (a worker died mid-job): no batching
            return super().start(seen, worker, take_over=take_over)
        done: Future[StartedAttempt | None] = Future()
        # Sealed here, on the caller's thread: the writer thread's CPU goes to PostgreSQL.
        self._queue.put(_Start(sealed_seen(self.db.sealer, seen), worker, done))
        return done.result()

    def finish(self, job_id: str, attempt: int, end: AttemptEnd, *, held: HeldMessage | None = None) -> bool:
        done: Future[bool] = Future()
        self._queue.put(_Finish(job_id, attempt, sealed_end(self.db.sealer, job_id, end), held, done))
        return done.result()

    def finish_detached(
        self,
        job_id: str,
        attempt: int,
        end: AttemptEnd,
        *,
        held: HeldMessage | None = None,
        stopping: threading.Event | None = None,
    ) -> Future[bool]:
        done: Future[bool] = Future()
        sealed = sealed_end(self.db.sealer, job_id, end)
        self._queue.put(_Finish(job_id, attempt, sealed, held, done, detached=True))
        return done

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
        done: Future[bool] = Future()
        sealed = sealed_end(self.db.sealer, seen.job_id, end)
        self._queue.put(_Run(seen, worker, number, started_at, sealed, held, done))
        return done

    def close(self) -> None:
        """Stop the writers; a detached end still waiting out an outage is dropped (its message
        was not acknowledged: RabbitMQ delivers it again)."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=10)
        if self.claims is not None:
            self.claims.close()

    # ------------------------------------------------------------ the writer

    def _run(self) -> None:
        connection = DirectConnection(self.db.url, self.db.translate)
        backlog: list[_Write] = []
        pause = RETRY_MIN
        try:
            while (batch := self._next_batch(backlog, pause)) is not None:
                backlog = self._write(batch, connection)
                pause = min(pause * 2, RETRY_MAX) if backlog else RETRY_MIN
        finally:
            connection.close()

    def _next_batch(self, backlog: list[_Write], pause: float) -> list[_Write] | None:
        """What has queued up (after ``pause`` when ``backlog`` met an outage); None once the store closes."""
        if backlog:
            batch = list(backlog)
            deadline = time.monotonic() + pause
            while (left := deadline - time.monotonic()) > 0:
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if item is None:
                    return None
                batch.append(item)
            return batch
        first = self._queue.get()
        return None if first is None else take_batch(self._queue, first, MAX_BATCH)

    def _write(self, batch: list[_Write], connection: DirectConnection) -> list[_Write]:
        """Write ``batch``; returns its detached ends that met an outage, to be written again."""
        began = time.perf_counter()
        try:
            results = self._write_batch(batch, connection)
        except ServiceUnavailable as exc:
            again = [item for item in batch if _is_detached(item)]
            for item in batch:
                if not _is_detached(item):
                    item.done.set_exception(exc)  # its caller waits the outage out and tries again
            if again:
                logger.warning("%s; %d ended jobs are written again when it is back", exc, len(again))
            return again
        except Exception as exc:
            if len(batch) == 1:
                batch[0].done.set_exception(exc)
                return []
            # One bad write must not fail its neighbours: write them one by one to isolate it.
            logger.warning(
                "a batch of %d store writes failed; writing them one by one", len(batch), exc_info=True
            )
            return [again for item in batch for again in self._write([item], connection)]
        if self.observe is not None:
            self.observe(len(batch), time.perf_counter() - began)
        for item, result in zip(batch, results, strict=True):
            item.done.set_result(result)
        return []

    def _write_batch(self, batch: Sequence[_Write], connection: DirectConnection) -> list[Any]:
        starts = [item for item in batch if isinstance(item, _Start)]
        finishes = [item for item in batch if isinstance(item, _Finish)]
        # A run with a retry's message is written alone, with it (rare: through SQLAlchemy).
        runs = [item for item in batch if isinstance(item, _Run) and item.held is None]
        held_runs = [item for item in batch if isinstance(item, _Run) and item.held is not None]
        # A job met twice in one batch (a duplicate message, or its start beside its finish): the
        # statements would reorder its writes, so they go one by one, in the order they came.
        if len({_job_id(item) for item in batch}) < len(batch):
            return [self._write_batch([item], connection)[0] for item in batch]
        now = utcnow()
        # A retry's message goes in the transaction of its attempt's end (rare: through SQLAlchemy).
        plain = [f for f in finishes if f.held is None]
        holding = [f for f in finishes if f.held is not None]
        numbers: dict[str, int] = {}
        moved: set[str] = set()
        # Through libpq's prepared-statement call (``DirectConnection.fetch``): less CPU than a cursor.
        if starts:
            rows = connection.fetch(*_starts(starts, now))
            numbers = {str(job_id): int(number) for job_id, number in rows}
        if plain:
            moved.update(str(job_id) for (job_id,) in connection.fetch(*_ends(plain, now)))
        if runs:
            moved.update(str(job_id) for (job_id,) in connection.fetch(*_runs(runs, now)))
        if holding:
            with self.db.transaction() as sa:
                moved.update(str(job_id) for (job_id,) in sa.exec_driver_sql(*_ends(holding, now)))
                hold(sa, *(f.held for f in holding if f.held is not None), sealer=self.db.sealer)
        for r in held_runs:
            if self.write_run(r.seen, r.worker, r.number, r.started_at, r.end, held=r.held):
                moved.add(r.seen.job_id)
        for stray in (r for r in runs if r.seen.job_id not in moved):  # rare: its job moved meanwhile
            self.write_run(stray.seen, stray.worker, stray.number, stray.started_at, stray.end)
        started = self._count_lost_runs(numbers, now)
        return [
            started.get(item.seen.job_id) if isinstance(item, _Start) else _job_id(item) in moved
            for item in batch
        ]

    def _count_lost_runs(self, numbers: dict[str, int], now: datetime) -> dict[str, StartedAttempt]:
        # A first attempt has no earlier run that could have been lost: no query for it.
        again = {job_id: number for job_id, number in numbers.items() if number > 1}
        lost: dict[str, int] = {}
        if again:
            with self.db.transaction() as sa:
                run = through(sa)
                marks = {job_id: transitions.mark_lost(run, job_id, n, now) for job_id, n in again.items()}
                lost = {job_id: read() for job_id, read in marks.items()}
        return {
            job_id: StartedAttempt(number=number, lost_runs=lost.get(job_id, 0))
            for job_id, number in numbers.items()
        }


def _is_detached(item: _Write) -> bool:
    # A run is always handed over detached; an end only through ``finish_detached``.
    return isinstance(item, _Run) or (isinstance(item, _Finish) and item.detached)


def _job_id(item: _Write) -> str:
    return item.seen.job_id if isinstance(item, _Start | _Run) else item.job_id


# The start and end transitions of ``jobs/store/transitions.py``, each one statement per batch
# (over arrays; without them when a batch carries one job), compiled once at import.


def _starts(starts: Sequence[_Start], now: datetime) -> tuple[str, dict[str, Any]]:
    rows = [transitions.start_values(s.seen, s.worker) for s in starts]
    return transitions.START_BATCH.compiled(rows, now=now)


def _ends(finishes: Sequence[_Finish], now: datetime) -> tuple[str, dict[str, Any]]:
    rows = [transitions.end_values(f.job_id, f.attempt, f.end) for f in finishes]
    return transitions.END_BATCH.compiled(rows, now=now)


def _runs(runs: Sequence[_Run], now: datetime) -> tuple[str, dict[str, Any]]:
    rows = [transitions.run_values(r.seen, r.worker, r.number, r.started_at, r.end) for r in runs]
    return transitions.RUN_BATCH.compiled(rows, now=now)
