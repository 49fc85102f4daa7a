"""RabbitMQ's consumer_timeout lowered to 60 s, jobs due 90 s later: a delayed job, a retry waiting
out a ~90 s backoff, and a plain Dramatiq producer's delayed message (taken out of the ``.DQ``).
They wait in PostgreSQL, not unacknowledged in a worker, so no channel is closed: each runs once,
on time. A canary consumer that does hold a message unacknowledged shows the timeout in force.

RabbitMQ checks a channel's oldest unacknowledged delivery only at the channel's tick, once a
minute by default: a message held 90 s from a few seconds after the channel opened would slip
between two checks (at ~58 s and after it was acknowledged). The tick is shortened to 1 s for the
test, so that a worker holding a message longer than 60 s is cut off and the test fails."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import pika
import pika.exceptions
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from sqlalchemy import select

from jobs.settings import Settings
from jobs.store import Database
from jobs.store.models import DelayedMessageRow
from producers import Client, JobStatus
from tests.chaos.conftest import Record
from tests.chaos.services import rabbitmq_get_env, rabbitmq_setting
from tests.helpers import AMQP_URL, WorkerProcess, eventually, message_count

pytestmark = pytest.mark.chaos

#: Milliseconds: RabbitMQ's consumer_timeout during the test (its default is 30 min).
CONSUMER_TIMEOUT = 60_000
#: Seconds until the jobs are due: longer than the timeout.
DELAY = 90
#: Seconds after its due time within which a job must start.
ON_TIME = 3.0
#: Milliseconds between two checks of a channel for timed-out deliveries (default 60 000).
TICK_INTERVAL = 1_000
#: Seconds after its delivery by which the canary's channel must have been closed.
CANARY_WAIT = (CONSUMER_TIMEOUT + TICK_INTERVAL) / 1000 + 10
#: What a worker logs when RabbitMQ closes its channel (or it restarts its consumer).
CHANNEL_CLOSED = (
    "PRECONDITION_FAILED",
    "consumer ack timed out",
    "delivery acknowledgement",
    "Restarting consumer",
    "Consumer encountered",
)


class Canary(threading.Thread):
    """A consumer of a queue of its own that never acknowledges its one message: RabbitMQ closes
    its channel once the consumer_timeout in force has passed (and the test knows it is)."""

    def __init__(self) -> None:
        super().__init__(name="consumer-timeout-canary", daemon=True)
        self.delivered: float | None = None
        self.closed: float | None = None
        self.reason: str | None = None
        self.error: BaseException | None = None
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._ready = threading.Event()

    def run(self) -> None:
        try:
            self._connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
            self._channel = channel = self._connection.channel()
            queue = channel.queue_declare("", exclusive=True).method.queue
            channel.basic_publish("", queue, b"held, never acknowledged")
            channel.basic_qos(prefetch_count=1)
            channel.basic_consume(queue, self._on_message, auto_ack=False)
            self._ready.set()
            channel.start_consuming()
        except pika.exceptions.ChannelClosedByBroker as exc:
            self.closed = time.monotonic()
            self.reason = f"{exc.reply_code} {exc.reply_text}"
        except BaseException as exc:
            self.error = exc
        finally:
            self._ready.set()
            if self._connection is not None and self._connection.is_open:
                self._connection.close()

    def _on_message(self, _channel: Any, _method: Any, _properties: Any, _body: bytes) -> None:
        self.delivered = time.monotonic()

    def wait_delivered(self) -> None:
        self._ready.wait(10)
        eventually(lambda: self.delivered or self.error, timeout=10)
        assert self.error is None, self.error

    @property
    def closed_after(self) -> float | None:
        """Seconds from the delivery until RabbitMQ closed the channel (None: it did not)."""
        if self.closed is None or self.delivered is None:
            return None
        return round(self.closed - self.delivered, 1)

    def stop(self) -> None:
        if self.is_alive() and self._connection is not None:
            self._connection.add_callback_threadsafe(self._channel.stop_consuming)
        self.join(timeout=10)


def _held_ids(db: Database) -> set[str]:
    with db.session() as session:
        return set(session.scalars(select(DelayedMessageRow.message_id)))


def _exists(client: Client, job_id: str) -> bool:
    return bool(client.get_many([job_id]))


def _late(started: datetime, due: datetime) -> float:
    return round((started - due).total_seconds(), 3)


@pytest.mark.timeout(240)
def test_jobs_due_after_the_consumer_timeout_wait_in_postgresql_and_run_once_on_time(
    client: Client,
    db: Database,
    settings: Settings,
    start_worker: WorkerProcess.Factory,
    chaos_report: Record,
) -> None:
    queue = settings.queue_name("default")
    canary = Canary()
    with (
        rabbitmq_setting("consumer_timeout", CONSUMER_TIMEOUT) as previous,
        rabbitmq_setting("channel_tick_interval", TICK_INTERVAL) as previous_tick,
    ):
        in_force = rabbitmq_get_env("consumer_timeout")
        # Channels read consumer_timeout when they open: the canary and the worker open theirs now.
        canary.start()
        try:
            canary.wait_delivered()
            worker = start_worker("--processes", "2", "--threads", "2")

            delayed = client.enqueue("noop", delay=DELAY)
            delayed_due = delayed.eta  # while it waits: the row's eta is cleared once it runs
            retried = client.enqueue("noop", fail_attempts=1, min_backoff=DELAY, max_backoff=DELAY + 1)
            plain = RabbitmqBroker(url=AMQP_URL, confirm_delivery=True)
            try:
                control = plain.enqueue(
                    dramatiq.Message(
                        queue_name=queue,
                        actor_name="noop",
                        args=(),
                        kwargs={},
                        options={},
                        message_id=str(uuid.uuid4()),
                    ),
                    delay=DELAY * 1000,
                )
            finally:
                plain.close()
            control_due = datetime.fromtimestamp(control.options["eta"] / 1000, UTC)

            # All three wait in PostgreSQL; nothing waits in RabbitMQ, acknowledged or not.
            eventually(lambda: retried.refresh().status is JobStatus.RETRYING, timeout=20)
            ids = {delayed.id, retried.id, control.message_id}
            eventually(lambda: _held_ids(db) >= ids, timeout=20)
            retried_due = retried.eta
            assert delayed_due is not None
            assert retried_due is not None
            waiting_in_rabbitmq = message_count(queue) + message_count(f"{queue}.DQ")

            delayed.wait(timeout=DELAY + 30)
            retried.wait(timeout=DELAY + 30)
            eventually(lambda: _exists(client, control.message_id), timeout=30)
            control_job = client.get(control.message_id)
            control_job.wait(timeout=20)

            # By now the canary (and any channel holding a delivery) has been cut off.
            assert canary.delivered is not None
            canary.join(timeout=max(0.0, canary.delivered + CANARY_WAIT - time.monotonic()))
            still_in_force = rabbitmq_get_env("consumer_timeout")
            tick_in_force = rabbitmq_get_env("channel_tick_interval")
        finally:
            canary.stop()
    restored = rabbitmq_get_env("consumer_timeout")
    restored_tick = rabbitmq_get_env("channel_tick_interval")

    histories = {
        "delayed": (delayed.history(), delayed_due),
        "retried": (retried.history(), retried_due),
        "plain_dramatiq": (control_job.history(), control_due),
    }
    runs = {name: [a.outcome for a in history] for name, (history, _) in histories.items()}
    late = {name: _late(history[-1].started_at, due) for name, (history, due) in histories.items() if history}
    closures = {fragment: worker.count(fragment) for fragment in CHANNEL_CLOSED}
    deaths = worker.count(" died (exit code ")
    chaos_report(
        jobs=3,
        consumer_timeout_ms={"previous": previous, "during": in_force, "at_end": still_in_force},
        restored=restored,
        tick_interval_ms={"previous": previous_tick, "during": tick_in_force, "restored": restored_tick},
        delay_s=DELAY,
        runs=runs,
        late_s=late,
        waiting_in_rabbitmq=waiting_in_rabbitmq,
        channel_closures=sum(closures.values()),
        worker_deaths=deaths,
        canary={"closed_after_s": canary.closed_after, "reason": canary.reason},
    )

    assert in_force == still_in_force == CONSUMER_TIMEOUT, (in_force, still_in_force)
    assert tick_in_force == TICK_INTERVAL
    assert (restored, restored_tick) == (previous, previous_tick)
    assert canary.error is None, canary.error
    # The timeout was in force: a consumer holding a message unacknowledged was cut off.
    assert canary.closed_after is not None, "RabbitMQ did not close the canary's channel"
    assert "PRECONDITION_FAILED" in (canary.reason or ""), canary.reason
    # ... well before the jobs came due: a worker holding their messages would have been too.
    assert canary.closed_after < DELAY - 10, canary.closed_after
    assert waiting_in_rabbitmq == 0
    assert runs == {
        "delayed": ["succeeded"],
        "retried": ["retrying", "succeeded"],
        "plain_dramatiq": ["succeeded"],
    }, runs
    for name, (history, due) in histories.items():
        assert timedelta(0) <= history[-1].started_at - due < timedelta(seconds=ON_TIME), (name, late)
    assert closures == dict.fromkeys(CHANNEL_CLOSED, 0), worker.output
    assert deaths == 0, worker.output
    assert worker.process.poll() is None, worker.output
    assert _held_ids(db) & {delayed.id, retried.id, control.message_id} == set()
