"""A job's whole life through real RabbitMQ, PostgreSQL and `conveyor worker` processes."""

from __future__ import annotations

import pytest

from jobs.errors import JobFailed
from jobs.settings import Settings
from jobs.store import JobStore
from producers import Client, JobStatus
from tests.helpers import WorkerProcess, message_count

pytestmark = pytest.mark.integration


def test_a_job_runs_once_and_its_row_says_succeeded(
    client: Client, start_worker: WorkerProcess.Factory
) -> None:
    start_worker()
    job = client.enqueue("noop", sleep=0.01)
    assert job.status is JobStatus.QUEUED

    result = job.wait(timeout=20)

    assert result == {"attempt": 1, "slept": 0.01}
    assert job.status is JobStatus.SUCCEEDED
    assert job.attempts == 1
    assert job.info.started_at is not None
    assert job.info.finished_at is not None
    (attempt,) = job.history()
    assert attempt.outcome == "succeeded"
    assert attempt.pid > 0
    assert attempt.host
    assert attempt.worker
    assert attempt.finished_at is not None


def test_a_job_that_fails_twice_then_succeeds_keeps_three_attempts_and_honours_backoff(
    client: Client, start_worker: WorkerProcess.Factory
) -> None:
    start_worker()
    job = client.enqueue("noop", fail_attempts=2, min_backoff=0.4, max_backoff=2.0)

    assert job.wait(timeout=30) == {"attempt": 3, "slept": 0.0}

    history = job.history()
    assert [a.outcome for a in history] == ["retrying", "retrying", "succeeded"]
    assert "TransientError" in (history[0].error or "")
    assert "Traceback" in (history[0].traceback or "")
    # Exponential backoff with jitter: the first wait is min..2×min, the second 2×min..max.
    first_wait = (history[1].started_at - history[0].finished_at).total_seconds()  # type: ignore[operator]
    second_wait = (history[2].started_at - history[1].finished_at).total_seconds()  # type: ignore[operator]
    assert 0.4 <= first_wait < 2.5
    assert 0.8 <= second_wait < 2.5


def test_exhausted_retries_fail_the_job_and_dead_letter_its_message(
    client: Client, settings: Settings, start_worker: WorkerProcess.Factory
) -> None:
    start_worker()
    job = client.enqueue("noop", fail_attempts=10, max_retries=1, min_backoff=0.05, max_backoff=0.1)

    with pytest.raises(JobFailed) as failure:
        job.wait(timeout=30)

    assert failure.value.status == "failed"
    assert "TransientError" in (failure.value.error or "")
    assert job.attempts == 2
    assert [a.outcome for a in job.history()] == ["retrying", "failed"]
    assert message_count(f"{settings.namespace}.default.XQ") == 1


def test_a_permanent_error_fails_after_one_attempt(
    client: Client, settings: Settings, start_worker: WorkerProcess.Factory
) -> None:
    start_worker()
    job = client.enqueue("noop", permanent=True)

    with pytest.raises(JobFailed, match="PermanentError"):
        job.wait(timeout=20)

    assert job.attempts == 1
    assert job.history()[0].outcome == "failed"
    assert message_count(f"{settings.namespace}.default.XQ") == 1


def test_a_delayed_job_is_queued_with_its_eta_and_runs_after_the_delay(
    client: Client, start_worker: WorkerProcess.Factory
) -> None:
    start_worker()
    job = client.enqueue("noop", delay=1.5)
    assert job.status is JobStatus.QUEUED
    assert job.info.eta is not None

    job.wait(timeout=20)

    waited = (job.info.started_at - job.info.created_at).total_seconds()  # type: ignore[operator]
    assert waited >= 1.4


def test_the_same_idempotency_key_returns_the_first_job_and_sends_nothing_again(
    client: Client, settings: Settings
) -> None:
    first = client.enqueue("noop", idempotency_key="order-42")
    second = client.enqueue("noop", sleep=5, idempotency_key="order-42")

    assert second.id == first.id
    assert second.info.payload == {}
    assert message_count(f"{settings.namespace}.default") == 1


def test_a_bad_payload_raises_value_error_and_sends_nothing(
    client: Client, job_store: JobStore, settings: Settings
) -> None:
    with pytest.raises(ValueError, match="sleep"):
        client.enqueue("noop", sleep=61)
    with pytest.raises(ValueError, match="unknown field"):
        client.enqueue("noop", slep=1)
    with pytest.raises(ValueError, match="unknown job kind"):
        client.enqueue("nope")

    assert [j for j in job_store.find(limit=10_000) if j.queue == f"{settings.namespace}.default"] == []
    assert message_count(f"{settings.namespace}.default") == 0


def test_a_message_from_a_plain_dramatiq_producer_gets_a_row_and_runs(
    settings: Settings, client: Client, start_worker: WorkerProcess.Factory
) -> None:
    import dramatiq
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    start_worker()
    broker = RabbitmqBroker(url=settings.broker_url, confirm_delivery=True)
    actor = dramatiq.Actor(
        lambda sleep=0: None,
        broker=broker,
        actor_name="noop",
        queue_name=f"{settings.namespace}.default",
        priority=0,
        options={},
    )
    message = actor.send(sleep=0.01)
    broker.close()

    job = client.get(_eventually_row(client, message.message_id))
    job.wait(timeout=20)
    assert job.info.kind == "noop"
    assert job.info.payload == {"sleep": 0.01}
    assert job.attempts == 1


def _eventually_row(client: Client, job_id: str) -> str:
    from jobs.errors import JobNotFound
    from tests.helpers import eventually

    def found() -> str | None:
        try:
            return client.get(job_id).id
        except JobNotFound:
            return None

    return eventually(found)


def test_priority_queues_are_opt_in_and_carry_each_message_priority(settings: Settings) -> None:
    import pika

    prioritized = settings.with_overrides(max_priority=10)
    with Client(prioritized) as client:
        job = client.enqueue("noop", priority=7)
        with pytest.raises(ValueError, match="priority must be between 0 and 10"):
            client.enqueue("noop", priority=11)

    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    try:
        queue = f"{settings.namespace}.default"
        method, properties, body = connection.channel().basic_get(queue, auto_ack=True)
    finally:
        connection.close()
    assert method is not None
    assert properties.priority == 7
    assert job.id.encode() in body
    assert job.info.priority == 7
