"""The outbox relay: publishes the jobs applications enqueued inside their own transactions
(``enqueue(..., session=S)``, SPEC §11) once those have committed.

Every worker process runs one, as it runs a dispatcher: no process to add, and no leader to
elect. Relays share the entries with ``SKIP LOCKED`` (``jobs/store/outbox.py``); each waits on
``LISTEN conveyor_outbox``, which the commit of an entry notifies, and scans every
:data:`POLL_INTERVAL` seconds besides (a notification missed while its connection was down).
While RabbitMQ or PostgreSQL is unreachable the entries wait in PostgreSQL (the applications'
commits go on) and the relay tries again, backing off up to :data:`RETRY_MAX` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import dramatiq

from jobs import metrics
from jobs.broker import BROKER_ERRORS
from jobs.errors import ServiceUnavailable
from jobs.settings import Settings
from jobs.store.outbox import OutboxListener, OutboxStore
from producers.pipelined import PipelinedPublisher

logger = logging.getLogger("conveyor.relay")

_RETRIED: tuple[type[BaseException], ...] = (ServiceUnavailable, *BROKER_ERRORS)

#: Seconds between two scans when no notification came.
POLL_INTERVAL = 1.0
#: Seconds before trying again after a failed round, doubling up to the maximum.
RETRY_MIN = 0.25
RETRY_MAX = 5.0
#: Seconds between two warnings about the same outage.
WARN_EVERY = 30.0

#: Called with the messages of a batch once RabbitMQ confirmed them, before their entries are
#: deleted (the crash tests stop a relay there).
AfterPublish = Callable[[list[dramatiq.Message[Any]]], None]


class Relay(threading.Thread):
    """Publishes the namespace's committed outbox entries until stopped."""

    def __init__(
        self,
        settings: Settings,
        broker: dramatiq.Broker,
        outbox: OutboxStore,
        *,
        poll_interval: float = POLL_INTERVAL,
        after_publish: AfterPublish | None = None,
    ) -> None:
        super().__init__(name="conveyor-relay", daemon=True)
        self.settings = settings
        self.broker = broker
        self.outbox = outbox
        self.poll_interval = poll_interval
        self.after_publish = after_publish
        #: Entries this relay published (a count for tests and logs).
        self.published = 0
        self._publisher = PipelinedPublisher(settings)
        self._listener: OutboxListener | None = None
        self._stop_event = threading.Event()
        self._last_warning = 0.0

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        pause = RETRY_MIN
        try:
            while not self._stop_event.is_set():
                try:
                    self.relay_once()
                    pause = RETRY_MIN
                    self._wait()
                except _RETRIED as exc:
                    self._warn(exc)
                    self._reset()
                    self._stop_event.wait(pause)
                    pause = min(pause * 2, RETRY_MAX)
                except Exception:
                    logger.exception("outbox relay failed unexpectedly; retrying")
                    self._reset()
                    self._stop_event.wait(RETRY_MAX)
        finally:
            self._reset()

    def relay_once(self) -> int:
        """Publish every committed entry there is now, a batch per transaction; return how many.

        Raises:
            ServiceUnavailable: PostgreSQL is unreachable.
            pika.exceptions.AMQPError, OSError: RabbitMQ is unreachable or refused the messages.
        """
        total = 0
        while not self._stop_event.is_set():
            count = self.outbox.relay(self._publish, namespace=self.settings.namespace)
            total += count
            if count < OutboxStore.BATCH:
                break
        self.published += total
        return total

    def _publish(self, messages: list[dramatiq.Message[Any]]) -> None:
        for queue in {m.queue_name for m in messages}:
            self.broker.declare_queue(queue, ensure=True)  # type: ignore[call-arg]
        self._publisher.publish(messages)
        if self.after_publish is not None:
            self.after_publish(messages)
        for message in messages:
            metrics.outbox_published(message.queue_name, message.message_timestamp)

    def _wait(self) -> None:
        """Until a commit notifies, a poll is due, or the relay is stopped."""
        if self._listener is None:
            self._listener = self.outbox.listener()
        deadline = time.monotonic() + self.poll_interval
        while not self._stop_event.is_set():
            remaining = deadline - time.monotonic()
            # Short waits, so that a stop is seen within a fraction of the poll interval.
            if remaining <= 0 or self._listener.wait(min(remaining, 0.25)):
                return

    def _reset(self) -> None:
        """Drop the connections: the next round opens fresh ones."""
        self._publisher.close()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _warn(self, exc: BaseException) -> None:
        # An outage lasts: warn now and then, not at every retry.
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY:
            self._last_warning = now
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            logger.warning("outbox relay: publishing failed, the entries wait and are retried: %s", first)
