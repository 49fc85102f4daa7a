"""A plain enqueue publishes first and writes its row while RabbitMQ confirms.

Real RabbitMQ and PostgreSQL (through a TCP proxy that can cut it): the order never loses a
job nor makes two rows, and a database that is gone before the enqueue fails it cleanly.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator

import dramatiq
import pika
import pytest

from jobs.settings import Settings
from jobs.status import JobStatus
from jobs.store import Database, JobStore, NewJob, SeenMessage, WorkerIdentity
from jobs.store.batched import BatchedAttemptStore
from jobs.store.jobs import utcnow
from jobs.store.models import JobRow
from producers import Client, JobNotRecorded, ServiceUnavailable
from producers.frames import PublishFrames
from tests.helpers import WorkerProcess, eventually, message_count, seen_noop
from tests.proxy import TcpProxy

pytestmark = [pytest.mark.integration]

WORKER = WorkerIdentity(worker_id="test:1:abc", host="test", pid=1)
#: Rounds of the producer-against-workers race: without id order, most of them deadlocked.
ROUNDS = 10


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy(5432)
    proxy.start()
    yield proxy
    proxy.cut()


@pytest.fixture
def proxied_db(settings: Settings, proxy: TcpProxy) -> Iterator[Database]:
    database = Database(settings.database_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"))
    yield database
    database.dispose()


@pytest.fixture
def proxied_client(settings: Settings, proxied_db: Database) -> Iterator[Client]:
    proxied = settings.with_overrides(database_url=proxied_db.url, enqueue_timeout=2)
    with Client(proxied, db=proxied_db) as client:
        yield client


def rows_of(client: Client, job_id: str) -> int:
    return len(client.get_many([job_id]))


def worker_started(db: Database, job_id: str, queue: str) -> None:
    """The row a worker writes for a job it meets before its producer wrote one, and starts."""
    with db.session() as session:
        session.add(
            JobRow(
                id=job_id,
                kind="noop",
                queue=queue,
                status="running",
                payload={},
                attempts=1,
                created_at=utcnow(),
            )
        )


def test_the_row_of_a_sent_job_keeps_what_a_faster_worker_wrote(
    client: Client, settings: Settings, db: Database
) -> None:
    job_id = str(uuid.uuid4())
    queue = settings.queue_name("default")
    worker_started(db, job_id, queue)  # a worker made the row on first sight and started the job

    info = JobStore(db).create_sent(NewJob(job_id, "noop", queue, {}, max_retries=3))

    assert info.id == job_id
    assert client.get(job_id).status == "running"
    assert client.get(job_id).attempts == 1
    assert rows_of(client, job_id) == 1


def test_enqueues_after_the_first_are_sent_first_and_each_has_its_row_and_message(
    client: Client, settings: Settings
) -> None:
    jobs = [client.enqueue("noop", sleep=0) for _ in range(20)]

    assert client._sender._publishers, "no enqueue took the send-first path"
    assert all(rows_of(client, job.id) == 1 for job in jobs)
    assert all(job.refresh().status is JobStatus.QUEUED for job in jobs)
    assert message_count(settings.queue_name("default")) == 20


def test_a_plain_enqueue_writes_its_publish_straight_to_the_socket(
    client: Client, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.enqueue("noop")  # opens the connections: the next one is sent first
    client.enqueue("noop")
    connection = client._sender._publisher._connection._impl
    sent_before = connection.bytes_sent
    nbio = connection._transport._nbio
    watched: list[int] = []  # pika watches the socket for writability only to send what it buffered
    set_writer = nbio.set_writer
    monkeypatch.setattr(nbio, "set_writer", lambda fd, on: (watched.append(fd), set_writer(fd, on))[1])

    job = client.enqueue("noop", sleep=0)

    assert watched == []
    assert not connection._transport._tx_buffers
    with pika.BlockingConnection(pika.URLParameters(settings.broker_url)) as reader:
        channel, bodies = reader.channel(), []
        while (got := channel.basic_get(settings.queue_name("default"), auto_ack=True))[0]:
            bodies.append(got[2])
    body = next(b for b in bodies if dramatiq.Message.decode(b).message_id == job.id)
    assert dramatiq.Message.decode(body).kwargs == {"sleep": 0}
    frames = PublishFrames(client._sender._publisher._channel.channel_number)
    expected = frames.marshal(settings.queue_name("default"), None, body)
    assert expected is not None
    # Counted as pika counts what it sends: exactly this publish's frames went out.
    assert connection.bytes_sent - sent_before == len(expected)
    assert rows_of(client, job.id) == 1


def test_threads_sharing_a_client_publish_on_their_own_connections(
    client: Client, settings: Settings
) -> None:
    client.enqueue("noop")
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for _ in range(25):
                client.enqueue("noop")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=produce) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert len(client._sender._publishers) >= 4
    assert message_count(settings.queue_name("default")) == 101


def test_a_database_gone_before_the_enqueue_fails_it_and_sends_nothing(
    proxied_client: Client, proxied_db: Database, proxy: TcpProxy, settings: Settings
) -> None:
    proxied_client.enqueue("noop")
    proxy.cut()
    assert proxied_db.direct is not None
    proxied_db.direct.close()  # as after a failed write: the connection is known broken

    with pytest.raises(ServiceUnavailable, match="PostgreSQL") as raised:
        proxied_client.enqueue("noop")

    assert not isinstance(raised.value, JobNotRecorded)
    assert message_count(settings.queue_name("default")) == 1


def test_a_database_that_goes_away_mid_enqueue_loses_nothing(
    proxied_client: Client,
    proxy: TcpProxy,
    client: Client,
    settings: Settings,
    start_worker: WorkerProcess.Factory,
) -> None:
    proxied_client.enqueue("noop")  # the direct connection is open: the next enqueue sends first
    proxy.cut()

    with pytest.raises(JobNotRecorded, match="do not enqueue it again") as raised:
        proxied_client.enqueue("noop")

    job_id = raised.value.job_id
    assert message_count(settings.queue_name("default")) == 2
    assert rows_of(client, job_id) == 0
    start_worker("--processes", "1", "--threads", "2")
    eventually(lambda: rows_of(client, job_id) == 1 and client.get(job_id).status == "succeeded", timeout=30)


def test_a_database_back_within_the_enqueue_timeout_gets_the_row(
    proxied_client: Client, proxy: TcpProxy, client: Client
) -> None:
    proxied_client.enqueue("noop")
    proxy.cut()
    threading.Timer(0.5, proxy.start).start()

    job = proxied_client.enqueue("noop")

    assert rows_of(client, job.id) == 1
    assert client.get(job.id).status == "queued"


def test_the_send_first_row_commits_lazily_without_changing_the_connections_setting(
    client: Client, db: Database, settings: Settings
) -> None:
    client.enqueue("noop")  # opens the direct connection: the next enqueues send first
    job = client.enqueue(
        "email", to="zoë@example.com", template="welcome", context={"n": 'ü"\n'}, max_retries=2
    )

    assert rows_of(client, job.id) == 1
    stored = client.get(job.id).info
    assert stored.payload == {"to": ["zoë@example.com"], "template": "welcome", "context": {"n": 'ü"\n'}}
    assert (stored.status, stored.max_retries, stored.priority, stored.kind) == ("queued", 2, None, "email")
    assert stored.created_at == job.info.created_at
    assert db.direct is not None
    with db.direct.connect() as connection:  # the claims of email jobs commit on it durably
        assert connection.execute("SHOW synchronous_commit").fetchone() == ("on",)


def test_enqueue_many_sends_first_and_keeps_the_rows_faster_workers_wrote(
    client: Client, settings: Settings, db: Database, job_store: JobStore
) -> None:
    client.enqueue("noop")
    queue = settings.queue_name("default")
    jobs = [NewJob(str(uuid.uuid4()), "noop", queue, {}, max_retries=3) for _ in range(3)]
    worker_started(db, jobs[1].id, queue)  # a worker made the second row on first sight

    before = job_store.create_sent(NewJob(str(uuid.uuid4()), "noop", queue, {}, max_retries=3))

    infos = job_store.create_many_sent(jobs)  # COPY fails on the worker's row and rolls back

    assert [info.id for info in infos] == [job.id for job in jobs]
    assert [client.get(job.id).status for job in jobs] == ["queued", "running", "queued"]
    # psycopg deallocates every prepared statement after a rollback: create_sent's comes back.
    after = job_store.create_sent(NewJob(str(uuid.uuid4()), "noop", queue, {}, max_retries=3))
    assert rows_of(client, before.id) == rows_of(client, after.id) == 1
    sent = client.enqueue_many("noop", [{}] * 30)
    assert all(rows_of(client, job.id) == 1 for job in sent)
    assert message_count(queue) == 31


def test_a_database_that_goes_away_mid_enqueue_many_names_every_job_and_loses_none(
    proxied_client: Client,
    proxy: TcpProxy,
    client: Client,
    settings: Settings,
    start_worker: WorkerProcess.Factory,
) -> None:
    proxied_client.enqueue("noop")
    proxy.cut()

    with pytest.raises(JobNotRecorded, match="its 5 jobs") as raised:
        proxied_client.enqueue_many("noop", [{}] * 5)

    ids = raised.value.job_ids
    assert len(ids) == 5
    assert raised.value.job_id == ids[0]
    assert message_count(settings.queue_name("default")) == 6
    assert all(rows_of(client, job_id) == 0 for job_id in ids)
    start_worker("--processes", "1", "--threads", "2")
    eventually(
        lambda: all(client.get_many([i]) and client.get(i).status == "succeeded" for i in ids), timeout=30
    )


def test_rows_written_by_a_producer_and_by_workers_at_once_never_deadlock(
    db: Database, job_store: JobStore, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A producer's ``COPY`` of published jobs' rows, and workers' batched starts that make the
    same rows on first sight, each meeting the jobs in its own order: both write in id order, so
    neither waits on the other in a cycle (a CI run met PostgreSQL's deadlock detector here)."""
    queue = settings.queue_name("default")
    shuffle = random.Random(14).shuffle
    writer = BatchedAttemptStore(Database(settings.database_url))
    failures: list[BaseException] = []

    def start_all(share: list[SeenMessage]) -> None:
        try:
            for message in share:
                writer.start(message, WORKER)
        except Exception as exc:  # reported by the assertion below
            failures.append(exc)

    try:
        for _ in range(ROUNDS):
            jobs = [NewJob(str(uuid.uuid4()), "noop", queue, {}, max_retries=3) for _ in range(200)]
            seen = [seen_noop(queue, job.id) for job in jobs]
            shuffle(seen)
            threads = [threading.Thread(target=start_all, args=(seen[i::8],)) for i in range(8)]
            for thread in threads:
                thread.start()
            shuffle(jobs)
            try:
                infos = job_store.create_many_sent(jobs)
            finally:
                for thread in threads:
                    thread.join()
            assert [info.id for info in infos] == [job.id for job in jobs]  # in the caller's order
            assert not failures
            assert {info.status for info in job_store.by_ids(job.id for job in jobs)} == {"running"}
    finally:
        writer.close()
        writer.db.dispose()
    assert "deadlock" not in caplog.text
