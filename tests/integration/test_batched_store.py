"""Group commit: the lifecycle's writes of many threads share transactions, with the same results."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dramatiq
import pytest
from sqlalchemy import select

from jobs.status import AttemptOutcome
from jobs.store import AttemptEnd, Database, JobStore, SeenMessage, WorkerIdentity
from jobs.store.batched import BatchedAttemptStore
from jobs.store.delayed import HeldMessage
from jobs.store.models import DelayedMessageRow
from tests.helpers import seen_noop

pytestmark = [pytest.mark.integration]

WORKER = WorkerIdentity(worker_id="test:1:abc", host="test", pid=1)


@pytest.fixture
def store(database_url: str) -> Iterator[BatchedAttemptStore]:
    db = Database(database_url)
    batched = BatchedAttemptStore(db)
    yield batched
    batched.close()
    db.dispose()


def seen(namespace: str) -> SeenMessage:
    return seen_noop(f"{namespace}.default")


def test_many_threads_start_and_finish_jobs_in_shared_batches(
    store: BatchedAttemptStore, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="conveyor.store")
    messages = [seen(namespace) for _ in range(400)]
    outcomes: dict[str, AttemptOutcome] = {}

    def run(share: list[SeenMessage]) -> None:
        for n, message in enumerate(share):
            started = store.start(message, WORKER)
            assert started is not None
            assert started.number == 1
            outcome = AttemptOutcome.SUCCEEDED if n % 3 else AttemptOutcome.RETRYING
            end = AttemptEnd(outcome, result={"n": n}, error=None if n % 3 else "TransientError: x")
            store.finish(message.job_id, started.number, end)
            outcomes[message.job_id] = outcome

    threads = [threading.Thread(target=run, args=(messages[i::16],)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    jobs = JobStore(store.db)
    infos = {info.id: info for info in jobs.by_ids(m.job_id for m in messages)}
    assert len(infos) == 400
    for job_id, outcome in outcomes.items():
        info = infos[job_id]
        assert info.attempts == 1
        if outcome is AttemptOutcome.SUCCEEDED:
            assert info.status == "succeeded"
            assert info.result is not None
            assert info.finished_at is not None
        else:
            assert info.status == "retrying"
            assert info.error == "TransientError: x"
            assert info.finished_at is None
        assert [a.outcome for a in jobs.attempts(job_id)] == [outcome.value]
    # Every batch went through whole: none fell back to one-by-one writes.
    assert "one by one" not in caplog.text


def test_a_finished_job_is_not_started_again_and_a_second_run_marks_the_lost_one(
    store: BatchedAttemptStore, namespace: str
) -> None:
    message = seen(namespace)
    first = store.start(message, WORKER)
    assert first is not None
    assert store.start(message, WORKER) is None  # running: a copy of its message does not start it
    second = store.start(message, WORKER, take_over=1)  # a redelivery after the first worker died
    assert second is not None
    assert (second.number, second.lost_runs) == (2, 1)
    store.finish(message.job_id, 2, AttemptEnd(AttemptOutcome.SUCCEEDED, result={}))

    assert store.start(message, WORKER) is None
    outcomes = [a.outcome for a in JobStore(store.db).attempts(message.job_id)]
    assert outcomes == ["lost", "succeeded"]


def test_a_retry_is_held_in_the_transaction_of_its_attempt_end(
    store: BatchedAttemptStore, namespace: str
) -> None:
    message = seen(namespace)
    started = store.start(message, WORKER)
    assert started is not None
    due = datetime.now(UTC) + timedelta(hours=2)
    retry = dramatiq.Message(
        queue_name=message.queue, actor_name="noop", args=(), kwargs={}, options={}, message_id=message.job_id
    )
    store.finish(
        message.job_id,
        started.number,
        AttemptEnd(AttemptOutcome.RETRYING, error="TransientError: x", eta=due),
        held=HeldMessage.of(retry, due),
    )

    with store.db.session() as session:
        row = session.get(DelayedMessageRow, message.job_id)
        assert row is not None
        assert row.due_at == due
        assert (
            session.scalar(
                select(DelayedMessageRow.queue).where(DelayedMessageRow.message_id == message.job_id)
            )
            == message.queue
        )
    assert JobStore(store.db).get(message.job_id).eta == due


AWKWARD_TEXTS = ['say "hi"', "C:\\temp\\", "a,b", "{x}", "NULL", "", " padded ", "line\nbreak", "ü ✓", '\\"']


def test_batch_values_reach_postgresql_as_they_were(database_url: str) -> None:
    """A batch's arrays travel as one literal each (``steps.array_literal``): every text, time,
    number, flag and missing value comes back from PostgreSQL exactly as it was sent."""
    import psycopg

    from jobs.store.steps import array_literal

    texts: list[str | None] = [*AWKWARD_TEXTS, None]
    times = [datetime(2026, 12, 7, 12, 0, 0, 123456, tzinfo=UTC), None, datetime(1999, 1, 1, tzinfo=UTC)]
    with psycopg.connect(database_url.replace("+psycopg", "")) as pg:
        row = pg.execute(
            "SELECT %s::text[], %s::timestamptz[], %s::int[], %s::bool[]",
            (
                array_literal(texts),
                array_literal(times),
                array_literal([1, None, -3]),
                array_literal([True, False]),
            ),
        ).fetchone()
    assert row == (texts, times, [1, None, -3], [True, False])


def test_a_batch_of_ends_stores_awkward_errors_exactly(store: BatchedAttemptStore, namespace: str) -> None:
    messages = [seen(namespace) for _ in AWKWARD_TEXTS]
    started = [store.start(message, WORKER) for message in messages]
    errors = dict(zip((m.job_id for m in messages), AWKWARD_TEXTS, strict=True))
    threads = [
        threading.Thread(
            target=store.finish,
            args=(
                m.job_id,
                s.number,
                AttemptEnd(AttemptOutcome.RETRYING, error=errors[m.job_id], traceback=errors[m.job_id]),
            ),
        )
        for m, s in zip(messages, started, strict=True)
        if s is not None
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    jobs = JobStore(store.db)
    assert {info.id: info.error for info in jobs.by_ids(errors)} == errors
