"""Signed messages through real RabbitMQ, PostgreSQL and `conveyor worker` processes.

A worker holding CONVEYOR_SIGNING_KEY runs what Conveyor's producers sign, on every publishing
path, and refuses what a process without the key publishes: its job is failed, or the message
dead-lettered when it has no row; the actor never runs.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dramatiq
import pika
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from sqlalchemy import select

from jobs.errors import JobFailed, JobNotFound
from jobs.schedule.spec import key_prefix
from jobs.settings import Settings
from jobs.signing import MessageSigner, SigningKey
from jobs.store import Database, JobStore, NewJob
from jobs.store.models import JobRow
from producers import Client, Job
from tests.conftest import AMQP_URL
from tests.helpers import ROOT, WorkerProcess, eventually, message_count, run_cli

pytestmark = [pytest.mark.integration]

KEY = "integration-signing-key-0123456789abcdef"
OLD = "integration-previous-key-0123456789abcd"
OTHER = "a-forgers-own-signing-key-0123456789abcd"


@pytest.fixture
def signed_env(service_env: dict[str, str]) -> dict[str, str]:
    return {**service_env, "CONVEYOR_SIGNING_KEY": KEY}


@pytest.fixture
def signed_client(settings: Settings, db: Database) -> Iterator[Client]:
    with Client(dataclasses.replace(settings, signing_key=KEY), db=db) as client:
        yield client


def client_with(settings: Settings, db: Database, key: str | None) -> Client:
    return Client(dataclasses.replace(settings, signing_key=key), db=db)


def publish_raw(queue: str, body: bytes) -> None:
    """As a plain Dramatiq program (or anyone allowed to publish) would."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        connection.channel().basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    finally:
        connection.close()


def noop_message(settings: Settings, **kwargs: Any) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name=settings.queue_name("default"),
        actor_name="noop",
        args=(),
        kwargs=kwargs,
        options={},
        message_id=str(uuid.uuid4()),
    )


def failed_with(job: Job, fragment: str) -> None:
    with pytest.raises(JobFailed) as failure:
        job.wait(timeout=30)
    assert fragment in (failure.value.error or ""), failure.value.error
    assert [a.outcome for a in job.history()] == ["failed"]  # refused at once: never run, no retry


def dead_letters(settings: Settings) -> int:
    return message_count(f"{settings.queue_name('default')}.XQ")


def test_signed_jobs_run_on_every_producer_path_retries_and_delays_included(
    signed_client: Client, signed_env: dict[str, str], start_worker: WorkerProcess.Factory
) -> None:
    worker = start_worker(env=signed_env)

    one = signed_client.enqueue("noop", sleep=0.01)  # sends first, then writes the row
    keyed = signed_client.enqueue("noop", idempotency_key=f"k-{uuid.uuid4()}")  # row first
    many = signed_client.enqueue_many("noop", [{}, {"sleep": 0.01}, {}])  # pipelined publisher
    delayed = signed_client.enqueue("noop", delay=0.5)  # held in PostgreSQL, published when due
    retried = signed_client.enqueue("noop", fail_attempts=2, min_backoff=0.1, max_backoff=0.2)
    cli = run_cli("enqueue", "noop", env=signed_env)
    assert cli.returncode == 0, cli.stderr

    for job in [one, keyed, *many, delayed]:
        assert job.wait(timeout=30)["attempt"] == 1
    assert retried.wait(timeout=30)["attempt"] == 3
    assert signed_client.get(cli.stdout.strip()).wait(timeout=30)["attempt"] == 1
    assert worker.count("refused") == 0


def test_retried_and_requeued_jobs_keep_verifying(
    signed_client: Client,
    settings: Settings,
    signed_env: dict[str, str],
    start_worker: WorkerProcess.Factory,
) -> None:
    worker = start_worker(env=signed_env)
    by_admin, dead = (
        signed_client.enqueue("noop", permanent=True),
        signed_client.enqueue("noop", permanent=True),
    )
    for job in (by_admin, dead):
        with pytest.raises(JobFailed, match="PermanentError"):
            job.wait(timeout=30)
    eventually(lambda: dead_letters(settings) == 2)

    # `conveyor jobs retry` publishes a fresh message; `conveyor dlq requeue` the dead one as it was.
    retry = run_cli("jobs", "retry", by_admin.id, env=signed_env)
    requeue = run_cli("dlq", "requeue", dead.id, env=signed_env)
    assert retry.returncode == 0, retry.stderr
    assert requeue.returncode == 0, requeue.stderr

    for job in (by_admin, dead):
        eventually(lambda job=job: job.refresh().attempts == 2 and job.status.value == "failed")  # type: ignore[misc]
        assert [a.outcome for a in job.history()] == ["failed", "failed"]
        assert "PermanentError" in (job.history()[1].error or "")  # it ran again: not refused
    assert worker.count("refused") == 0


def test_messages_published_without_the_key_never_run(
    settings: Settings,
    db: Database,
    signed_client: Client,
    signed_env: dict[str, str],
    start_worker: WorkerProcess.Factory,
) -> None:
    worker = start_worker(env=signed_env)
    queue = settings.queue_name("default")

    # A producer without the key: its jobs have rows, which are failed with the reason. A plain
    # enqueue publishes before it writes its row (the worker waits for it); an idempotency key
    # writes the row first.
    with client_with(settings, db, None) as unsigned, client_with(settings, db, OTHER) as forger:
        job = unsigned.enqueue("noop", fail_attempts=1)
        failed_with(job, "SignatureError: message is not signed")
        forged = forger.enqueue("noop", idempotency_key=f"f-{uuid.uuid4()}")
        failed_with(forged, "message signature invalid: made with an unknown key")

    # A plain Dramatiq message, straight onto the queue: no row, so it is dead-lettered.
    plain = noop_message(settings)
    publish_raw(queue, plain.encode())
    # A signed message whose payload was changed on the way.
    tampered = MessageSigner(SigningKey.of(KEY)).sign(noop_message(settings, sleep=0))
    publish_raw(queue, dataclasses.replace(tampered, kwargs={"fail_attempts": 9}).encode())
    # A plain producer's delayed message (.DQ): held, then refused when due, never signed by a worker.
    broker = RabbitmqBroker(url=AMQP_URL, confirm_delivery=True)
    try:
        delayed = noop_message(settings)
        broker.enqueue(delayed, delay=300)
    finally:
        broker.close()

    eventually(lambda: dead_letters(settings) == 5)
    for message in (plain, tampered, delayed):
        with pytest.raises(JobNotFound):
            signed_client.get(message.message_id)  # no row was made for them
        assert worker.count(f"message {message.message_id} (noop on {queue}) refused: ") == 1
    assert worker.count("does not match the message's content; no job row: message dead-lettered") == 1
    assert worker.count("message is not signed; no job row: message dead-lettered") == 2


def test_rotation_accepts_the_previous_key_until_its_deadline(
    settings: Settings, db: Database, signed_env: dict[str, str], start_worker: WorkerProcess.Factory
) -> None:
    rotating = {**signed_env, "CONVEYOR_SIGNING_KEY_PREVIOUS": OLD}
    worker = start_worker(env=rotating)
    with client_with(settings, db, OLD) as old_producer, client_with(settings, db, KEY) as new_producer:
        assert old_producer.enqueue("noop").wait(timeout=30)["attempt"] == 1
        assert new_producer.enqueue("noop").wait(timeout=30)["attempt"] == 1
        worker.terminate()

        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        start_worker(env={**rotating, "CONVEYOR_SIGNING_PREVIOUS_UNTIL": past})
        failed_with(old_producer.enqueue("noop"), "made with the previous key")
        assert new_producer.enqueue("noop").wait(timeout=30)["attempt"] == 1


def test_accept_unsigned_runs_plain_dramatiq_messages_but_not_forged_ones(
    settings: Settings,
    db: Database,
    signed_client: Client,
    signed_env: dict[str, str],
    start_worker: WorkerProcess.Factory,
) -> None:
    worker = start_worker(env={**signed_env, "CONVEYOR_ACCEPT_UNSIGNED": "1"})
    plain = noop_message(settings)

    publish_raw(settings.queue_name("default"), plain.encode())
    with client_with(settings, db, OTHER) as forger:
        forged = forger.enqueue("noop")

    assert eventually(lambda: signed_client.get_many([plain.message_id])) is not None
    assert signed_client.get(plain.message_id).wait(timeout=30)["attempt"] == 1  # row made on first sight
    failed_with(forged, "unknown key")
    assert worker.count("is not signed and runs: CONVEYOR_ACCEPT_UNSIGNED is on") == 1


def test_a_scheduled_tick_and_an_orphan_sent_again_are_signed(
    tmp_path: Path,
    settings: Settings,
    db: Database,
    signed_client: Client,
    signed_env: dict[str, str],
    start_worker: WorkerProcess.Factory,
) -> None:
    worker = start_worker(env={**signed_env, "CONVEYOR_RECONCILE_INTERVAL": "1", "CONVEYOR_WORKER_TTL": "3"})
    schedule = tmp_path / "schedule.toml"
    schedule.write_text('[[job]]\nname = "tick"\nevery = "1s"\nkind = "noop"\n', encoding="utf-8")
    argv = [sys.executable, str(ROOT / "cli.py"), "scheduler", "--schedule", str(schedule)]
    scheduler = subprocess.Popen(
        argv, env=signed_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        ticked = eventually(
            lambda: [j for j in signed_client.get_many(_ticks(db, settings)) if j.info.finished_at]
        )
    finally:
        scheduler.send_signal(signal.SIGTERM)
        scheduler.communicate(timeout=20)
    assert {job.status.value for job in ticked} == {"succeeded"}

    # A job row whose message was never published: the orphan sweep sends a fresh, signed, one.
    orphan = JobStore(db).create(
        NewJob(
            id=str(uuid.uuid4()), kind="noop", queue=settings.queue_name("default"), payload={}, max_retries=3
        )
    )[0]
    assert signed_client.get(orphan.id).wait(timeout=40)["attempt"] == 1
    assert worker.count("sent again") >= 1
    assert worker.count("refused") == 0


def _ticks(db: Database, settings: Settings) -> list[str]:
    """The ids of the scheduler's jobs (their idempotency keys name the entry)."""
    with db.session() as session:
        query = select(JobRow.id).where(
            JobRow.idempotency_key.like(f"{key_prefix(settings.namespace, 'tick')}%")
        )
        return [str(job_id) for job_id in session.scalars(query)]


def test_a_signing_key_shorter_than_32_characters_stops_the_cli_with_exit_2(
    service_env: dict[str, str],
) -> None:
    result = run_cli("enqueue", "noop", env={**service_env, "CONVEYOR_SIGNING_KEY": "too-short-secret"})

    assert result.returncode == 2
    assert "CONVEYOR_SIGNING_KEY is 16 characters long" in result.stderr
    assert "too-short-secret" not in result.stderr + result.stdout
