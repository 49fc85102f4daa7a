"""Group commit of the lifecycle's writes: one writer thread per worker process.

Each worker thread hands its ``start`` or ``finish`` to the writer and waits for the commit
of the batch that carries it, so a message is still acknowledged only after its outcome is
stored (SPEC §6). The writer takes whatever has queued up while the previous batch was
being written, and writes it in one transaction of a few multi-row statements: under load,
one commit and a handful of round trips serve many jobs; when idle, a write goes alone at
once, adding no latency.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, bindparam, insert, or_, update
from sqlalchemy.dialects import postgresql

from jobs.errors import ServiceUnavailable
from jobs.status import RUNNABLE_STATUSES, AttemptOutcome, JobStatus
from jobs.store.attempts import (
    JOB_STATUS_AFTER,
    AttemptEnd,
    AttemptStore,
    SeenMessage,
    StartedAttempt,
    WorkerIdentity,
    mark_lost_runs,
)
from jobs.store.database import Database
from jobs.store.delayed import HeldMessage
from jobs.store.jobs import utcnow
from jobs.store.models import AttemptRow, DelayedMessageRow, JobRow

logger = logging.getLogger("conveyor.store")

#: The most writes one transaction carries.
MAX_BATCH = 256
#: Writer threads (each with its own connection) per worker process.
WRITERS = 2
_RUNNABLE = [status.value for status in RUNNABLE_STATUSES]


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

    def start(self, seen: SeenMessage, worker: WorkerIdentity) -> StartedAttempt | None:
        done: Future[StartedAttempt | None] = Future()
        self._queue.put(_Start(seen, worker, done))
        return done.result()

    def finish(self, job_id: str, attempt: int, end: AttemptEnd, *, held: HeldMessage | None = None) -> bool:
        done: Future[bool] = Future()
        self._queue.put(_Finish(job_id, attempt, end, held, done))
        return done.result()

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=10)

    # ------------------------------------------------------------ the writer

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._write(batch)
                    return
                batch.append(item)
            self._write(batch)

    def _write(self, batch: list[_Write]) -> None:
        try:
            results = self._write_batch(batch)
        except ServiceUnavailable as exc:
            for item in batch:
                item.done.set_exception(exc)  # each caller waits the outage out and tries again
            return
        except Exception:
            # One bad write must not fail its neighbours: write them one by one to isolate it.
            logger.warning(
                "a batch of %d store writes failed; writing them one by one", len(batch), exc_info=True
            )
            for item in batch:
                self._write_alone(item)
            return
        for item, result in zip(batch, results, strict=True):
            item.done.set_result(result)

    def _write_alone(self, item: _Write) -> None:
        try:
            result = self._write_batch([item])[0]
        except BaseException as exc:
            item.done.set_exception(exc)
        else:
            item.done.set_result(result)

    def _write_batch(self, batch: Sequence[_Write]) -> list[Any]:
        starts = [item for item in batch if isinstance(item, _Start)]
        finishes = [item for item in batch if isinstance(item, _Finish)]
        # A job met twice in one batch (a duplicate message, or its start beside its finish): the
        # statements would reorder its writes, so they go one by one, in the order they came.
        if len({_job_id(item) for item in batch}) < len(batch):
            return [self._write_batch([item])[0] for item in batch]
        with self.db.session() as session:
            connection = session.connection()
            started = _start_all(connection, starts) if starts else {}
            if finishes:
                _finish_all(connection, finishes)
        return [started.get(item.seen.job_id) if isinstance(item, _Start) else True for item in batch]


def _job_id(item: _Write) -> str:
    return item.seen.job_id if isinstance(item, _Start) else item.job_id


def _start_all(connection: Connection, starts: Sequence[_Start]) -> dict[str, StartedAttempt]:
    now = utcnow()
    insert_job = postgresql.insert(JobRow)
    upsert = insert_job.on_conflict_do_update(
        index_elements=[JobRow.id],
        set_={
            "status": JobStatus.RUNNING.value,
            "attempts": JobRow.attempts + 1,
            "started_at": insert_job.excluded.started_at,
            "eta": None,
            "error": None,
        },
        # Equalities, not IN: an expanding IN cannot go into a multi-row statement.
        where=or_(*(JobRow.status == status for status in _RUNNABLE)),
    ).returning(JobRow.id, JobRow.attempts)
    rows = [
        {
            "id": s.seen.job_id,
            "kind": s.seen.kind,
            "queue": s.seen.queue,
            "status": JobStatus.RUNNING.value,
            "payload": s.seen.payload,
            "attempts": 1,
            "max_retries": s.seen.max_retries,
            "created_at": s.seen.created_at,
            "started_at": now,
        }
        for s in starts
    ]
    numbers = {str(job_id): int(attempt) for job_id, attempt in connection.execute(upsert, rows)}
    by_id = {s.seen.job_id: s for s in starts}
    started: dict[str, StartedAttempt] = {}
    attempt_rows = []
    for job_id, number in numbers.items():
        # A first attempt has no earlier run that could have been lost: no query for it.
        lost = mark_lost_runs(connection, job_id, now) if number > 1 else 0
        started[job_id] = StartedAttempt(number=number, lost_runs=lost)
        worker = by_id[job_id].worker
        attempt_rows.append(
            {
                "job_id": job_id,
                "attempt": number,
                "worker": worker.worker_id,
                "host": worker.host,
                "pid": worker.pid,
                "started_at": now,
            }
        )
    if attempt_rows:
        connection.execute(insert(AttemptRow), attempt_rows)
    return started


def _finish_all(connection: Connection, finishes: Sequence[_Finish]) -> None:
    now = utcnow()
    connection.execute(
        update(AttemptRow)
        .where(and_(AttemptRow.job_id == bindparam("b_job_id"), AttemptRow.attempt == bindparam("b_attempt")))
        .values(
            outcome=bindparam("b_outcome"),
            finished_at=bindparam("b_finished_at"),
            error=bindparam("b_error"),
            traceback=bindparam("b_traceback"),
        )
        .execution_options(synchronize_session=False),
        [
            {
                "b_job_id": f.job_id,
                "b_attempt": f.attempt,
                "b_outcome": f.end.outcome.value,
                "b_finished_at": now,
                "b_error": f.end.error,
                "b_traceback": f.end.traceback,
            }
            for f in finishes
        ],
    )
    connection.execute(
        update(JobRow)
        .where(and_(JobRow.id == bindparam("b_job_id"), JobRow.attempts == bindparam("b_attempt")))
        .values(
            status=bindparam("b_status"),
            error=bindparam("b_error"),
            result=bindparam("b_result"),
            finished_at=bindparam("b_finished_at"),
            eta=bindparam("b_eta"),
        )
        .execution_options(synchronize_session=False),
        [_job_values(f, now) for f in finishes],
    )
    held = [f.held for f in finishes if f.held is not None]
    if held:
        _hold_all(connection, held)


def _job_values(finish: _Finish, now: Any) -> dict[str, Any]:
    outcome = finish.end.outcome
    final = outcome in (AttemptOutcome.SUCCEEDED, AttemptOutcome.FAILED, AttemptOutcome.CANCELLED)
    return {
        "b_job_id": finish.job_id,
        "b_attempt": finish.attempt,
        "b_status": JOB_STATUS_AFTER[outcome].value,
        "b_error": finish.end.error,
        "b_result": finish.end.result if outcome is AttemptOutcome.SUCCEEDED else None,
        "b_finished_at": now if final else None,
        "b_eta": finish.end.eta if outcome is AttemptOutcome.RETRYING else None,
    }


def _hold_all(connection: Connection, held: Sequence[HeldMessage]) -> None:
    now = utcnow()
    upsert = postgresql.insert(DelayedMessageRow)
    upsert = upsert.on_conflict_do_update(
        index_elements=[DelayedMessageRow.message_id],
        set_={"due_at": upsert.excluded.due_at, "body": upsert.excluded.body, "queue": upsert.excluded.queue},
    )
    connection.execute(
        upsert,
        [
            {
                "message_id": h.message.message_id,
                "queue": h.message.queue_name,
                "due_at": h.due_at,
                "body": h.message.encode(),
                "created_at": now,
            }
            for h in held
        ],
    )
