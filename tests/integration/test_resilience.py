"""Delays held in PostgreSQL, orphans swept, quorum queues, reconnection bounds, poison kinds."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.request import Request, urlopen

import dramatiq
import pika
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from sqlalchemy import func, select

from jobs.errors import JobFailed, ServiceUnavailable
from jobs.settings import Settings
from jobs.store import AttemptStore, Database, JobStore, NewJob, WorkerIdentity
from jobs.store.models import DelayedMessageRow, JobRow
from producers import Client, JobStatus
from tests.helpers import AMQP_URL, WorkerProcess, eventually, message_count, seen_noop
from tests.proxy import TcpProxy

pytestmark = [pytest.mark.integration]

FAST_SWEEP = {"CONVEYOR_RECONCILE_INTERVAL": "1", "CONVEYOR_WORKER_TTL": "3"}


def held_rows(db: Database, settings: Settings) -> list[DelayedMessageRow]:
    """This test's held messages (the database is shared by the tests of a session)."""
    prefix = f"{settings.namespace}."
    with db.session() as session:
        return list(
            session.scalars(select(DelayedMessageRow).where(DelayedMessageRow.queue.startswith(prefix)))
        )


def test_a_delayed_job_waits_in_postgresql_not_in_rabbitmq_and_runs_once_on_time(
    client: Client, settings: Settings, db: Database, start_worker: WorkerProcess.Factory
) -> None:
    start_worker()
    job = client.enqueue("noop", delay=2)
    due = job.eta
    queue = settings.queue_name("default")

    (row,) = held_rows(db, settings)
    assert row.message_id == job.id
    assert row.queue == queue
    assert message_count(queue) == message_count(f"{queue}.DQ") == 0

    job.wait(timeout=20)
    started = job.history()[0].started_at
    assert due is not None
    assert timedelta(0) <= started - due < timedelta(seconds=2)
    assert job.attempts == 1
    assert held_rows(db, settings) == []


def test_a_retry_is_written_with_the_attempt_and_held_until_its_backoff_ends(
    client: Client, settings: Settings, db: Database, start_worker: WorkerProcess.Factory
) -> None:
    start_worker()
    job = client.enqueue("noop", fail_attempts=1, min_backoff=3600, max_backoff=7200)

    eventually(lambda: job.refresh().status is JobStatus.RETRYING)
    (row,) = held_rows(db, settings)
    assert row.message_id == job.id
    assert job.eta is not None
    assert abs((row.due_at - job.eta).total_seconds()) < 0.001
    assert timedelta(minutes=59) < job.eta - datetime.now(UTC) < timedelta(hours=2, minutes=1)
    # Nothing waits in RabbitMQ, acknowledged or not: the worker holds no message for hours.
    queue = settings.queue_name("default")
    assert message_count(queue) == message_count(f"{queue}.DQ") == 0
    assert json.loads(row.body)["options"]["retries"] == 1

    # Bring it forward: the dispatcher publishes it, and the retry succeeds.
    with db.session() as session:
        session.get(DelayedMessageRow, job.id).due_at = datetime.now(UTC)  # type: ignore[union-attr]
    assert job.wait(timeout=20)["attempt"] == 2


def test_a_plain_dramatiq_delayed_message_is_taken_out_of_the_dq_and_run_when_due(
    client: Client, settings: Settings, db: Database, start_worker: WorkerProcess.Factory
) -> None:
    start_worker()
    plain = RabbitmqBroker(url=AMQP_URL, confirm_delivery=True)
    try:
        sent = dramatiq.Message(
            queue_name=settings.queue_name("default"),
            actor_name="noop",
            args=(),
            kwargs={},
            options={},
            message_id=str(uuid.uuid4()),
        )
        plain.enqueue(sent, delay=3000)
    finally:
        plain.close()

    assert eventually(lambda: [r.message_id for r in held_rows(db, settings)] == [sent.message_id])
    assert message_count(f"{settings.queue_name('default')}.DQ") == 0
    assert not _exists(client, sent.message_id)  # a plain producer's job gets its row when it runs
    eventually(lambda: _exists(client, sent.message_id), timeout=15)
    assert client.get(sent.message_id).wait(timeout=10)["attempt"] == 1


def _exists(client: Client, job_id: str) -> bool:
    return bool(client.get_many([job_id]))


def test_a_running_job_whose_worker_and_message_are_gone_is_sent_again(
    client: Client, settings: Settings, db: Database, start_worker: WorkerProcess.Factory
) -> None:
    job_id = str(uuid.uuid4())
    seen = seen_noop(settings.queue_name("default"), job_id)
    ghost = WorkerIdentity(worker_id="gone-host:1:abc", host="gone-host", pid=1)
    assert AttemptStore(db).start(seen, ghost) is not None  # `running`, owner dead, no message
    never_published = JobStore(db).create(
        NewJob(
            id=str(uuid.uuid4()), kind="noop", queue=settings.queue_name("default"), payload={}, max_retries=3
        )
    )[0]

    worker = start_worker(env=FAST_SWEEP)

    job = client.get(job_id)
    assert job.wait(timeout=40)["attempt"] == 2
    assert [a.outcome for a in job.history()] == ["lost", "succeeded"]
    assert client.get(never_published.id).wait(timeout=20)["attempt"] == 1
    assert worker.count("sent again") == 2


def test_a_live_workers_long_job_is_left_alone_by_the_sweep(
    client: Client, start_worker: WorkerProcess.Factory
) -> None:
    worker = start_worker(env=FAST_SWEEP)
    job = client.enqueue("noop", sleep=8)

    assert job.wait(timeout=30)["attempt"] == 1
    assert [a.outcome for a in job.history()] == ["succeeded"]
    assert worker.count("sent again") == 0


def test_quorum_queues_are_declared_with_a_delivery_limit_and_serve_jobs(
    database_url: str, namespace: str, start_worker: WorkerProcess.Factory
) -> None:
    settings = Settings(
        broker_url=AMQP_URL,
        database_url=database_url,
        namespace=namespace,
        queue_type="quorum",
        delivery_limit=7,
    )
    start_worker(env={"CONVEYOR_QUEUE_TYPE": "quorum", "CONVEYOR_DELIVERY_LIMIT": "7"})
    with Client(settings) as client:
        assert client.enqueue("noop").wait(timeout=20)["attempt"] == 1
        assert client.enqueue("noop", fail_attempts=1, min_backoff=0.05).wait(timeout=20)["attempt"] == 2

    request = Request(f"http://127.0.0.1:15672/api/queues/%2F/{namespace}.default")
    request.add_header("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")  # guest:guest
    with urlopen(request, timeout=5) as response:
        queue = json.load(response)
    assert queue["type"] == "quorum"
    assert queue["arguments"]["x-delivery-limit"] == 7
    assert queue["arguments"]["x-dead-letter-routing-key"] == f"{namespace}.default.XQ"


def test_a_producer_rides_out_a_broker_outage_within_its_bound_then_gives_a_clear_error(
    database_url: str, namespace: str, db: Database
) -> None:
    proxy = TcpProxy(5672)
    url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F"
    settings = Settings(broker_url=url, database_url=database_url, namespace=namespace, enqueue_timeout=8)
    with proxy.running(), Client(settings) as client:
        client.enqueue("noop")  # connected
        proxy.cut()
        restore = threading.Timer(2.0, proxy.start)
        restore.start()
        started = time.monotonic()
        job = client.enqueue("noop")
        assert 1.5 < time.monotonic() - started < 8
        assert message_count(f"{namespace}.default") == 2
        assert job.refresh().status is JobStatus.QUEUED

        proxy.cut()
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable, match="RabbitMQ"):
            client.enqueue("noop")
        assert 7 < time.monotonic() - started < 12
        with db.session() as session:  # the undone enqueue left no row behind
            assert session.scalar(select(func.count()).where(JobRow.queue == f"{namespace}.default")) == 2


def test_a_worker_that_cannot_consume_for_too_long_exits_non_zero_and_is_replaced(
    client: Client, start_worker: WorkerProcess.Factory
) -> None:
    proxy = TcpProxy(5672)
    proxy.start()
    try:
        env = {
            "CONVEYOR_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F",
            "CONVEYOR_CONSUME_TIMEOUT": "3",
        }
        worker = start_worker("--processes", "1", "--threads", "2", env=env)
        proxy.cut()
        eventually(lambda: worker.count("cannot consume from RabbitMQ") >= 1, timeout=30)
        eventually(lambda: worker.count("died (exit code 4)") >= 1, timeout=10)
        proxy.start()
        eventually(lambda: worker.count(" ready: ") >= 2, timeout=60)
        assert client.enqueue("noop").wait(timeout=30)["attempt"] == 1
    finally:
        proxy.cut()


def test_a_second_sigterm_stops_at_once_and_the_job_runs_again_elsewhere(
    client: Client, start_worker: WorkerProcess.Factory
) -> None:
    worker = start_worker("--processes", "1", "--threads", "2")
    job = client.enqueue("noop", sleep=30)
    eventually(lambda: job.refresh().status is JobStatus.RUNNING)

    worker.signal(signal.SIGTERM)
    eventually(lambda: worker.count("finishing in-flight jobs") >= 1)
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    worker.wait(timeout=15)
    assert time.monotonic() - started < 10

    assert job.refresh().status is JobStatus.RETRYING
    start_worker("--processes", "1", "--threads", "2")
    job.wait(timeout=60)
    assert [a.outcome for a in job.history()] == ["interrupted", "succeeded"]


@pytest.mark.timeout(200)  # a 40 s job runs twice over; a loaded machine needs the slack
def test_after_the_shutdown_timeout_a_long_job_is_handed_back_not_lost(
    client: Client, start_worker: WorkerProcess.Factory
) -> None:
    worker = start_worker("--processes", "1", "--threads", "2", "--shutdown-timeout", "1")
    job = client.enqueue("noop", sleep=40)
    eventually(lambda: job.refresh().status is JobStatus.RUNNING)

    worker.signal(signal.SIGTERM)
    # Well before the job's end: the process did not wait for it (a loaded machine is slow to exit).
    assert worker.wait(timeout=30) == 0

    start_worker("--processes", "1", "--threads", "2")
    job.wait(timeout=90)
    history = job.history()
    assert [a.outcome for a in history] == ["interrupted", "succeeded"]
    assert "shutdown timeout" in (history[0].error or "")


@pytest.mark.usefixtures("crash_kind")
def test_a_job_that_kills_its_worker_is_dead_lettered_after_its_tries_and_others_still_run(
    client: Client, settings: Settings, start_worker: WorkerProcess.Factory
) -> None:
    worker = start_worker("--processes", "1", "--threads", "2", "--include", "tests.poison")
    poison = client.enqueue("crash", max_retries=1)
    good = [client.enqueue("noop") for _ in range(5)]

    with pytest.raises(JobFailed, match="WorkerLost"):
        poison.wait(timeout=60)
    assert [a.outcome for a in poison.history()] == ["lost", "lost", "failed"]
    assert worker.count("died (exit code 17)") == 2
    assert eventually(lambda: message_count(f"{settings.namespace}.default.XQ") == 1)
    for job in good:
        job.wait(timeout=30)


def test_an_undecodable_message_is_dead_lettered_at_once_and_the_worker_goes_on(
    client: Client, settings: Settings, start_worker: WorkerProcess.Factory
) -> None:
    start_worker("--processes", "1", "--threads", "2")
    queue = settings.queue_name("default")
    client.enqueue("noop").wait(timeout=20)  # the queues exist: a message to a missing one would vanish
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        connection.channel().basic_publish("", queue, b"\x00 not a dramatiq message")
    finally:
        connection.close()

    assert eventually(lambda: message_count(f"{queue}.XQ") == 1)
    assert client.enqueue("noop").wait(timeout=20)["attempt"] == 1
