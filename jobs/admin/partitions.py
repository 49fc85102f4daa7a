"""Partition upkeep: the day partitions of ``jobs`` made ahead, by every worker process and the
scheduler's leader (``jobs/store/partitions.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from jobs.store.partitions import PartitionStore

#: Seconds between two checks: the partitions are made days ahead, so an hour is plenty.
INTERVAL = 3600.0


class PartitionUpkeep:
    """Makes the missing day partitions when called, at most once per :data:`INTERVAL`.

    A check that fails (the database is unreachable) raises, and the next call tries again."""

    def __init__(self, store: PartitionStore, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self._next: float | None = None

    def __call__(self) -> list[str]:
        """The partitions made by this call (none: not due, or none missing)."""
        if not self.store.enabled or (self._next is not None and self.clock() < self._next):
            return []
        made = self.store.ensure(datetime.now(UTC).date())
        self._next = self.clock() + INTERVAL
        return made
