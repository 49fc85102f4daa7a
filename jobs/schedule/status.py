"""What ``conveyor schedule list`` shows: each entry's timing, next runs and last tick."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobs.schedule.cron import CronTiming, IntervalTiming, utc_iso
from jobs.schedule.spec import Schedule, ScheduleEntry
from jobs.store import Database, JobStore
from jobs.store.schedule import TickStore


@dataclass(frozen=True)
class EntryStatus:
    """One entry as the scheduler sees it now."""

    entry: ScheduleEntry
    next_runs: list[datetime]
    #: The last tick dealt with (enqueued, or skipped by catch-up); ``None`` before the first round.
    last_tick: datetime | None
    #: The job of ``last_tick``, when that tick was enqueued (and its job not pruned).
    last_job_id: str | None
    last_job_status: str | None

    def to_dict(self) -> dict[str, Any]:
        """Stable keys, for ``--json``."""
        timing = self.entry.timing
        return {
            "name": self.entry.name,
            "kind": self.entry.kind,
            "schedule": timing.describe(),
            "cron": timing.expression if isinstance(timing, CronTiming) else None,
            "every": timing.text if isinstance(timing, IntervalTiming) else None,
            "timezone": str(timing.zone) if isinstance(timing, CronTiming) else "UTC",
            "catch_up": self.entry.catch_up.value,
            "payload": dict(self.entry.payload),
            "next_runs": [utc_iso(moment) for moment in self.next_runs],
            "last_tick": utc_iso(self.last_tick) if self.last_tick else None,
            "last_job_id": self.last_job_id,
            "last_job_status": self.last_job_status,
        }


def next_runs(entry: ScheduleEntry, after: datetime, count: int) -> list[datetime]:
    """The entry's next ``count`` ticks after ``after``."""
    runs: list[datetime] = []
    moment = after
    for _ in range(count):
        moment = entry.timing.next_after(moment)
        runs.append(moment)
    return runs


def entry_statuses(
    schedule: Schedule, db: Database, namespace: str, now: datetime, count: int
) -> list[EntryStatus]:
    """Every entry of ``schedule``, with its last tick in ``namespace``.

    Raises:
        ServiceUnavailable: the database cannot be reached.
    """
    last_ticks = TickStore(db, namespace).last_ticks()
    jobs = JobStore(db)
    statuses = []
    for entry in schedule.entries:
        last = last_ticks.get(entry.name)
        job = jobs.find_by_idempotency_key(entry.idempotency_key(namespace, last)) if last else None
        statuses.append(
            EntryStatus(
                entry=entry,
                next_runs=next_runs(entry, now, count),
                last_tick=last,
                last_job_id=job.id if job else None,
                last_job_status=job.status if job else None,
            )
        )
    return statuses
