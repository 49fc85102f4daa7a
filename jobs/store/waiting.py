"""Store writes that must not be lost wait out a database outage instead of failing."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from jobs.errors import ServiceUnavailable

logger = logging.getLogger("conveyor.store")
T = TypeVar("T")

#: Seconds between two tries while the database is unreachable (doubling up to the maximum).
RETRY_MIN = 0.5
RETRY_MAX = 10.0


def wait_for_store(operation: Callable[[], T], stopping: threading.Event | None = None) -> T:
    """Run ``operation`` until the database takes it.

    The caller's message stays unacknowledged meanwhile: if the worker is stopped
    first (``stopping`` set), the error propagates and RabbitMQ redelivers the message.
    """
    pause = RETRY_MIN
    while True:
        try:
            return operation()
        except ServiceUnavailable as exc:
            if stopping is not None and stopping.is_set():
                raise
            logger.warning("%s; retrying in %.1f s", exc, pause)
            time.sleep(pause)
            pause = min(pause * 2, RETRY_MAX)


def take_batch(writes: queue.SimpleQueue[T | None], first: T, limit: int) -> list[T]:
    """``first`` and whatever else has queued up behind it, at most ``limit``, without waiting.

    ``None`` is a writer's signal to stop: it is put back, to be seen by the writer's next turn.
    """
    batch = [first]
    while len(batch) < limit:
        try:
            item = writes.get_nowait()
        except queue.Empty:
            break
        if item is None:
            writes.put(None)
            break
        batch.append(item)
    return batch
