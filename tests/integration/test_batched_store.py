"""Group commit: the lifecycle's writes of many threads share transactions, with the same results."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import pytest
from sqlalchemy import select

from jobs.ids import new_job_ids
from jobs.status import AttemptOutcome
from jobs.store import AttemptEnd, Database, JobStore, NewJob, SeenMessage, WorkerIdentity
from jobs.store.batched import BatchedAttemptStore
from jobs.store.delayed import HeldMessage
from jobs.store.direct import DirectConnection
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


def test_batched_writes_find_their_jobs_by_id_whatever_the_backlog(
    store: BatchedAttemptStore, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With statistics taken before a backlog arrived, PostgreSQL once read the status index
    for the guard of each write (``status IN ('queued', …)``) and with it the entry of every
    queued job: a cost that grew with the backlog. Every write must go by the job's id alone."""
    jobs, queue = JobStore(store.db), f"{namespace}.default"
    with store.db.transaction() as connection:
        connection.exec_driver_sql("ANALYZE jobs")  # the statistics: before the backlog
    backlog = [NewJob(id=i, kind="noop", queue=queue, payload={}, max_retries=0) for i in new_job_ids(5_000)]
    jobs.create_many(backlog)
    plans: list[str] = []
    batches = 0
    fetch = DirectConnection.fetch

    def explained(self: DirectConnection, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        nonlocal batches
        if "jobs" in sql and not sql.lstrip().upper().startswith("SELECT"):
            batches += "unnest" in sql  # the form of a batch of several jobs
            plans.append("\n".join(line for (line,) in fetch(self, f"EXPLAIN {sql}", params)))
        return fetch(self, sql, params)

    def run(share: list[NewJob]) -> None:
        for job in share:
            started = store.start(seen_noop(queue, job.id), WORKER)
            assert started is not None
            assert store.finish(job.id, started.number, AttemptEnd(AttemptOutcome.SUCCEEDED, result={}))

    monkeypatch.setattr(DirectConnection, "fetch", explained)
    try:
        # Threads at once: their starts and ends share batches, the statements' many-row form.
        threads = [threading.Thread(target=run, args=(backlog[i:80:8],)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [info.status for info in jobs.by_ids(job.id for job in backlog[:80])] == ["succeeded"] * 80
    finally:
        monkeypatch.undo()
        with store.db.transaction() as connection:
            connection.exec_driver_sql("DELETE FROM jobs WHERE queue = %(queue)s", {"queue": queue})

    assert plans, "no write went through the direct connection"
    assert batches, "no batch of several jobs"
    scans = [line.strip() for plan in plans for line in plan.splitlines() if "Index Scan" in line]
    assert any("pkey" in scan for scan in scans)
    assert [scan for scan in scans if "status" in scan] == []
