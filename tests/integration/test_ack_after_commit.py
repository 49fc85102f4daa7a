"""A job's end is written without its worker thread waiting; its message is settled only once it lands.

Real RabbitMQ and PostgreSQL: the acknowledgement waits for the write of the end, never goes
out when that write is lost, and a write that meets an outage is kept until the database is back.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import Future
from typing import Any

import dramatiq
import pytest

from jobs.broker import build_broker
from jobs.consumer import ack_after
from jobs.errors import ServiceUnavailable
from jobs.settings import Settings
from jobs.status import AttemptOutcome
from jobs.store import AttemptEnd, Database, JobStore, WorkerIdentity
from jobs.store.batched import BatchedAttemptStore
from producers import Client
from tests.helpers import eventually, message_count, next_message, seen_noop
from tests.proxy import TcpProxy
from workers.runtime import build_worker_stack

pytestmark = [pytest.mark.integration]

WORKER = WorkerIdentity(worker_id="test:1:abc", host="test", pid=1)


def delivered(consumer: Any, count: int) -> list[Any]:
    return [next_message(consumer) for _ in range(count)]


def test_a_message_is_acknowledged_when_its_end_lands_and_never_when_it_is_lost(settings: Settings) -> None:
    queue = settings.queue_name("default")
    broker = build_broker(settings)
    try:
        for n in range(3):
            broker.enqueue(
                dramatiq.Message(queue_name=queue, actor_name="noop", args=(n,), kwargs={}, options={})
            )
        consumer = broker.consume(queue, prefetch=3, timeout=100)
        landed, lost, pending = delivered(consumer, 3)
        ends: dict[str, Future[bool]] = {m.message_id: Future() for m in (landed, lost, pending)}
        for message in (landed, lost, pending):
            ack_after(message, ends[message.message_id])
            consumer.ack(message)  # what Dramatiq's worker thread calls once the job has run

        ends[landed.message_id].set_result(True)
        ends[lost.message_id].set_exception(
            ServiceUnavailable("PostgreSQL", "postgresql://127.0.0.1:5432/x", "connection refused")
        )
        consumer.close()  # runs the acknowledgements handed over so far, then closes the channel
    finally:
        with contextlib.suppress(Exception):
            broker.close()

    # The landed end's message is gone; the lost one and the one still pending come again.
    assert message_count(queue) == 2
    again = build_broker(settings)
    try:
        consumer = again.consume(queue, prefetch=2, timeout=100)
        redelivered = delivered(consumer, 2)
        assert {m.message_id for m in redelivered} == {lost.message_id, pending.message_id}
        assert all(m.redelivered for m in redelivered)
        consumer.close()
    finally:
        with contextlib.suppress(Exception):
            again.close()


def test_a_detached_end_that_meets_an_outage_is_written_when_the_database_is_back(
    database_url: str, namespace: str
) -> None:
    proxy = TcpProxy(5432)
    proxy.start()
    db = Database(database_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"), pre_ping=True)
    store = BatchedAttemptStore(db)
    try:
        seen = seen_noop(f"{namespace}.default")
        started = store.start(seen, WORKER)
        assert started is not None

        proxy.cut()
        recorded = store.finish_detached(seen.job_id, started.number, AttemptEnd(AttemptOutcome.SUCCEEDED))
        time.sleep(1.5)  # the writer has tried, and waits the outage out
        assert not recorded.done(), "a detached end was given up (or claimed written) during an outage"

        proxy.start()
        assert recorded.result(timeout=30) is True
        assert JobStore(db).get(seen.job_id).status == "succeeded"
    finally:
        store.close()
        db.dispose()
        proxy.cut()


def test_a_stopping_worker_acknowledges_every_end_it_recorded(
    client: Client, job_store: JobStore, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped mid-backlog: a job recorded as succeeded has its message acknowledged, none comes again."""
    queue = settings.queue_name("default")
    jobs = client.enqueue_many("noop", [{} for _ in range(600)])
    stack = build_worker_stack(settings, threads=8)
    worker = dramatiq.Worker(stack.broker, queues=[queue], worker_threads=8)
    worker.start()
    ids = [job.id for job in jobs]

    def succeeded() -> int:
        return sum(info.status == "succeeded" for info in job_store.by_ids(ids))

    store = stack.lifecycle.attempts
    assert isinstance(store, BatchedAttemptStore)
    write_batch = store._write_batch

    def slow_write_batch(*args: Any) -> list[Any]:
        time.sleep(1.5)  # slower than a consumer takes to stop: their channels wait for these ends
        return write_batch(*args)

    try:
        eventually(lambda: succeeded() >= 100, timeout=30)
        monkeypatch.setattr(store, "_write_batch", slow_write_batch)
    finally:
        worker.stop(timeout=10_000)
        stack.close()
    infos = job_store.by_ids(ids)
    done = [info for info in infos if info.status == "succeeded"]
    assert 100 <= len(done) < 600, "stop the worker mid-backlog"
    assert all(info.attempts == 1 for info in done)
    # What comes again is exactly what did not run: every recorded end had its message acknowledged.
    assert eventually(lambda: message_count(queue) == 600 - len(done), timeout=10)
