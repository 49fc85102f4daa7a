"""A job runs once when its message comes twice.

After a connection loss, the prefetched messages of the dead channel run nothing and ack
nothing; a copy of a running job's message waits until that job's worker is gone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import SkipMessage

from jobs.broker import build_broker
from jobs.consumer import ChannelBoundConsumer, is_stale
from jobs.kinds import KINDS
from jobs.middleware.heartbeat import Heartbeat, Replica
from jobs.middleware.stale import StaleDeliveries
from jobs.settings import Settings
from jobs.store import AttemptStore, Database, WorkerIdentity
from producers import Client
from tests.helpers import WorkerProcess, eventually, message_count, next_message, seen_noop
from tests.proxy import TcpProxy

pytestmark = [pytest.mark.integration]


def read_until_closed(consumer: Any) -> None:
    """What pika had already read comes first; then the drop shows."""
    for _ in range(3):
        next_message(consumer)


def test_a_message_of_a_closed_channel_is_skipped_and_its_tag_never_acks_another(settings: Settings) -> None:
    proxy = TcpProxy(5672)
    proxied = dataclasses.replace(settings, broker_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F")
    queue = settings.queue_name("default")
    with proxy.running():
        broker = build_broker(proxied)
        for n in range(2):
            broker.enqueue(
                dramatiq.Message(queue_name=queue, actor_name="noop", args=(n,), kwargs={}, options={})
            )
        first = broker.consume(queue, prefetch=2, timeout=100)
        assert isinstance(first, ChannelBoundConsumer)
        stale = next_message(first)
        assert not is_stale(stale)

        proxy.cut()  # the connection drops, as when RabbitMQ stops
        with pytest.raises(ConnectionClosed):
            read_until_closed(first)
        with contextlib.suppress(ConnectionClosed):
            first.close()
        assert is_stale(stale)
        with pytest.raises(SkipMessage):
            StaleDeliveries().before_process_message(broker, stale)

        proxy.start()
        second = broker.consume(queue, prefetch=1, timeout=100)
        again = next_message(second)
        assert again.redelivered
        assert again._tag == stale._tag  # a new channel numbers its deliveries from 1 again
        # Dramatiq acknowledges on the worker's current consumer: the stale tag must not ack `again`.
        second.ack(stale)
        assert not is_stale(again)
        second.close()
        with contextlib.suppress(Exception):
            broker.close()
    assert message_count(queue) == 2, "a stale acknowledgement consumed another message"


def test_a_copy_of_a_running_jobs_message_waits_until_its_worker_is_gone(
    client: Client, db: Database, settings: Settings, start_worker: WorkerProcess.Factory
) -> None:
    job_id = str(uuid.uuid4())
    seen = seen_noop(settings.queue_name("default"), job_id)
    owner = WorkerIdentity(worker_id="other-host:7:abc", host="other-host", pid=7)
    assert AttemptStore(db).start(seen, owner) is not None  # it runs there, and beats:
    registry = redis.Redis.from_url(settings.redis_url)
    beat = Heartbeat(
        registry,
        namespace=settings.namespace,
        replica=Replica.create(processes=1),
        threads=1,
        ttl=60,
        worker_id=owner.worker_id,
    )
    assert beat.beat()
    worker = start_worker(env={"CONVEYOR_WORKER_TTL": "3", "CONVEYOR_RECONCILE_INTERVAL": "1"})

    # A second copy of its message (a redelivery after a broker restart, a re-published enqueue).
    broker = build_broker(settings)
    broker.enqueue(
        dramatiq.Message(
            queue_name=settings.queue_name("default"),
            actor_name=KINDS["noop"].actor_name,
            args=(),
            kwargs={"sleep": 0},
            options={},
            message_id=job_id,
        )
    )
    broker.close()
    eventually(lambda: worker.count(f"still runs on {owner.worker_id}") >= 3, timeout=30)
    job = client.get(job_id)
    assert job.status == "running"
    assert [a.attempt for a in job.history()] == [1]

    registry.delete(beat.key)  # its worker is gone: the waiting copy takes the job over
    registry.close()
    assert job.wait(timeout=30)["attempt"] == 2
    assert [a.outcome for a in job.history()] == ["lost", "succeeded"]
