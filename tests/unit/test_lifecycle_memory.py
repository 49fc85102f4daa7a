"""The lifecycle middleware's logic on the in-memory broker and a throw-away SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest

from jobs.errors import JobFailed
from jobs.settings import Settings
from jobs.store.migrate import ensure_database, upgrade
from producers import Client, JobStatus
from workers.demo import run_demo
from workers.runtime import WorkerStack, build_worker_stack, resolve_queues


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(broker_url="memory://", database_url=f"sqlite:///{tmp_path}/jobs.db", namespace="unit")


@pytest.fixture
def stack(settings: Settings) -> Iterator[WorkerStack]:
    ensure_database(settings.database_url)
    stack = build_worker_stack(settings, threads=2)
    upgrade(stack.db)
    worker = dramatiq.Worker(stack.broker, worker_threads=2, worker_timeout=50)
    worker.start()
    yield stack
    worker.stop()
    stack.close()


@pytest.fixture
def client(settings: Settings, stack: WorkerStack) -> Iterator[Client]:
    with Client(settings, broker=stack.broker) as c:
        yield c


def test_retries_then_success_are_recorded_attempt_by_attempt(client: Client) -> None:
    job = client.enqueue("noop", fail_attempts=1, min_backoff=0.01, max_backoff=0.02)

    assert job.wait(timeout=30) == {"attempt": 2, "slept": 0.0}
    assert [a.outcome for a in job.history()] == ["retrying", "succeeded"]


def test_a_message_with_positional_arguments_fails_permanently(client: Client, stack: WorkerStack) -> None:
    message = dramatiq.Message(queue_name="unit.default", actor_name="noop", args=(1,), kwargs={}, options={})
    stack.broker.enqueue(message)

    job = _wait_for_row(client, message.message_id)
    with pytest.raises(JobFailed, match="takes keyword arguments only"):
        job.wait(timeout=10)
    assert job.attempts == 1


def test_a_malformed_payload_on_the_queue_fails_that_job_alone(client: Client, stack: WorkerStack) -> None:
    bad = dramatiq.Message(
        queue_name="unit.default", actor_name="noop", args=(), kwargs={"sleep": "x"}, options={}
    )
    stack.broker.enqueue(bad)
    good = client.enqueue("noop")

    with pytest.raises(JobFailed, match="invalid payload: noop payload: sleep must be a number"):
        _wait_for_row(client, bad.message_id).wait(timeout=10)
    assert good.wait(timeout=10)["attempt"] == 1


def test_a_message_whose_id_is_not_a_uuid_is_dead_lettered(stack: WorkerStack) -> None:
    message = dramatiq.Message(
        queue_name="unit.default", actor_name="noop", args=(), kwargs={}, options={}, message_id="oops"
    )
    stack.broker.enqueue(message)
    stack.broker.join("unit.default", timeout=5000, fail_fast=False)

    assert [m.message_id for m in stack.broker.dead_letters] == ["oops"]


def test_a_redelivered_message_of_a_finished_job_is_skipped(client: Client, stack: WorkerStack) -> None:
    job = client.enqueue("noop")
    job.wait(timeout=10)
    message = dramatiq.Message(
        queue_name="unit.default", actor_name="noop", args=(), kwargs={}, options={}, message_id=job.id
    )

    stack.broker.enqueue(message)
    stack.broker.join("unit.default", timeout=5000, fail_fast=False)

    assert job.refresh().attempts == 1
    assert job.status is JobStatus.SUCCEEDED


def test_queues_are_named_by_kind_or_queue_and_unknown_ones_rejected(settings: Settings) -> None:
    assert resolve_queues(settings, ["default", "noop", "unit.default", ""]) == {"unit.default"}
    with pytest.raises(ValueError, match="unknown queue 'emails'"):
        resolve_queues(settings, ["emails"])


def test_the_demo_shows_success_retry_delay_and_both_kinds_of_failure(settings: Settings) -> None:
    results = dict(run_demo(settings, on_event=lambda _line: None))

    assert results["a quick no-op"].status == "succeeded"
    assert results["fails twice, then succeeds"].attempts == 3
    assert results["fails twice, then succeeds"].status == "succeeded"
    delayed = results["delayed by 1 s"]
    assert (delayed.started_at - delayed.created_at).total_seconds() >= 0.9  # type: ignore[operator]
    assert results["fails permanently"].status == "failed"
    assert results["fails permanently"].attempts == 1
    assert results["retries exhausted"].status == "failed"
    assert results["retries exhausted"].attempts == 2
    report = results["the jobs_summary report"]
    assert report.status == "succeeded"
    assert [a["name"].rsplit(".", 1)[1] for a in report.result["artifacts"]] == ["html", "csv", "pdf"]  # type: ignore[index]
    assert report.result["rows"] >= 9  # type: ignore[index]


def _wait_for_row(client: Client, job_id: str):  # type: ignore[no-untyped-def]
    from jobs.errors import JobNotFound
    from tests.helpers import eventually

    def found():  # type: ignore[no-untyped-def]
        try:
            return client.get(job_id)
        except JobNotFound:
            return None

    return eventually(found, timeout=10)


def test_image_jobs_have_a_time_limit_and_are_not_retried_past_it(stack: WorkerStack) -> None:
    from dramatiq.middleware import TimeLimitExceeded

    options = stack.broker.get_actor("process_image").options

    assert options["time_limit"] == 60_000
    assert TimeLimitExceeded in options["throws"]
    assert "time_limit" not in stack.broker.get_actor("send_email").options
