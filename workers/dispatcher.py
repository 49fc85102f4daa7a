"""A worker process's housekeeping thread: publishes delayed messages as they come due, and sweeps
for orphaned jobs.

Every process runs one; they need no leader: due rows are shared out with ``SKIP LOCKED``
and a sweep runs under a transaction-level advisory lock that one process at a time gets.
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
from jobs.defaults import DELAYED_POLL_INTERVAL
from jobs.errors import ServiceUnavailable
from jobs.store.delayed import DUE_OPTION, DelayedStore

logger = logging.getLogger("conveyor.dispatcher")

_RETRIED: tuple[type[BaseException], ...] = (ServiceUnavailable, *BROKER_ERRORS)

#: Seconds between two warnings about the same failing chore.
WARN_EVERY = 30.0


class Dispatcher(threading.Thread):
    """Publishes due delayed messages every ``interval`` seconds, and runs ``sweep`` every
    ``sweep_interval`` seconds, until stopped."""

    def __init__(
        self,
        broker: dramatiq.Broker,
        delayed: DelayedStore,
        *,
        namespace: str,
        sweep: Callable[[], object] | None = None,
        sweep_interval: float = 30.0,
        upkeep: Callable[[], object] | None = None,
        interval: float = DELAYED_POLL_INTERVAL,
    ) -> None:
        super().__init__(name="conveyor-dispatcher", daemon=True)
        self.broker = broker
        self.delayed = delayed
        self.namespace = namespace
        self.sweep = sweep
        self.sweep_interval = sweep_interval
        #: Run with each sweep: the partitions of ``jobs`` (it keeps its own, hourly, pace).
        self.upkeep = upkeep
        self.interval = interval
        self.published = 0
        self._stop_event = threading.Event()
        self._last_warning: dict[str, float] = {}

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        next_sweep = time.monotonic() + self.sweep_interval
        while not self._stop_event.wait(self.interval):
            self._guard("publishing delayed messages", self.dispatch_once)
            if self.sweep is not None and time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + self.sweep_interval
                self._guard("sweeping for orphaned jobs", self.sweep)
                if self.upkeep is not None:
                    self._guard("making the partitions of jobs", self.upkeep)
        # A final round, so that what came due during shutdown does not wait for the next replica.
        self._guard("publishing delayed messages", self.dispatch_once)

    def dispatch_once(self) -> int:
        """Publish what is due now (in batches until none is left); return how many."""
        total = 0
        while True:
            count = self.delayed.dispatch_due(self._publish, namespace=self.namespace)
            total += count
            if count < DelayedStore.BATCH or self._stop_event.is_set():
                break
        if total:
            logger.debug("published %d delayed message(s) that came due", total)
        self.published += total
        return total

    def _publish(self, message: dramatiq.Message[Any]) -> None:
        self.broker.enqueue(message)
        metrics.delayed_published(message.queue_name, message.options.get(DUE_OPTION))

    def _guard(self, chore: str, operation: Callable[[], object]) -> None:
        try:
            operation()
        except _RETRIED as exc:
            # Outages are expected and retried next round: warn now and then, not every half second.
            now = time.monotonic()
            if now - self._last_warning.get(chore, 0.0) >= WARN_EVERY:
                self._last_warning[chore] = now
                logger.warning(
                    "%s failed, retrying: %s", chore, str(exc).splitlines()[0] if str(exc) else exc
                )
        except Exception:
            logger.exception("%s failed unexpectedly; retrying next round", chore)
