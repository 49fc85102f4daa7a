"""The transactional outbox (SPEC §11): jobs written in the application's own transaction, published
by the relays of the workers once it has committed, never when it rolled back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime

import pika
import pytest
from sqlalchemy import Engine, create_engine, delete, func, select
from sqlalchemy.orm import Session

from jobs.broker import build_broker
from jobs.crypto import generate_key
from jobs.errors import JobNotFound
from jobs.settings import Settings
from jobs.store import Database, JobStore
from jobs.store.models import DelayedMessageRow, JobRow, OutboxRow
from jobs.store.outbox import OutboxStore
from producers import Client
from tests.helpers import AMQP_URL, ROOT, WorkerProcess, eventually, message_count
from tests.proxy import TcpProxy
from workers.relay import Relay

pytestmark = [pytest.mark.integration]


@pytest.fixture
def app_engine(settings: Settings) -> Iterator[Engine]:
    """The application's own engine on Conveyor's database (not the client's pool)."""
    engine = create_engine(settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def outbox(job_store: JobStore) -> OutboxStore:
    return OutboxStore(job_store)


@contextmanager
def running_relays(settings: Settings, db: Database, count: int = 1) -> Iterator[list[Relay]]:
    relays = [Relay(settings, build_broker(settings), OutboxStore(JobStore(db))) for _ in range(count)]
    for relay in relays:
        relay.start()
    try:
        yield relays
    finally:
        for relay in relays:
            relay.stop()
        for relay in relays:
            relay.join(timeout=10)
            relay.broker.close()


def drain_ids(queue: str) -> list[str]:
    """Take every message off ``queue``; their message ids, copies included."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ids = []
    try:
        channel = connection.channel()
        while True:
            method, _properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return ids
            ids.append(json.loads(body)["message_id"])
    finally:
        connection.close()


def entries(db: Database, namespace: str) -> int:
    """The namespace's outbox entries (other tests' share the session's database)."""
    with db.session() as session:
        query = select(func.count()).where(OutboxRow.namespace == namespace)
        return int(session.scalar(query) or 0)


def test_a_committed_enqueue_runs_within_a_second_of_the_commit(
    client: Client, app_engine: Engine, job_store: JobStore, start_worker: WorkerProcess.Factory
) -> None:
    start_worker("--processes", "1", "--threads", "2")
    time.sleep(1.5)  # the relay listens from its first idle moment on

    with Session(app_engine) as session, session.begin():
        job = client.enqueue("noop", session=session, sleep=0)
    committed = datetime.now(UTC)

    eventually(lambda: job_store.get(job.id).status == "succeeded" or None, timeout=20)
    (attempt,) = job_store.attempts(job.id)
    assert (attempt.started_at - committed).total_seconds() < 1.0


def test_a_rolled_back_enqueue_leaves_no_job_and_no_message(
    client: Client, app_engine: Engine, db: Database, settings: Settings
) -> None:
    queue = settings.queue_name("default")
    with running_relays(settings, db), Session(app_engine) as session:
        session.begin()
        job = client.enqueue("noop", session=session, sleep=0)
        time.sleep(1.5)  # a relay would have published it by now, had it seen it
        assert message_count(queue) == 0
        session.rollback()
        time.sleep(1.5)

    with pytest.raises(JobNotFound):
        client.get(job.id)
    assert entries(db, settings.namespace) == 0
    assert message_count(queue) == 0


def test_a_connection_works_as_a_session_does_and_the_kind_helpers_take_one(
    client: Client, app_engine: Engine, db: Database, settings: Settings
) -> None:
    with app_engine.begin() as connection:
        noop = client.enqueue("noop", session=connection, sleep=0)
        email = client.send_email("ada@example.com", "welcome", {"name": "Ada"}, session=connection)
        assert entries(db, settings.namespace) == 0  # not committed yet: the client's own pool sees nothing

    assert entries(db, settings.namespace) == 2
    with running_relays(settings, db):
        eventually(lambda: entries(db, settings.namespace) == 0 or None, timeout=10)
    assert drain_ids(settings.queue_name("default")) == [noop.id]
    assert drain_ids(settings.queue_name(client.get(email.id).info.queue.split(".")[-1])) == [email.id]


def test_enqueue_many_with_a_session_copies_rows_and_entries_into_the_transaction(
    client: Client, app_engine: Engine, db: Database, job_store: JobStore, settings: Settings
) -> None:
    with Session(app_engine) as session:
        session.begin()
        doomed = client.enqueue_many("noop", [{"sleep": 0}] * 30, session=session)
        session.rollback()
    with Session(app_engine) as session, session.begin():
        jobs = client.enqueue_many("noop", [{"sleep": 0}] * 300, max_retries=1, session=session)
        delayed = client.enqueue_many("noop", [{"sleep": 0}] * 3, delay=60, session=session)

    assert job_store.by_ids(j.id for j in doomed) == []
    assert entries(db, settings.namespace) == 300  # the delayed ones are held, not in the outbox
    with running_relays(settings, db):
        eventually(lambda: entries(db, settings.namespace) == 0 or None, timeout=20)
    assert sorted(drain_ids(settings.queue_name("default"))) == sorted(j.id for j in jobs)
    assert {i.max_retries for i in job_store.by_ids(j.id for j in jobs)} == {1}
    with db.session() as session:
        held = session.scalar(
            select(func.count()).where(DelayedMessageRow.message_id.in_([j.id for j in delayed]))
        )
    assert held == 3


def test_an_idempotency_key_used_twice_in_one_transaction_gives_one_job_and_one_entry(
    client: Client, app_engine: Engine, db: Database, settings: Settings
) -> None:
    with Session(app_engine) as session, session.begin():
        first = client.enqueue("noop", session=session, idempotency_key="order-17", sleep=0)
        again = client.enqueue("noop", session=session, idempotency_key="order-17", sleep=0)

    assert again.id == first.id
    assert entries(db, settings.namespace) == 1


def test_a_delayed_enqueue_is_held_like_any_delayed_job_and_needs_no_entry(
    client: Client, app_engine: Engine, db: Database, settings: Settings
) -> None:
    with Session(app_engine) as session, session.begin():
        job = client.enqueue("noop", session=session, delay=60, sleep=0)

    assert entries(db, settings.namespace) == 0
    with db.session() as session:
        assert session.get(DelayedMessageRow, job.id) is not None
    assert client.get(job.id).info.eta is not None


def test_a_session_on_another_database_is_refused(client: Client, settings: Settings) -> None:
    other = create_engine(settings.database_url.rsplit("/", 1)[0] + "/postgres")
    try:
        with other.begin() as connection, pytest.raises(ValueError, match="Conveyor's database"):
            client.enqueue("noop", session=connection, sleep=0)
    finally:
        other.dispose()


def test_two_relays_on_one_backlog_publish_every_entry_exactly_once(
    client: Client, app_engine: Engine, db: Database, settings: Settings
) -> None:
    ids = []
    for _ in range(20):
        with Session(app_engine) as session, session.begin():
            ids += [client.enqueue("noop", session=session, sleep=0).id for _ in range(100)]

    with running_relays(settings, db, count=2) as relays:
        eventually(lambda: entries(db, settings.namespace) == 0 or None, timeout=60)
    published = drain_ids(settings.queue_name("default"))

    assert sum(relay.published for relay in relays) == len(ids) == 2000
    assert sorted(published) == sorted(ids)


def test_a_relay_killed_between_the_confirms_and_its_commit_republishes_and_each_job_runs_once(
    client: Client,
    app_engine: Engine,
    db: Database,
    job_store: JobStore,
    settings: Settings,
    service_env: dict[str, str],
    start_worker: WorkerProcess.Factory,
) -> None:
    queue = settings.queue_name("default")
    with Session(app_engine) as session, session.begin():
        ids = [client.enqueue("noop", session=session, sleep=0).id for _ in range(50)]
    relay = subprocess.Popen(
        [sys.executable, "-m", "tests.outbox_relay"],
        env=service_env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert relay.stdout is not None
        assert relay.stdout.readline().strip() == "relay ready"
        assert relay.stdout.readline().strip() == "published 50"
        os.kill(relay.pid, signal.SIGKILL)
    finally:
        relay.kill()
        relay.wait(timeout=10)
        if relay.stdout is not None:
            relay.stdout.close()

    assert message_count(queue) == 50
    assert entries(db, settings.namespace) == 50  # its transaction died with it: nothing was deleted
    with running_relays(settings, db):
        eventually(lambda: entries(db, settings.namespace) == 0 or None, timeout=20)
    assert message_count(queue) == 100  # every job's message twice

    start_worker("--processes", "1", "--threads", "4")
    eventually(lambda: all(i.status == "succeeded" for i in job_store.by_ids(ids)) or None, timeout=60)
    eventually(lambda: message_count(queue) == 0 or None, timeout=30)
    assert all(info.attempts == 1 for info in job_store.by_ids(ids))
    assert sum(len(job_store.attempts(i)) for i in ids) == 50


def test_commits_go_on_while_the_relay_cannot_reach_rabbitmq_and_every_job_runs_once_after(
    client: Client,
    app_engine: Engine,
    db: Database,
    job_store: JobStore,
    settings: Settings,
    start_worker: WorkerProcess.Factory,
) -> None:
    """The relay's side of an outage, through a proxy it alone uses (the shared RabbitMQ stays up;
    tests/chaos/test_outbox_rabbitmq_down.py stops the real one)."""
    proxy = TcpProxy(5672)
    relayed = replace(settings, broker_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F")
    ids: list[str] = []

    def commit(count: int) -> None:
        for _ in range(count):
            with Session(app_engine) as session, session.begin():
                ids.append(client.enqueue("noop", session=session, sleep=0).id)

    with proxy.running(), running_relays(relayed, db):
        commit(20)
        eventually(lambda: entries(db, settings.namespace) == 0 or None, timeout=10)
        proxy.cut()
        commit(50)  # every commit returns at once: nothing is published in it
        time.sleep(2)
        with db.session() as session:
            waiting = session.scalars(
                select(OutboxRow).where(OutboxRow.namespace == settings.namespace)
            ).all()
            assert len(waiting) == 50
            assert max(entry.attempts for entry in waiting) >= 1
        proxy.start()
        eventually(lambda: entries(db, settings.namespace) == 0 or None, timeout=30)

    start_worker("--processes", "1", "--threads", "4")
    eventually(lambda: all(i.status == "succeeded" for i in job_store.by_ids(ids)) or None, timeout=60)
    assert sum(len(job_store.attempts(i)) for i in ids) == 70


def test_a_signed_and_sealed_deployment_stores_the_message_sealed_and_its_worker_runs_it(
    settings: Settings, app_engine: Engine, db: Database, start_worker: WorkerProcess.Factory
) -> None:
    signing_key, encryption_keys = "an-outbox-test-signing-key-0123456789abcdef", generate_key("a")
    keyed = settings.with_overrides(signing_key=signing_key, encryption_keys=encryption_keys)
    with Client(keyed) as client:
        with Session(app_engine) as session, session.begin():
            job = client.enqueue("noop", session=session, sleep=0, idempotency_key="sealed-and-signed")

        try:
            with db.session() as session:
                (stored,) = session.scalars(select(OutboxRow.message).where(OutboxRow.job_id == job.id)).all()
            # Sealed: neither the actor nor the id of the message's JSON shows.
            assert b"noop" not in stored
            assert job.id.encode() not in stored
            start_worker(
                "--processes", "1", "--threads", "2",
                env={"CONVEYOR_SIGNING_KEY": signing_key, "CONVEYOR_ENCRYPTION_KEYS": encryption_keys},
            )  # fmt: skip
            eventually(lambda: client.get(job.id).status == "succeeded" or None, timeout=30)
        finally:
            # The session's other tests read every row without this key (a prune opens payloads):
            # the sealed job goes, its attempts and outbox entry with it.
            with app_engine.begin() as connection:
                connection.execute(delete(JobRow).where(JobRow.id == job.id))
