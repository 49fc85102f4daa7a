"""Paused queues in a worker process: stop fetching from a queue an admin paused, and start again.

Every worker process reads the namespace's paused set (``queue_pauses``) on its one-second
tick and pauses or resumes Dramatiq's consumer thread of each queue it consumes:

- Pausing marks the thread paused and its consumer ``pausing``: the consumer delivers nothing
  more, the thread leaves its loop and closes its channel. RabbitMQ puts every message that
  channel had delivered but not acknowledged back in the queue, ready.
- Messages the process had fetched but not started are skipped (``StaleDeliveries``): their
  channel is gone. Jobs running at that moment finish and their end is recorded; their
  acknowledgement is dropped, so RabbitMQ delivers them again after the resume, and the
  takeover check skips them as already finished. Nothing is lost, nothing runs twice.
- Resuming lets the thread open a new channel within about a second.

The queue's delay queue (``.DQ``) keeps being consumed: it only moves due messages into the
paused queue, where they wait like the others.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Protocol

import dramatiq
from dramatiq.middleware import Middleware

from jobs.errors import ConveyorError

logger = logging.getLogger("conveyor.worker")


class ConsumerThread(Protocol):
    """What is used of Dramatiq's ``worker.ConsumerThread``."""

    queue_name: str

    def pause(self) -> None: ...

    def resume(self) -> None: ...


class PausableConsumers:
    """Applies a paused set to a Dramatiq worker's consumer threads (by queue name)."""

    def __init__(self, consumers: Mapping[str, ConsumerThread], read_paused: Callable[[], set[str]]) -> None:
        self._consumers = consumers
        self._read_paused = read_paused
        #: The queues this process holds paused now.
        self.paused: set[str] = set()
        self._lock = threading.Lock()

    def boot(self, thread: ConsumerThread) -> None:
        """Pause a consumer thread as it starts, before it fetches anything, if its queue is paused."""
        try:
            wanted = self._read_paused()
        except ConveyorError as exc:
            logger.warning("cannot read the paused queues (%s): consuming %s", exc, thread.queue_name)
            return
        with self._lock:
            if thread.queue_name in wanted and thread.queue_name not in self.paused:
                _pause(thread)
                self.paused.add(thread.queue_name)
                logger.info(
                    "queue %s is paused: fetching nothing from it until it is resumed", thread.queue_name
                )

    def refresh(self) -> set[str]:
        """Read the paused set and apply it; a failed read keeps the current state (logged).

        Returns the queues paused in this process afterwards.
        """
        try:
            wanted = self._read_paused()
        except ConveyorError as exc:
            logger.warning("cannot read the paused queues (%s): keeping them as they are", exc)
            return set(self.paused)
        with self._lock:
            self._apply(wanted)
            return set(self.paused)

    def _apply(self, wanted: set[str]) -> None:
        for queue, thread in list(self._consumers.items()):
            if queue in wanted and queue not in self.paused:
                _pause(thread)
                self.paused.add(queue)
                logger.info("queue %s paused: fetching nothing from it until it is resumed", queue)
            elif queue not in wanted and queue in self.paused:
                _resume(thread)
                self.paused.discard(queue)
                logger.info("queue %s resumed", queue)


class PausedAtBoot(Middleware):
    """Pauses a consumer thread of a paused queue before its first fetch (Dramatiq's
    ``after_consumer_thread_boot`` runs in that thread before it consumes)."""

    def __init__(self, consumers: PausableConsumers) -> None:
        self.consumers = consumers

    def after_consumer_thread_boot(self, broker: dramatiq.Broker, thread: ConsumerThread) -> None:
        self.consumers.boot(thread)


def _pause(thread: ConsumerThread) -> None:
    thread.pause()
    consumer = getattr(thread, "consumer", None)
    if consumer is not None and hasattr(consumer, "pausing"):
        consumer.pausing = True


def _resume(thread: ConsumerThread) -> None:
    consumer = getattr(thread, "consumer", None)
    if consumer is not None and hasattr(consumer, "pausing"):
        consumer.pausing = False
    thread.resume()
