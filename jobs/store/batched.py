"""Group commit of the lifecycle's writes: one writer thread per worker process.

Each worker thread hands its ``start`` to the writer and waits for the commit of the batch
that carries it: the start is the guard against running a job twice. An end is handed over
detached (``finish_detached``): the thread goes on to its next message at once, and the
message is acknowledged when the batch carrying its end commits, so it is still acknowledged
only after its outcome is stored (SPEC §6). The writer takes whatever has queued up while the
previous batch was being written, and writes it with one statement for the starts and one for
the ends, each committing by itself on the writer's own connection (``jobs/store/direct.py``):
under load, one round trip serves many jobs; when idle, a write goes alone at once, adding no
latency. The rare extras go through SQLAlchemy: an end that carries its retry's message (in
one transaction with it), and closing the earlier runs of a job started again as ``lost``.
While PostgreSQL is unreachable, a detached end is kept by the writer and written again.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobs.errors import ServiceUnavailable
from jobs.status import END_EVENTS, AttemptOutcome, Event, JobStatus, sources, target
from jobs.store import transitions
from jobs.store.attempts import (
    JOB_STATUS_AFTER,
    AttemptEnd,
    AttemptStore,
    SeenMessage,
    StartedAttempt,
    WorkerIdentity,
)
from jobs.store.database import Database
from jobs.store.delayed import HeldMessage, hold
from jobs.store.direct import DirectConnection
from jobs.store.jobs import utcnow
from jobs.store.steps import through
from jobs.store.waiting import RETRY_MAX, RETRY_MIN

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


_Write = _Start | _Finish


class BatchedAttemptStore(AttemptStore):
    """:class:`AttemptStore` whose ``start`` and ``finish`` are written in batches (PostgreSQL only)."""

    def __init__(self, db: Database, *, writers: int = WRITERS) -> None:
        super().__init__(db)
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
        self._queue.put(_Start(seen, worker, done))
        return done.result()

    def finish(self, job_id: str, attempt: int, end: AttemptEnd, *, held: HeldMessage | None = None) -> bool:
        done: Future[bool] = Future()
        self._queue.put(_Finish(job_id, attempt, end, held, done))
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
        self._queue.put(_Finish(job_id, attempt, end, held, done, detached=True))
        return done

    def close(self) -> None:
        """Stop the writers; a detached end still waiting out an outage is dropped (its message
        was not acknowledged: RabbitMQ delivers it again)."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=10)

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
        if first is None:
            return None
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # seen again by the next call, which ends the thread
                break
            batch.append(item)
        return batch

    def _write(self, batch: list[_Write], connection: DirectConnection) -> list[_Write]:
        """Write ``batch``; returns its detached ends that met an outage, to be written again."""
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
        for item, result in zip(batch, results, strict=True):
            item.done.set_result(result)
        return []

    def _write_batch(self, batch: Sequence[_Write], connection: DirectConnection) -> list[Any]:
        starts = [item for item in batch if isinstance(item, _Start)]
        finishes = [item for item in batch if isinstance(item, _Finish)]
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
        with connection.connect() as pg:
            if starts:
                start = _statement(_START_SQL, _START_ONE_SQL, _start_values(starts, now))
                rows = pg.execute(*start).fetchall()
                numbers = {str(job_id): int(number) for job_id, number in rows}
            if plain:
                ended = pg.execute(*_statement(_FINISH_SQL, _FINISH_ONE_SQL, _finish_values(plain, now)))
                moved.update(str(job_id) for (job_id,) in ended.fetchall())
        if holding:
            with self.db.transaction() as sa:
                ended_holding = sa.exec_driver_sql(_FINISH_SQL, _finish_values(holding, now))
                moved.update(str(job_id) for (job_id,) in ended_holding)
                hold(sa, *(f.held for f in holding if f.held is not None))
        started = self._count_lost_runs(numbers, now)
        return [
            started.get(item.seen.job_id) if isinstance(item, _Start) else item.job_id in moved
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
    return isinstance(item, _Finish) and item.detached


def _job_id(item: _Write) -> str:
    return item.seen.job_id if isinstance(item, _Start) else item.job_id


# The transitions of ``jobs/store/transitions.py`` (start, end), written over arrays so that a
# batch is one statement each; their guards and targets come from the same table, and
# ``tests/integration/test_transitions.py`` holds both to the same assertions.


def _in(statuses: frozenset[JobStatus]) -> str:
    """A status guard's list, from the table of transitions (trusted constants, not input)."""
    return ", ".join(f"'{status.value}'" for status in sorted(statuses))


_RUNNING = target(Event.START).value
# Every end has the same guard: the job is still on this attempt, in a status an end may move.
(_END_SOURCES,) = {sources(event) for event in END_EVENTS.values()}

# A start inserts the job row ``running`` on first sight (a plain Dramatiq producer's message);
# else it moves the row to ``running`` only from a startable status: the guard against a second run.
_START_UPSERT = f"""ON CONFLICT (id) DO UPDATE
        SET status = '{_RUNNING}', attempts = jobs.attempts + 1,
            started_at = excluded.started_at, eta = NULL, error = NULL
        WHERE jobs.status IN ({_in(sources(Event.START))})
    RETURNING jobs.id, jobs.attempts"""

# One statement per batch for the starts and one for the ends: rows travel as arrays (unnest),
# so a batch costs two round trips however many jobs it carries, and each is prepared once.
_START_SQL = f"""
WITH up AS (
    INSERT INTO jobs (id, kind, queue, status, payload, attempts, max_retries, created_at, started_at)
    SELECT v.id, v.kind, v.queue, '{_RUNNING}', v.payload::jsonb, 1, v.max_retries, v.created_at, %(now)s
    FROM unnest(%(ids)s::uuid[], %(kinds)s::text[], %(queues)s::text[], %(payloads)s::text[],
                %(max_retries)s::int[], %(created)s::timestamptz[])
         AS v(id, kind, queue, payload, max_retries, created_at)
    {_START_UPSERT}
)
INSERT INTO job_attempts (job_id, attempt, worker, host, pid, started_at)
SELECT up.id, up.attempts, w.worker, w.host, w.pid, %(now)s
FROM up JOIN unnest(%(ids)s::uuid[], %(workers)s::text[], %(hosts)s::text[], %(pids)s::int[])
             AS w(id, worker, host, pid) ON w.id = up.id
RETURNING job_id::text, attempt
"""

_FINISH_SQL = f"""
WITH v AS (
    SELECT * FROM unnest(%(ids)s::uuid[], %(attempts)s::int[], %(outcomes)s::text[], %(statuses)s::text[],
                         %(errors)s::text[], %(tracebacks)s::text[], %(results)s::text[],
                         %(finished)s::timestamptz[], %(etas)s::timestamptz[])
         AS v(id, attempt, outcome, status, error, traceback, result, finished_at, eta)
), closed AS (
    UPDATE job_attempts
    SET outcome = v.outcome, finished_at = %(now)s, error = v.error, traceback = v.traceback
    FROM v WHERE job_attempts.job_id = v.id AND job_attempts.attempt = v.attempt
)
UPDATE jobs SET status = v.status, error = v.error, result = v.result::jsonb,
                finished_at = v.finished_at, eta = v.eta
FROM v WHERE jobs.id = v.id AND jobs.attempts = v.attempt AND jobs.status IN ({_in(_END_SOURCES)})
RETURNING jobs.id::text
"""


# The same statements for a single job: as often as not a batch carries one start or one end,
# and without ``unnest`` PostgreSQL plans and runs it in about half the time (measured: 275 µs
# of server CPU per job for both instead of 480), and psycopg dumps scalars, not arrays.
_START_ONE_SQL = f"""
WITH up AS (
    INSERT INTO jobs (id, kind, queue, status, payload, attempts, max_retries, created_at, started_at)
    VALUES (%(ids)s, %(kinds)s, %(queues)s, '{_RUNNING}', %(payloads)s::jsonb, 1, %(max_retries)s,
            %(created)s, %(now)s)
    {_START_UPSERT}
)
INSERT INTO job_attempts (job_id, attempt, worker, host, pid, started_at)
SELECT up.id, up.attempts, %(workers)s, %(hosts)s, %(pids)s, %(now)s FROM up
RETURNING job_id::text, attempt
"""

_FINISH_ONE_SQL = f"""
WITH closed AS (
    UPDATE job_attempts
    SET outcome = %(outcomes)s, finished_at = %(now)s, error = %(errors)s, traceback = %(tracebacks)s
    WHERE job_id = %(ids)s AND attempt = %(attempts)s
)
UPDATE jobs SET status = %(statuses)s, error = %(errors)s, result = %(results)s::jsonb,
                finished_at = %(finished)s, eta = %(etas)s
WHERE id = %(ids)s AND attempts = %(attempts)s AND status IN ({_in(_END_SOURCES)})
RETURNING id::text
"""


def _statement(many: str, one: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The batch statement with its arrays, or the single-job one with their only elements."""
    if len(params["ids"]) > 1:
        return many, params
    return one, {key: value[0] if isinstance(value, list) else value for key, value in params.items()}


def _start_values(starts: Sequence[_Start], now: datetime) -> dict[str, Any]:
    return {
        "now": now,
        "ids": [s.seen.job_id for s in starts],
        "kinds": [s.seen.kind for s in starts],
        "queues": [s.seen.queue for s in starts],
        "payloads": [json.dumps(s.seen.payload) for s in starts],
        "max_retries": [s.seen.max_retries for s in starts],
        "created": [s.seen.created_at for s in starts],
        "workers": [s.worker.worker_id for s in starts],
        "hosts": [s.worker.host for s in starts],
        "pids": [s.worker.pid for s in starts],
    }


def _finish_values(finishes: Sequence[_Finish], now: datetime) -> dict[str, Any]:
    rows = [_end_values(f, now) for f in finishes]
    params: dict[str, Any] = {key: [row[key] for row in rows] for key in rows[0]}
    params["now"] = now
    return params


def _end_values(finish: _Finish, now: datetime) -> dict[str, Any]:
    outcome = finish.end.outcome
    final = outcome in (AttemptOutcome.SUCCEEDED, AttemptOutcome.FAILED, AttemptOutcome.CANCELLED)
    succeeded = outcome is AttemptOutcome.SUCCEEDED
    return {
        "ids": finish.job_id,
        "attempts": finish.attempt,
        "outcomes": outcome.value,
        "statuses": JOB_STATUS_AFTER[outcome].value,
        "errors": finish.end.error,
        "tracebacks": finish.end.traceback,
        "results": json.dumps(finish.end.result) if succeeded and finish.end.result is not None else None,
        "finished": now if final else None,
        "etas": finish.end.eta if outcome is AttemptOutcome.RETRYING else None,
    }
