"""The pace of partition upkeep (``jobs/admin/partitions.py``): hourly, and again at once after a failure."""

from __future__ import annotations

from datetime import date
from typing import Any, cast

import pytest

from jobs.admin.partitions import INTERVAL, PartitionUpkeep
from jobs.errors import ServiceUnavailable
from jobs.store.partitions import PartitionStore


class _Store:
    enabled = True

    def __init__(self) -> None:
        self.days: list[date] = []
        self.fail = False

    def ensure(self, today: date) -> list[str]:
        if self.fail:
            raise ServiceUnavailable("PostgreSQL", "postgresql://db", "refused")
        self.days.append(today)
        return [f"made {len(self.days)}"]


def _upkeep(store: _Store, clock: list[float]) -> PartitionUpkeep:
    return PartitionUpkeep(cast(PartitionStore, store), clock=lambda: clock[0])


def test_it_checks_at_most_once_an_interval() -> None:
    store, clock = _Store(), [100.0]
    upkeep = _upkeep(store, clock)
    assert upkeep() == ["made 1"]
    clock[0] += INTERVAL - 1
    assert upkeep() == []
    clock[0] += 1
    assert upkeep() == ["made 2"]
    assert len(store.days) == 2


def test_a_failed_check_is_tried_again_at_the_next_call() -> None:
    store, clock = _Store(), [100.0]
    upkeep = _upkeep(store, clock)
    store.fail = True
    with pytest.raises(ServiceUnavailable):
        upkeep()
    store.fail = False
    clock[0] += 1
    assert upkeep() == ["made 1"]


def test_nothing_is_done_without_partitions() -> None:
    store: Any = _Store()
    store.enabled = False
    assert _upkeep(store, [0.0])() == []
    assert store.days == []
