"""Each transition of the worker side, run against PostgreSQL, SQLite and the batching writer.

The same assertions for every store: the single-row path on PostgreSQL, the same on SQLite
(the demo), and the group-commit writer on PostgreSQL, so that they cannot drift apart.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from sqlalchemy import select

from jobs.status import AttemptOutcome
from jobs.store import AttemptEnd, AttemptStore, Database, JobStore, NewJob, SeenMessage, WorkerIdentity
from jobs.store.batched import BatchedAttemptStore
from jobs.store.dead_letters import DeadJobStore
from jobs.store.delayed import HeldMessage
from jobs.store.migrate import upgrade
from jobs.store.models import DelayedMessageRow

pytestmark = [pytest.mark.integration]

WORKER = WorkerIdentity(worker_id="test:1:abc", host="test", pid=1)


@pytest.fixture(params=["postgresql", "sqlite", "batched"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AttemptStore]:
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'conveyor.db'}")
        upgrade(db)
    else:
        db = Database(request.getfixturevalue("database_url"))
    attempts = BatchedAttemptStore(db) if request.param == "batched" else AttemptStore(db)
    yield attempts
    attempts.close()
    db.dispose()


def seen(job_id: str | None = None) -> SeenMessage:
    return SeenMessage(
        job_id=job_id or str(uuid.uuid4()),
        kind="noop",
        queue="t.default",
        payload={"sleep": 0},
        max_retries=3,
        created_at=datetime.now(UTC),
    )


def history(store: AttemptStore, job_id: str) -> list[tuple[int, str | None]]:
    return [(a.attempt, a.outcome) for a in JobStore(store.db).attempts(job_id)]


def test_a_job_seen_first_by_a_worker_gets_a_running_row_and_its_first_attempt(store: AttemptStore) -> None:
    message = seen()

    started = store.start(message, WORKER)

    assert started is not None
    assert (started.number, started.lost_runs) == (1, 0)
    info = JobStore(store.db).get(message.job_id)
    assert (info.status, info.attempts, info.kind, info.payload) == ("running", 1, "noop", {"sleep": 0})
    assert info.started_at is not None
    assert history(store, message.job_id) == [(1, None)]


def test_a_queued_job_starts_and_a_retrying_one_starts_again(store: AttemptStore) -> None:
    job_id = str(uuid.uuid4())
    JobStore(store.db).create(NewJob(id=job_id, kind="noop", queue="t.default", payload={}, max_retries=3))
    first = store.start(seen(job_id), WORKER)
    assert first is not None
    assert first.number == 1
    eta = datetime.now(UTC) + timedelta(seconds=30)
    store.finish(job_id, 1, AttemptEnd(AttemptOutcome.RETRYING, error="TransientError: x", eta=eta))
    assert JobStore(store.db).get(job_id).eta == eta

    second = store.start(seen(job_id), WORKER)

    assert second is not None
    assert (second.number, second.lost_runs) == (2, 0)
    info = JobStore(store.db).get(job_id)
    assert (info.status, info.attempts, info.eta, info.error) == ("running", 2, None, None)
    assert history(store, job_id) == [(1, "retrying"), (2, None)]


def test_a_running_job_is_not_started_a_second_time(store: AttemptStore) -> None:
    message = seen()
    assert store.start(message, WORKER) is not None

    assert store.start(message, WORKER) is None
    assert JobStore(store.db).get(message.job_id).attempts == 1
    assert history(store, message.job_id) == [(1, None)]


def test_a_take_over_starts_again_only_while_that_attempt_is_the_latest(store: AttemptStore) -> None:
    message = seen()
    assert store.start(message, WORKER) is not None

    taken = store.start(message, WORKER, take_over=1)
    assert store.start(message, WORKER, take_over=1) is None  # taken over already
    assert store.start(message, WORKER, take_over=5) is None  # never its attempt

    assert taken is not None
    assert (taken.number, taken.lost_runs) == (2, 1)
    assert history(store, message.job_id) == [(1, "lost"), (2, None)]
    again = store.start(message, WORKER, take_over=2)
    assert again is not None
    assert (again.number, again.lost_runs) == (3, 2)  # every lost run counts towards giving up


def test_a_finished_job_is_not_taken_over(store: AttemptStore) -> None:
    message = seen()
    assert store.start(message, WORKER) is not None
    store.finish(message.job_id, 1, AttemptEnd(AttemptOutcome.SUCCEEDED, result={"ok": True}))

    assert store.start(message, WORKER, take_over=1) is None
    assert store.start(message, WORKER) is None
    assert JobStore(store.db).get(message.job_id).status == "succeeded"


@pytest.mark.parametrize(
    ("outcome", "status", "final"),
    [
        (AttemptOutcome.SUCCEEDED, "succeeded", True),
        (AttemptOutcome.RETRYING, "retrying", False),
        (AttemptOutcome.FAILED, "failed", True),
        (AttemptOutcome.CANCELLED, "cancelled", True),
        (AttemptOutcome.INTERRUPTED, "retrying", False),
    ],
)
def test_each_end_moves_the_job_by_its_outcome(
    store: AttemptStore, outcome: AttemptOutcome, status: str, final: bool
) -> None:
    message = seen()
    assert store.start(message, WORKER) is not None
    succeeded = outcome is AttemptOutcome.SUCCEEDED
    eta = datetime.now(UTC) + timedelta(minutes=1) if outcome is AttemptOutcome.RETRYING else None
    error = None if succeeded else f"{outcome.value}: x"
    end = AttemptEnd(outcome, result={"n": 1} if succeeded else None, error=error, traceback=error, eta=eta)

    assert store.finish(message.job_id, 1, end) is True

    info = JobStore(store.db).get(message.job_id)
    assert (info.status, info.attempts, info.error, info.eta) == (status, 1, error, eta)
    assert info.result == ({"n": 1} if succeeded else None)
    assert (info.finished_at is not None) is final
    (attempt,) = JobStore(store.db).attempts(message.job_id)
    assert (attempt.outcome, attempt.error, attempt.traceback) == (outcome.value, error, error)
    assert attempt.finished_at is not None


def test_an_end_of_a_stale_attempt_does_not_move_the_job(store: AttemptStore) -> None:
    message = seen()
    assert store.start(message, WORKER) is not None
    assert store.start(message, WORKER, take_over=1) is not None

    moved = store.finish(message.job_id, 1, AttemptEnd(AttemptOutcome.SUCCEEDED, result={}))

    assert moved is False
    info = JobStore(store.db).get(message.job_id)
    assert (info.status, info.attempts, info.result) == ("running", 2, None)
    # The stale attempt's own row says how it really ended.
    assert history(store, message.job_id) == [(1, "succeeded"), (2, None)]


def test_a_second_end_of_a_finished_attempt_does_not_move_the_job(store: AttemptStore) -> None:
    message = seen()
    assert store.start(message, WORKER) is not None
    assert store.finish(message.job_id, 1, AttemptEnd(AttemptOutcome.SUCCEEDED, result={"n": 1})) is True

    assert store.finish(message.job_id, 1, AttemptEnd(AttemptOutcome.FAILED, error="late")) is False
    info = JobStore(store.db).get(message.job_id)
    assert (info.status, info.result, info.error) == ("succeeded", {"n": 1}, None)


def test_an_end_after_an_interruption_was_recorded_still_lands(store: AttemptStore) -> None:
    message = seen()
    assert store.start(message, WORKER) is not None
    store.finish(message.job_id, 1, AttemptEnd(AttemptOutcome.INTERRUPTED, error="WorkerStopped: x"))

    assert store.finish(message.job_id, 1, AttemptEnd(AttemptOutcome.SUCCEEDED, result={})) is True
    assert JobStore(store.db).get(message.job_id).status == "succeeded"


def test_a_retry_is_held_in_the_transaction_of_its_end(store: AttemptStore) -> None:
    message = seen()
    assert store.start(message, WORKER) is not None
    due = datetime.now(UTC) + timedelta(hours=2)
    retry = dramatiq.Message(
        queue_name=message.queue, actor_name="noop", args=(), kwargs={}, options={}, message_id=message.job_id
    )
    end = AttemptEnd(AttemptOutcome.RETRYING, error="TransientError: x", eta=due)

    assert store.finish(message.job_id, 1, end, held=HeldMessage.of(retry, due)) is True

    with store.db.session() as session:
        row = session.execute(
            select(DelayedMessageRow.queue, DelayedMessageRow.due_at).where(
                DelayedMessageRow.message_id == message.job_id
            )
        ).one()
    assert row.queue == message.queue
    assert row.due_at.replace(tzinfo=UTC) == due
    assert JobStore(store.db).get(message.job_id).status == "retrying"


def test_a_cancelled_job_does_not_start_and_a_reopened_one_does(store: AttemptStore) -> None:
    jobs = JobStore(store.db)
    job_id = str(uuid.uuid4())
    jobs.create(NewJob(id=job_id, kind="noop", queue="t.default", payload={}, max_retries=3))

    assert jobs.cancel(job_id) == "cancelled"
    assert store.start(seen(job_id), WORKER) is None
    assert jobs.reopen(job_id) is not None
    assert jobs.reopen(job_id) is None  # queued already: nothing to reopen
    started = store.start(seen(job_id), WORKER)

    assert started is not None
    assert started.number == 1
    assert jobs.get(job_id).status == "running"


def test_a_running_job_is_asked_to_stop_and_its_cancelled_end_can_be_reopened(store: AttemptStore) -> None:
    jobs = JobStore(store.db)
    message = seen()
    assert store.start(message, WORKER) is not None
    assert store.cancel_requested(message.job_id) is False

    assert jobs.cancel(message.job_id) == "requested"
    assert store.cancel_requested(message.job_id) is True
    assert jobs.get(message.job_id).status == "running"
    store.finish(message.job_id, 1, AttemptEnd(AttemptOutcome.CANCELLED, error="JobCancelled: x"))
    assert jobs.cancel(message.job_id) == "cancelled"  # its final status already

    reopened = jobs.reopen(message.job_id)
    assert reopened is not None
    assert (reopened.status, reopened.attempts, reopened.error) == ("queued", 1, None)
    assert store.cancel_requested(message.job_id) is False
    again = store.start(message, WORKER)
    assert again is not None
    assert again.number == 2


# ---------------------------------------------------------------- a short run, written once


def queued(store: AttemptStore, max_retries: int = 3) -> str:
    job_id = str(uuid.uuid4())
    JobStore(store.db).create(
        NewJob(id=job_id, kind="noop", queue="t.default", payload={}, max_retries=max_retries)
    )
    return job_id


def run(
    store: AttemptStore, message: SeenMessage, number: int, began: datetime, end: AttemptEnd, **kw: Any
) -> bool:
    """A whole run written as a worker writes it: batched by the batching store."""
    return store.finish_run_detached(message, WORKER, number, began, end, **kw).result(timeout=30)


def closed_attempts(store: AttemptStore, job_id: str) -> list[tuple[int, str | None, str, bool]]:
    return [
        (a.attempt, a.outcome, a.worker, a.finished_at is not None and a.started_at <= a.finished_at)
        for a in JobStore(store.db).attempts(job_id)
    ]


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (AttemptOutcome.SUCCEEDED, "succeeded"),
        (AttemptOutcome.FAILED, "failed"),
        (AttemptOutcome.RETRYING, "retrying"),
    ],
)
def test_a_short_run_moves_a_waiting_job_to_its_end_and_records_a_closed_attempt(
    store: AttemptStore, outcome: AttemptOutcome, status: str
) -> None:
    job_id = queued(store)
    began = datetime.now(UTC)
    result = {"ok": True} if outcome is AttemptOutcome.SUCCEEDED else None
    error = None if outcome is AttemptOutcome.SUCCEEDED else "ValueError: no"

    moved = run(store, seen(job_id), 1, began, AttemptEnd(outcome, result=result, error=error))

    assert moved
    info = JobStore(store.db).get(job_id)
    assert (info.status, info.attempts, info.result, info.error) == (status, 1, result, error)
    assert info.started_at is not None
    assert info.started_at.replace(tzinfo=UTC) == began
    assert (info.finished_at is not None) is (status != "retrying")
    assert closed_attempts(store, job_id) == [(1, outcome.value, WORKER.worker_id, True)]


def test_a_short_run_after_a_retry_takes_the_next_number(store: AttemptStore) -> None:
    job_id = queued(store)
    run(store, seen(job_id), 1, datetime.now(UTC), AttemptEnd(AttemptOutcome.RETRYING, error="E: x"))

    assert run(store, seen(job_id), 2, datetime.now(UTC), AttemptEnd(AttemptOutcome.SUCCEEDED))

    assert JobStore(store.db).get(job_id).status == "succeeded"
    assert history(store, job_id) == [(1, "retrying"), (2, "succeeded")]


def test_a_short_run_whose_job_was_cancelled_meanwhile_is_recorded_and_the_status_kept(
    store: AttemptStore,
) -> None:
    job_id = queued(store)
    assert JobStore(store.db).cancel(job_id) == "cancelled"  # an admin, as the run began

    moved = run(store, seen(job_id), 1, datetime.now(UTC), AttemptEnd(AttemptOutcome.SUCCEEDED))

    assert not moved
    info = JobStore(store.db).get(job_id)
    assert (info.status, info.attempts) == ("cancelled", 1)
    assert closed_attempts(store, job_id) == [(1, "succeeded", WORKER.worker_id, True)]


def test_a_short_run_with_a_retry_holds_its_message_in_the_same_transaction(store: AttemptStore) -> None:
    job_id = queued(store)
    message = dramatiq.Message(
        queue_name="t.default", actor_name="noop", args=(), kwargs={}, options={}, message_id=job_id
    )
    due = datetime.now(UTC) + timedelta(seconds=30)
    end = AttemptEnd(AttemptOutcome.RETRYING, error="E: x", eta=due)

    run(store, seen(job_id), 1, datetime.now(UTC), end, held=HeldMessage.of(message, due))

    with store.db.session() as session:
        held = session.scalars(
            select(DelayedMessageRow.due_at).where(DelayedMessageRow.message_id == job_id)
        ).all()
    assert [due_at.replace(tzinfo=UTC) for due_at in held] == [due]
    assert JobStore(store.db).get(job_id).status == "retrying"


def test_a_cancel_request_is_seen_on_the_direct_connection_and_through_the_pool(store: AttemptStore) -> None:
    message = seen()
    if store.db.direct is None:
        pytest.skip("SQLite has no direct connection: its one path is the pool's, tested above")
    assert store.start(message, WORKER) is not None
    with store.db.direct.lock:  # busy: the pool answers
        assert store.cancel_requested(message.job_id) is False
    assert store.cancel_requested(message.job_id) is False

    assert JobStore(store.db).cancel(message.job_id) == "requested"
    assert store.cancel_requested(message.job_id) is True
    with store.db.direct.lock:
        assert store.cancel_requested(message.job_id) is True


def test_a_failed_end_marks_the_row_with_its_fingerprint_and_a_later_run_keeps_it(
    store: AttemptStore,
) -> None:
    message = seen()
    assert store.start(message, WORKER) is not None
    store.finish(
        message.job_id, 1, AttemptEnd(AttemptOutcome.FAILED, error="E: x", fingerprint="00ff00ff00ff00ff")
    )
    marked = DeadJobStore(store.db).rows([message.job_id])[message.job_id].group
    JobStore(store.db).reopen(message.job_id)  # `jobs retry`: its dead message stays in the XQ
    assert store.start(message, WORKER) is not None
    store.finish(message.job_id, 2, AttemptEnd(AttemptOutcome.SUCCEEDED, result={}))

    assert marked == "00ff00ff00ff00ff"
    assert DeadJobStore(store.db).rows([message.job_id])[message.job_id].group == marked
    assert DeadJobStore(store.db).reopen(message.job_id) is not None  # requeued from the XQ…
    assert DeadJobStore(store.db).rows([message.job_id])[message.job_id].group == marked  # …not: it succeeded


def test_requeue_and_purge_of_the_dead_message_clear_the_mark_and_an_undone_requeue_restores_it(
    store: AttemptStore,
) -> None:
    message = seen()
    assert store.start(message, WORKER) is not None
    store.finish(
        message.job_id, 1, AttemptEnd(AttemptOutcome.FAILED, error="E: x", fingerprint="00ff00ff00ff00ff")
    )
    dead = DeadJobStore(store.db)

    def mark() -> str | None:
        return dead.rows([message.job_id])[message.job_id].group

    before = dead.reopen(message.job_id)
    requeued = mark()
    assert before is not None
    dead.undo_reopen(message.job_id, before)  # the publish failed: the message stays dead
    undone = mark()
    dead.fail(message.job_id, "purged")

    assert (requeued, undone, mark()) == (None, "00ff00ff00ff00ff", None)
