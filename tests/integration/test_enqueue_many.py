"""`Client.enqueue_many`: one COPY of the rows, pipelined confirms, rows removed when RabbitMQ refuses."""

from __future__ import annotations

import threading
import time
from typing import Any

import dramatiq
import pika
import pytest
from sqlalchemy import func, select

from jobs.errors import ServiceUnavailable
from jobs.settings import Settings
from jobs.store import Database, JobStore
from jobs.store.models import DelayedMessageRow, JobRow
from producers import Client, JobStatus, pipelined
from producers.pipelined import CONFIRM_WINDOW, PipelinedPublisher, PublishNotConfirmed
from tests.helpers import WorkerProcess, eventually, message_count
from tests.proxy import TcpProxy

pytestmark = [pytest.mark.integration]


def rows_in(db: Database, queue: str) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).where(JobRow.queue == queue)) or 0)


def test_enqueue_many_writes_every_row_and_confirms_every_message(
    client: Client, db: Database, job_store: JobStore, settings: Settings, start_worker: WorkerProcess.Factory
) -> None:
    queue = settings.queue_name("default")
    jobs = client.enqueue_many("noop", [{"sleep": 0}] * 1500, max_retries=1)

    assert len({job.id for job in jobs}) == 1500
    assert all(job.status is JobStatus.QUEUED for job in jobs)
    assert rows_in(db, queue) == 1500
    assert message_count(queue) == 1500

    start_worker("--processes", "1", "--threads", "8")
    eventually(lambda: all(i.status == "succeeded" for i in job_store.by_ids(j.id for j in jobs)), timeout=60)
    assert client.get(jobs[-1].id).info.max_retries == 1


def test_one_bad_payload_sends_nothing_and_names_its_position(
    client: Client, db: Database, settings: Settings
) -> None:
    queue = settings.queue_name("default")
    with pytest.raises(ValueError, match=r"payload #2: .*sleep"):
        client.enqueue_many("noop", [{}, {"sleep": 1}, {"sleep": "long"}])

    assert rows_in(db, queue) == 0
    assert message_count(queue) == 0


def test_delayed_jobs_of_enqueue_many_wait_in_postgresql(
    client: Client, db: Database, settings: Settings
) -> None:
    jobs = client.enqueue_many("noop", [{}, {}], delay=600)

    with db.session() as session:
        held = set(
            session.scalars(
                select(DelayedMessageRow.message_id).where(
                    DelayedMessageRow.queue == settings.queue_name("default")
                )
            )
        )
    assert held == {job.id for job in jobs}
    assert message_count(settings.queue_name("default")) == 0


def test_more_jobs_than_the_confirm_window_keep_their_payloads_and_options(
    client: Client, job_store: JobStore, settings: Settings
) -> None:
    count = CONFIRM_WINDOW * 2 + 321
    names = [f"n°{i} ünïcode \\ \t tab \n line {{}} 'quote\"" for i in range(count)]
    names[::1000] = ["long " * 2000] * len(names[::1000])  # bodies over one frame go through pika
    payloads = [{"to": "ada@example.com", "template": "welcome", "context": {"name": n}} for n in names]
    jobs = client.enqueue_many("email", payloads, priority=3, max_retries=2)

    assert message_count(settings.queue_name("email")) == count
    stored = {info.id: info for info in job_store.by_ids(job.id for job in jobs)}
    assert [stored[job.id].payload["context"]["name"] for job in jobs] == names
    assert {(i.status, i.priority, i.max_retries, i.attempts) for i in stored.values()} == {
        ("queued", 3, 2, 0)
    }


def test_messages_rabbitmq_cannot_route_fail_the_call_and_remove_its_rows(
    settings: Settings, db: Database
) -> None:
    queue = settings.queue_name("default")
    with Client(settings.with_overrides(enqueue_timeout=1)) as client:
        client.enqueue_many("noop", [{}])  # the queue is declared once per client
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
        connection.channel().queue_delete(queue)
        connection.close()

        with pytest.raises(ServiceUnavailable, match="could not route"):
            client.enqueue_many("noop", [{}] * 50)

        assert rows_in(db, queue) == 1


def test_confirms_that_never_come_fail_the_publish_at_its_deadline(
    client: Client, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipelined, "CONFIRM_TIMEOUT", 1.0)
    client.enqueue_many("noop", [{}])  # declares the queue
    message = dramatiq.Message(
        queue_name=settings.queue_name("default"), actor_name="noop", args=(), kwargs={}, options={}
    )
    proxy = TcpProxy(5672)
    with proxy.running():
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F"
        publisher = PipelinedPublisher(settings.with_overrides(broker_url=url))
        publisher.publish([message])

        proxy.stall()
        # Flowing again only well after the deadline, so that the failed publish's close of its
        # connection gets an answer; with a broken watchdog, the publish would succeed then.
        threading.Timer(3.0, proxy.resume).start()
        with pytest.raises(PublishNotConfirmed, match="did not confirm 1 of 1"):
            publisher.publish([message])
        publisher.close()


def test_a_channel_rabbitmq_never_puts_in_confirm_mode_fails_at_the_deadline(
    client: Client, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipelined, "CONFIRM_TIMEOUT", 1.0)
    client.enqueue_many("noop", [{}])  # declares the queue
    proxy = TcpProxy(5672)
    confirm_delivery = pika.channel.Channel.confirm_delivery

    def stalled_first(channel: Any, *args: Any, **kwargs: Any) -> Any:
        proxy.stall()  # RabbitMQ's answer (Confirm.SelectOk) waits in the proxy
        return confirm_delivery(channel, *args, **kwargs)

    monkeypatch.setattr(pika.channel.Channel, "confirm_delivery", stalled_first)
    with proxy.running():
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F"
        publisher = PipelinedPublisher(settings.with_overrides(broker_url=url))
        # Flowing again only well after the deadline, so that the failed publish's close of its
        # connection gets an answer; without the deadline, the publish would succeed then.
        threading.Timer(3.0, proxy.resume).start()
        with pytest.raises(PublishNotConfirmed, match="confirm mode"):
            publisher.publish([noop_message(settings)])
        publisher.close()


def test_a_confirm_is_taken_from_the_socket_without_turning_pikas_loop(
    client: Client, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.enqueue_many("noop", [{}])  # declares the queue
    publisher = PipelinedPublisher(settings)
    publisher.publish([noop_message(settings)])  # opens the connection
    assert publisher._connection is not None
    ioloop = publisher._connection._impl.ioloop
    impl = publisher._connection._impl
    turns: list[bool] = []
    poll = ioloop.poll
    monkeypatch.setattr(ioloop, "poll", lambda: (turns.append(True), poll())[1])
    decoded: list[bytes] = []
    received = impl._proto_data_received
    monkeypatch.setattr(impl, "_proto_data_received", lambda data: (decoded.append(data), received(data))[1])
    counted = (impl.bytes_received, impl.frames_received)

    for _ in range(5):
        publisher.publish([noop_message(settings)])

    assert turns == []  # each confirm was read from the socket here
    assert decoded == []  # and, a lone Basic.Ack, taken without pika's frame decoding
    assert (impl.bytes_received, impl.frames_received) == (counted[0] + 5 * 21, counted[1] + 5)
    assert message_count(settings.queue_name("default")) == 7  # with enqueue_many's
    publisher.close()


def test_a_connection_lost_while_awaiting_a_confirm_fails_at_once(client: Client, settings: Settings) -> None:
    client.enqueue_many("noop", [{}])  # declares the queue
    proxy = TcpProxy(5672)
    with proxy.running():
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F"
        publisher = PipelinedPublisher(settings.with_overrides(broker_url=url))
        publisher.publish([noop_message(settings)])
        proxy.stall()
        publisher.send([noop_message(settings)])
        proxy.cut()

        started = time.monotonic()
        with pytest.raises((pika.exceptions.AMQPError, OSError)):
            publisher.confirm()
        assert time.monotonic() - started < 5  # not the confirm timeout's 30 s
        publisher.close()


def noop_message(settings: Settings) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name=settings.queue_name("default"), actor_name="noop", args=(), kwargs={}, options={}
    )
