"""Each queue's RabbitMQ prefetch: how many messages a worker process takes ahead of its threads.

Dramatiq takes twice the threads from every queue. Conveyor acknowledges a message only once its
outcome is stored, by a batched write that lands a few milliseconds after the job ended, and
RabbitMQ counts the message against the window until then: with twice the threads, the threads
of a process running short jobs wait for deliveries more than they run jobs. So each kind names
its window per thread (``JobKind.prefetch``: deep for short jobs, 1 for reports), and
``CONVEYOR_PREFETCH`` sets one for every queue.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import dramatiq

from jobs.kinds import KINDS, JobKind
from jobs.settings import Settings

#: Messages per thread for a queue no Conveyor kind uses (the application's own actors): Dramatiq's.
DRAMATIQ_PREFETCH = 2
#: The largest prefetch count AMQP allows.
MAX_PREFETCH_COUNT = 65535


class PrefetchingWorker(dramatiq.Worker):
    """Dramatiq's worker, whose consumer of each queue takes ``prefetch(queue)`` messages ahead."""

    def __init__(self, broker: dramatiq.Broker, *, prefetch: Callable[[str], int], **options: Any) -> None:
        super().__init__(broker, **options)
        self._prefetch = prefetch

    def _add_consumer(self, queue_name: str, *, delay: bool = False) -> None:
        if not delay:  # a delay queue keeps Dramatiq's own (deep) window
            # Read by Dramatiq's own method as it makes the queue's consumer.
            self.queue_prefetch = self._prefetch(queue_name)
        super()._add_consumer(queue_name, delay=delay)


def queue_prefetch(
    settings: Settings, threads: int, kinds: Mapping[str, JobKind] = KINDS
) -> Callable[[str], int]:
    """The prefetch count of each queue (by its full name) for a process of ``threads`` threads:
    ``CONVEYOR_PREFETCH``, else the smallest window of the kinds on that queue, per thread."""
    per_queue: dict[str, int] = {}
    for kind in kinds.values():
        queue = settings.queue_name(kind.queue)
        per_queue[queue] = min(per_queue.get(queue, kind.prefetch), kind.prefetch)

    def prefetch(queue_name: str) -> int:
        per_thread = settings.prefetch or per_queue.get(queue_name, DRAMATIQ_PREFETCH)
        return min(per_thread * threads, MAX_PREFETCH_COUNT)

    return prefetch
