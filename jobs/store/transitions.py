"""The worker side's writes that move a job, each defined once.

A transition is a few statements run in one transaction, each built once with SQLAlchemy
Core, its guard (``WHERE status IN …``) and its target taken from ``jobs.status.TRANSITIONS``
(``jobs/store/steps.py`` compiles each for psycopg too). A write takes a ``Run``, runs its
statements in the caller's transaction, and returns a function that reads its result once
that transaction is done: the single-row path and the SQLite demo run them through a
SQLAlchemy connection (``AttemptStore``), and the table's guards are the batching writer's
too (``jobs/store/batched.py``).

No statement takes its parameters from an earlier one's result, so that the statements of
many writes could be sent without waiting: an attempt row is opened from the job row that
the start just moved (read back in the same transaction), not from a returned number.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, and_, exists, func, insert, literal, null, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql import ColumnElement

from jobs.status import END_EVENTS, AttemptOutcome, Event, JobStatus, sources, target
from jobs.store.delayed import HOLD, HeldMessage, held_params
from jobs.store.models import AttemptRow, JobRow
from jobs.store.steps import Run, Step, param, step


@dataclass(frozen=True)
class WorkerIdentity:
    """Who runs an attempt."""

    worker_id: str
    host: str
    pid: int


@dataclass(frozen=True)
class SeenMessage:
    """What the worker knows of a job from its message alone."""

    job_id: str
    kind: str
    queue: str
    payload: dict[str, Any]
    max_retries: int | None
    created_at: datetime


@dataclass(frozen=True)
class StartedAttempt:
    number: int
    #: Runs of this job that ended with their worker dying (a poison message kills workers).
    lost_runs: int


@dataclass(frozen=True)
class AttemptEnd:
    """How an attempt ended."""

    outcome: AttemptOutcome
    result: dict[str, Any] | None = None
    error: str | None = None
    traceback: str | None = None
    #: When a retry is due.
    eta: datetime | None = None


#: A job's result: no result is SQL NULL on every path (SQLAlchemy's JSON would store ``null``).
_JSON_OR_NULL = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _status_in(statuses: Collection[JobStatus]) -> ColumnElement[bool]:
    # Literals, not an expanding IN: the statement compiles once to plain SQL.
    return JobRow.status.in_([literal(status.value, String) for status in sorted(statuses)])


# ---------------------------------------------------------------- start


def _start_statement(event: Event) -> Step:
    """The job row ``running``: inserted on first sight, else moved when the event allows it."""
    insert_ = postgresql.insert(JobRow).values(
        id=param("job", JobRow.id.type),
        kind=param("job_kind", JobRow.kind.type),
        queue=param("job_queue", JobRow.queue.type),
        status=target(Event.START).value,
        payload=param("job_payload", JobRow.payload.type),
        attempts=1,
        max_retries=param("job_max_retries", Integer()),
        created_at=param("job_created_at", JobRow.created_at.type),
        started_at=param("now", JobRow.started_at.type),
    )
    guard = _status_in(sources(event))
    if event is Event.TAKE_OVER:  # only while the attempt whose worker is gone is still the latest
        guard = and_(guard, JobRow.attempts == param("take_over", Integer()))
    return step(
        insert_.on_conflict_do_update(
            index_elements=[JobRow.id],
            set_={
                JobRow.status: target(event).value,
                JobRow.attempts: JobRow.attempts + 1,
                JobRow.started_at: insert_.excluded.started_at,
                JobRow.eta: null(),
                JobRow.error: null(),
            },
            where=guard,
        )
    )


START = _start_statement(Event.START)
TAKE_OVER = _start_statement(Event.TAKE_OVER)

#: The attempt row of a start that moved the job: the job is ``running`` since this very
#: start (``started_at``) and has no row yet for its attempt number.
OPEN_ATTEMPT = step(
    insert(AttemptRow)
    .from_select(
        ["job_id", "attempt", "worker", "host", "pid", "started_at"],
        select(
            JobRow.id,
            JobRow.attempts,
            param("worker_id", String()),
            param("worker_host", String()),
            param("worker_pid", Integer()),
            param("now", JobRow.started_at.type),
        ).where(
            JobRow.id == param("job", JobRow.id.type),
            JobRow.status == target(Event.START).value,
            JobRow.started_at == param("now", JobRow.started_at.type),
            ~exists().where(AttemptRow.job_id == JobRow.id, AttemptRow.attempt == JobRow.attempts),
        ),
    )
    .returning(AttemptRow.attempt)
)


def start(
    run: Run, seen: SeenMessage, worker: WorkerIdentity, now: datetime, *, take_over: int | None = None
) -> Callable[[], int | None]:
    """Move the job to ``running`` and open its attempt row; reads the attempt's number (None
    when the job must not start: finished, cancelled, running, or moved since ``take_over``)."""
    params = {
        "job": seen.job_id,
        "job_kind": seen.kind,
        "job_queue": seen.queue,
        "job_payload": seen.payload,
        "job_max_retries": seen.max_retries,
        "job_created_at": seen.created_at,
        "now": now,
        "take_over": take_over,
        "worker_id": worker.worker_id,
        "worker_host": worker.host,
        "worker_pid": worker.pid,
    }
    run(START if take_over is None else TAKE_OVER, params)
    opened = run(OPEN_ATTEMPT, params)
    return lambda: next((int(row[0]) for row in opened.rows()), None)


# ---------------------------------------------------------------- lost runs

WORKER_LOST = "worker lost mid-run"

#: Attempts still open below a number (their worker died mid-run) closed as ``lost``.
MARK_LOST = step(
    update(AttemptRow)
    .where(
        AttemptRow.job_id == param("job", AttemptRow.job_id.type),
        AttemptRow.finished_at.is_(None),
        AttemptRow.attempt < param("before", Integer()),
    )
    .values(
        outcome=AttemptOutcome.LOST.value,
        finished_at=param("now", AttemptRow.finished_at.type),
        error=param("lost_error", String()),
    )
)
COUNT_LOST = step(
    select(func.count()).where(
        AttemptRow.job_id == param("job", AttemptRow.job_id.type),
        AttemptRow.outcome == AttemptOutcome.LOST.value,
    )
)


def mark_lost(
    run: Run, job_id: str, before: int, now: datetime, *, error: str = WORKER_LOST
) -> Callable[[], int]:
    """Close the job's attempts still open below ``before`` as ``lost``; reads how many runs of
    the job were lost so far if this closed any, else 0 (nothing new to count against it)."""
    params = {"job": job_id, "before": before, "now": now, "lost_error": error}
    marked = run(MARK_LOST, params)
    counted = run(COUNT_LOST, params)
    return lambda: int(counted.rows()[0][0]) if marked.count() else 0


# ---------------------------------------------------------------- end

CLOSE_ATTEMPT = step(
    update(AttemptRow)
    .where(
        AttemptRow.job_id == param("job", AttemptRow.job_id.type),
        AttemptRow.attempt == param("number", Integer()),
    )
    .values(
        outcome=param("end_outcome", String()),
        finished_at=param("now", AttemptRow.finished_at.type),
        error=param("end_error", String()),
        traceback=param("end_traceback", String()),
    )
)


def _end_statement(event: Event) -> Step:
    """The job moved by its attempt's end, only while that attempt is its latest."""
    final = target(event).is_final
    return step(
        update(JobRow)
        .where(
            JobRow.id == param("job", JobRow.id.type),
            JobRow.attempts == param("number", Integer()),
            _status_in(sources(event)),
        )
        .values(
            status=target(event).value,
            error=param("end_error", String()),
            result=param("end_result", _JSON_OR_NULL) if event is Event.SUCCEED else null(),
            finished_at=param("now", JobRow.finished_at.type) if final else null(),
            eta=param("end_eta", JobRow.eta.type) if event is Event.RETRY else null(),
        )
    )


#: One statement per outcome, its target status and guard from the table.
END_JOB = {outcome: _end_statement(event) for outcome, event in END_EVENTS.items()}


def end(
    run: Run, job_id: str, attempt: int, ending: AttemptEnd, now: datetime, *, held: HeldMessage | None = None
) -> Callable[[], bool]:
    """Close the attempt and move the job on, with the retry's held message if any; reads whether
    the job moved (not when a newer attempt has started meanwhile)."""
    params = {
        "job": job_id,
        "number": attempt,
        "end_outcome": ending.outcome.value,
        "now": now,
        "end_error": ending.error,
        "end_traceback": ending.traceback,
        "end_result": ending.result,
        "end_eta": ending.eta,
    }
    run(CLOSE_ATTEMPT, params)
    moved = run(END_JOB[ending.outcome], params)
    if held is not None:
        run(HOLD, held_params(held, now))
    return lambda: moved.count() > 0
