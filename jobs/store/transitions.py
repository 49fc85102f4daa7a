"""The worker side's writes that move a job, each defined once.

A transition is a few statements run in one transaction, each built once with SQLAlchemy
Core, its guard (``WHERE status IN …``) and its target taken from ``jobs.status.TRANSITIONS``
(``jobs/store/steps.py`` compiles each for psycopg too). Each statement is built by one
function from a row source (``steps.Rows``): one job's bound parameters, or a batch's arrays
under ``unnest``. The single-row path and the SQLite demo run them one statement at a time
through a SQLAlchemy connection (``AttemptStore``): a write takes a ``Run`` and returns a
function that reads its result once the transaction is done. The batching writer
(``jobs/store/batched.py``) runs the same builders joined in a ``WITH`` (PostgreSQL only):
one statement per batch for the starts (:data:`START_BATCH`) and one for the ends
(:data:`END_BATCH`), each also compiled without ``unnest`` for a batch of one job.

In the single-row path no statement takes its parameters from an earlier one's result: an
attempt row is opened from the job row that the start just moved (read back in the same
transaction), not from a returned number.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Integer,
    String,
    Text,
    and_,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    null,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql import ColumnElement, Delete, FromClause, Insert, Update

from jobs.crypto import Sealer
from jobs.status import END_EVENTS, AttemptOutcome, Event, JobStatus, sources, target
from jobs.store.delayed import HOLD, HeldMessage, held_params
from jobs.store.steps import Rows, Run, batch, one_row, param, step
from jobs.store.tables import Attempts, Claims, Jobs


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
    #: The W3C trace id the attempt runs under (``jobs/tracing.py``), kept on its attempt row.
    trace_id: str | None = None


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
    #: A failed end's error fingerprint key (``jobs.fingerprint``): its message is dead-lettered,
    #: and the job row keeps the key (``dead_fingerprint``) for the dashboard's groups.
    fingerprint: str | None = None


#: A job's result: no result is SQL NULL on every path (SQLAlchemy's JSON would store ``null``).
_JSON_OR_NULL = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _one_of(value: ColumnElement[str], choices: Collection[str]) -> ColumnElement[bool]:
    # Literals, not an expanding IN: the statement compiles once to plain SQL.
    return value.in_([literal(choice, String) for choice in sorted(choices)])


def _status_in(statuses: Collection[JobStatus]) -> ColumnElement[bool]:
    # A guard on the status of rows the statement finds by id: compared as ``status || ''``, which
    # no index holds, so that PostgreSQL never reads the status index for it. With statistics
    # taken before a backlog arrived (few rows `queued`, they said), it combined that index with
    # the primary key's and read the entry of every queued job on each write: 0.4 ms of a batched
    # end's 0.6 with 20,000 jobs queued, and more with every job added (docs/performance).
    return _one_of(Jobs.status.op("||")(literal_column("''")), [status.value for status in statuses])


# ---------------------------------------------------------------- start

#: A start's per-job values (``now`` is one for the whole write).
START_COLUMNS: dict[str, Any] = {
    "job": Jobs.id.type,
    "job_kind": Jobs.kind.type,
    "job_queue": Jobs.queue.type,
    "job_payload": Jobs.payload.type,
    "job_max_retries": Integer(),
    "job_created_at": Jobs.created_at.type,
    "worker_id": String(),
    "worker_host": String(),
    "worker_pid": Integer(),
    "trace_id": Attempts.trace_id.type,
}
_NOW = {"now": Jobs.started_at.type}


def _upsert_job(rows: Rows, event: Event) -> Insert:
    """The job row ``running``: inserted on first sight, else moved when the event allows it."""
    c = rows.c
    insert_ = rows.insert(
        postgresql.insert(Jobs),
        {
            "id": c["job"],
            "kind": c["job_kind"],
            "queue": c["job_queue"],
            "status": target(Event.START).value,
            "payload": c["job_payload"],
            "attempts": 1,
            "max_retries": c["job_max_retries"],
            "created_at": c["job_created_at"],
            "started_at": c["now"],
        },
    )
    guard = _status_in(sources(event))
    if event is Event.TAKE_OVER:  # only while the attempt whose worker is gone is still the latest
        guard = and_(guard, Jobs.attempts == param("take_over", Integer()))
    return insert_.on_conflict_do_update(
        index_elements=[Jobs.id],
        set_={
            Jobs.status: target(event).value,
            Jobs.attempts: Jobs.attempts + 1,
            Jobs.started_at: insert_.excluded.started_at,
            Jobs.eta: null(),
            Jobs.error: null(),
        },
        where=guard,
    )


def _open_attempt(rows: Rows, moved: FromClause, *where: ColumnElement[bool]) -> Insert:
    """The attempt row of each job in ``moved`` (id, attempts): the jobs this start moved."""
    c = rows.c
    return (
        insert(Attempts)
        .from_select(
            ["job_id", "attempt", "worker", "host", "pid", "started_at", "trace_id"],
            select(
                moved.c.id,
                moved.c.attempts,
                c["worker_id"],
                c["worker_host"],
                c["worker_pid"],
                c["now"],
                c["trace_id"],
            ).where(moved.c.id == c["job"], *where),
        )
        .returning(Attempts.job_id, Attempts.attempt)
    )


def _start_at_once(rows: Rows) -> Insert:
    """A start in one statement (PostgreSQL): the attempts opened from the upsert's own rows."""
    moved = _upsert_job(rows, Event.START).returning(Jobs.id, Jobs.attempts).cte("moved")
    return _open_attempt(rows, moved).add_cte(moved)


_ONE = one_row(START_COLUMNS, scalars=_NOW)
START = step(_upsert_job(_ONE, Event.START))
TAKE_OVER = step(_upsert_job(_ONE, Event.TAKE_OVER))

#: The attempt row of a start that moved the job, in a statement of its own (SQLite has no
#: writes in ``WITH``): the job is ``running`` since this very start (``started_at``) and has
#: no row yet for its attempt number.
_JOBS = Jobs.__table__
OPEN_ATTEMPT = step(
    _open_attempt(
        _ONE,
        _JOBS,
        Jobs.status == target(Event.START).value,
        Jobs.started_at == _ONE.c["now"],
        ~exists().where(Attempts.job_id == Jobs.id, Attempts.attempt == Jobs.attempts),
    )
)

#: The same start for the batching writer: one statement for a batch (each row's job id and
#: attempt number returned for those that started).
START_BATCH = batch(_start_at_once, START_COLUMNS, scalars=_NOW)


def start_values(seen: SeenMessage, worker: WorkerIdentity) -> dict[str, Any]:
    """A start's per-job values (:data:`START_COLUMNS`)."""
    return {
        "job": seen.job_id,
        "job_kind": seen.kind,
        "job_queue": seen.queue,
        "job_payload": seen.payload,
        "job_max_retries": seen.max_retries,
        "job_created_at": seen.created_at,
        "worker_id": worker.worker_id,
        "worker_host": worker.host,
        "worker_pid": worker.pid,
        "trace_id": seen.trace_id,
    }


def start(
    run: Run, seen: SeenMessage, worker: WorkerIdentity, now: datetime, *, take_over: int | None = None
) -> Callable[[], int | None]:
    """Move the job to ``running`` and open its attempt row; reads the attempt's number (None
    when the job must not start: finished, cancelled, running, or moved since ``take_over``)."""
    params = {**start_values(seen, worker), "now": now, "take_over": take_over}
    run(START if take_over is None else TAKE_OVER, params)
    opened = run(OPEN_ATTEMPT, params)
    return lambda: next((int(row[1]) for row in opened.rows()), None)


# ---------------------------------------------------------------- lost runs

WORKER_LOST = "worker lost mid-run"

#: Attempts still open below a number (their worker died mid-run) closed as ``lost``.
MARK_LOST = step(
    update(Attempts)
    .where(
        Attempts.job_id == param("job", Attempts.job_id.type),
        Attempts.finished_at.is_(None),
        Attempts.attempt < param("before", Integer()),
    )
    .values(
        outcome=AttemptOutcome.LOST.value,
        finished_at=param("now", Attempts.finished_at.type),
        error=param("lost_error", String()),
    )
)
COUNT_LOST = step(
    select(func.count()).where(
        Attempts.job_id == param("job", Attempts.job_id.type),
        Attempts.outcome == AttemptOutcome.LOST.value,
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

#: An end's per-job values (``now`` is one for the whole write).
END_COLUMNS: dict[str, Any] = {
    "job": Jobs.id.type,
    "number": Integer(),
    "end_outcome": String(),
    "end_error": Text(),
    "end_traceback": Text(),
    "end_result": _JSON_OR_NULL,
    "end_eta": Jobs.eta.type,
    "end_fingerprint": Jobs.dead_fingerprint.type,
}
_FINISHED = {Attempts.finished_at.key: Attempts.finished_at.type}
# Every end has the same guard: the job is still on this attempt, in a status an end may move.
(_END_SOURCES,) = {sources(event) for event in END_EVENTS.values()}


def _close_attempt(rows: Rows) -> Update:
    c = rows.c
    return (
        update(Attempts)
        .where(Attempts.job_id == c["job"], Attempts.attempt == c["number"])
        .values(
            outcome=c["end_outcome"], finished_at=c["now"], error=c["end_error"], traceback=c["end_traceback"]
        )
    )


def _outcomes(events: Callable[[Event], bool]) -> list[str]:
    return list(outcome.value for outcome, event in END_EVENTS.items() if events(event))


def _ended(rows: Rows) -> dict[str, Any]:
    """What an end writes on its job: the target status, and which values an end keeps, by
    outcome from the table."""
    c = rows.c
    outcome = c["end_outcome"]
    return {
        "status": case(
            {literal(o.value): literal(target(e).value) for o, e in END_EVENTS.items()}, value=outcome
        ),
        "error": c["end_error"],
        "result": case((outcome == AttemptOutcome.SUCCEEDED.value, c["end_result"]), else_=null()),
        "finished_at": case(
            (_one_of(outcome, _outcomes(lambda e: target(e).is_final)), c["now"]), else_=null()
        ),
        "eta": case((_one_of(outcome, _outcomes(lambda e: e is Event.RETRY)), c["end_eta"]), else_=null()),
        # A failed end dead-letters the message: its group. Any other end leaves the mark, as
        # a message dead-lettered before (the job then run again by `jobs retry`) stays there.
        "dead_fingerprint": case(
            (outcome == AttemptOutcome.FAILED.value, c["end_fingerprint"]), else_=Jobs.dead_fingerprint
        ),
    }


def _end_job(rows: Rows) -> Update:
    """The job moved by its attempt's end, only while that attempt is its latest."""
    c = rows.c
    return (
        update(Jobs)
        .where(Jobs.id == c["job"], *rows.pruning(Jobs.id, "job"))
        .where(Jobs.attempts == c["number"], _status_in(_END_SOURCES))
        .values(_ended(rows))
    )


def _end_at_once(rows: Rows) -> Update:
    """An end in one statement (PostgreSQL): the attempt closed in a ``WITH`` beside the job's move;
    returns the ids of the jobs that moved."""
    closed = _close_attempt(rows).cte("closed")
    return _end_job(rows).add_cte(closed).returning(Jobs.id)


_ONE_END = one_row(END_COLUMNS, scalars=_NOW)
CLOSE_ATTEMPT = step(_close_attempt(_ONE_END))
END_JOB = step(_end_job(_ONE_END))
#: The same end for the batching writer: one statement for a batch (its arrays unnested once,
#: read by the attempt's close and the job's move).
END_BATCH = batch(_end_at_once, END_COLUMNS, scalars=_NOW, once=True)


def end_values(job_id: str, attempt: int, ending: AttemptEnd) -> dict[str, Any]:
    """An end's per-job values (:data:`END_COLUMNS`)."""
    return {
        "job": job_id,
        "number": attempt,
        "end_outcome": ending.outcome.value,
        "end_error": ending.error,
        "end_traceback": ending.traceback,
        "end_result": ending.result,
        "end_eta": ending.eta,
        "end_fingerprint": ending.fingerprint,
    }


# ---------------------------------------------------------------- a short run, start and end at once

#: A short run's per-job values: its start (the attempt number it takes and when it began) and
#: its end; ``now`` is when it ended (one for the whole write).
RUN_COLUMNS: dict[str, Any] = {
    "job": Jobs.id.type,
    "number": Integer(),
    "run_started_at": Jobs.started_at.type,
    "worker_id": String(),
    "worker_host": String(),
    "worker_pid": Integer(),
    "trace_id": Attempts.trace_id.type,
    **{name: type_ for name, type_ in END_COLUMNS.items() if name.startswith("end_")},
}


def _run_job(rows: Rows) -> Update:
    """The job moved by a whole short run: ``START``'s guard (waiting to run, and still at the
    attempt before this one), ``END``'s target and values, by outcome from the table."""
    c = rows.c
    return (
        update(Jobs)
        .where(Jobs.id == c["job"], *rows.pruning(Jobs.id, "job"))
        .where(Jobs.attempts == c["number"] - 1, _status_in(sources(Event.START)))
        .values({**_ended(rows), "attempts": c["number"], "started_at": c["run_started_at"]})
    )


#: The columns of a closed attempt row, as a run writes it.
_RECORDED_RUN_COLUMNS = [
    *("job_id", "attempt", "worker", "host", "pid", "started_at", "trace_id"),
    *("outcome", "finished_at", "error", "traceback"),
]


def _record_run(rows: Rows, moved: FromClause, *where: ColumnElement[bool]) -> Insert:
    """The closed attempt row of each job in ``moved`` (id, attempts): the jobs the run moved."""
    c = rows.c
    return (
        insert(Attempts)
        .from_select(
            _RECORDED_RUN_COLUMNS,
            select(
                moved.c.id,
                moved.c.attempts,
                c["worker_id"],
                c["worker_host"],
                c["worker_pid"],
                c["run_started_at"],
                c["trace_id"],
                c["end_outcome"],
                c["now"],
                c["end_error"],
                c["end_traceback"],
            ).where(moved.c.id == c["job"], *where),
        )
        .returning(Attempts.job_id)
    )


def _unmark(rows: Rows) -> Delete:
    """The claim row of each job whose run is recorded (``jobs/store/claims.py``)."""
    return delete(Claims).where(Claims.job_id == rows.c["job"])


def _run_at_once(rows: Rows) -> Insert:
    """A short run in one statement (PostgreSQL): its attempt row written from the job's move,
    and its claim row deleted beside them."""
    moved = _run_job(rows).returning(Jobs.id, Jobs.attempts).cte("moved")
    return _record_run(rows, moved).add_cte(moved, _unmark(rows).cte("unmarked"))


_ONE_RUN = one_row(RUN_COLUMNS, scalars=_NOW)
RUN_JOB = step(_run_job(_ONE_RUN))
#: The attempt row of a run that moved the job, in a statement of its own (SQLite): the job is
#: at this attempt since this very run (``started_at``) and has no row yet for it.
RECORD_RUN = step(
    _record_run(
        _ONE_RUN,
        _JOBS,
        Jobs.attempts == _ONE_RUN.c["number"],
        Jobs.started_at == _ONE_RUN.c["run_started_at"],
        ~exists().where(Attempts.job_id == Jobs.id, Attempts.attempt == Jobs.attempts),
    )
)
#: The claim row of a job whose run is recorded (the same statement as the batch's).
UNMARK = step(_unmark(_ONE_RUN))
#: The same run for the batching writer: one statement for a batch (the ids of the jobs it moved).
RUN_BATCH = batch(_run_at_once, RUN_COLUMNS, scalars=_NOW, once=True)


def run_values(
    seen: SeenMessage, worker: WorkerIdentity, number: int, started_at: datetime, ending: AttemptEnd
) -> dict[str, Any]:
    """A short run's per-job values (:data:`RUN_COLUMNS`)."""
    return {
        **end_values(seen.job_id, number, ending),
        "run_started_at": started_at,
        "worker_id": worker.worker_id,
        "worker_host": worker.host,
        "worker_pid": worker.pid,
        "trace_id": seen.trace_id,
    }


def run(
    run_: Run,
    seen: SeenMessage,
    worker: WorkerIdentity,
    number: int,
    started_at: datetime,
    ending: AttemptEnd,
    now: datetime,
    *,
    held: HeldMessage | None = None,
    sealer: Sealer,
) -> Callable[[], bool]:
    """Record a short run whose start was not written: the job moves from waiting to the end's
    status and gets its closed attempt row, in one write, with the retry's held message if any.
    Reads whether the job moved (not when it left the attempt before ``number``, or waiting: an
    admin cancelled it as it began). ``ending`` comes sealed; ``sealer`` seals the held message."""
    params = {**run_values(seen, worker, number, started_at, ending), "now": now}
    moved = run_(RUN_JOB, params)
    run_(RECORD_RUN, params)
    run_(UNMARK, params)
    if held is not None:
        run_(HOLD, held_params(held, now, sealer=sealer))
    return lambda: moved.count() > 0


#: A run whose job moved while it ran (an admin cancelled the waiting job as the run began): no
#: status changes, but the attempt counts and gets its row, numbered after the job's latest.
COUNT_STRAY_RUN = step(update(Jobs).where(Jobs.id == _ONE_RUN.c["job"]).values(attempts=Jobs.attempts + 1))
RECORD_STRAY_RUN = step(
    _record_run(
        _ONE_RUN,
        _JOBS,
        ~exists().where(Attempts.job_id == Jobs.id, Attempts.attempt == Jobs.attempts),
    )
)


def record_stray_run(
    run_: Run,
    seen: SeenMessage,
    worker: WorkerIdentity,
    started_at: datetime,
    ending: AttemptEnd,
    now: datetime,
) -> None:
    """Record a run that :func:`run` could not (its job left waiting meanwhile), status unchanged."""
    params = {**run_values(seen, worker, 0, started_at, ending), "now": now}
    run_(COUNT_STRAY_RUN, params)
    run_(RECORD_STRAY_RUN, params)
    run_(UNMARK, params)


def record_lost_run(
    run_: Run, seen: SeenMessage, worker: WorkerIdentity, started_at: datetime, now: datetime
) -> Callable[[], int]:
    """Record as ``lost`` a run started without a write whose worker died (its claim row was
    left behind); reads how many runs of the job were lost so far."""
    record_stray_run(run_, seen, worker, started_at, AttemptEnd(AttemptOutcome.LOST, error=WORKER_LOST), now)
    counted = run_(COUNT_LOST, {"job": seen.job_id})
    return lambda: int(counted.rows()[0][0])


def end(
    run: Run,
    job_id: str,
    attempt: int,
    ending: AttemptEnd,
    now: datetime,
    *,
    held: HeldMessage | None = None,
    sealer: Sealer,
) -> Callable[[], bool]:
    """Close the attempt and move the job on, with the retry's held message if any; reads whether
    the job moved (not when a newer attempt has started meanwhile). ``ending`` comes sealed
    (``AttemptStore``); ``sealer`` seals the held message."""
    params = {**end_values(job_id, attempt, ending), "now": now}
    run(CLOSE_ATTEMPT, params)
    moved = run(END_JOB, params)
    if held is not None:
        run(HOLD, held_params(held, now, sealer=sealer))
    return lambda: moved.count() > 0
