"""`conveyor stats`: done, failed, retried, throughput and latency per kind or queue (SQL aggregates)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from jobs.store import Database
from jobs.store.jobs import utcnow
from jobs.store.stats import StatsStore


@dataclass(frozen=True)
class GroupStats:
    group: str
    done: int
    failed: int
    retried: int
    per_minute: float
    wait: dict[str, float | None]
    run: dict[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def job_stats(db: Database, since: datetime, by: str = "kind") -> list[GroupStats]:
    """Jobs finished since ``since``, grouped by ``kind`` or ``queue``.

    ``retried`` counts finished jobs that needed more than one attempt; latencies are
    p50/p95/p99 in seconds (queue wait: first attempts; run time: every attempt).

    Raises:
        ServiceUnavailable: the database cannot be reached.
    """
    minutes = max((utcnow() - since).total_seconds() / 60, 1 / 60)
    return [
        GroupStats(
            group=group.group,
            done=group.succeeded,
            failed=group.failed,
            retried=group.retried,
            per_minute=round(group.total / minutes, 3),
            wait=group.wait,
            run=group.run,
        )
        for group in StatsStore(db).finished_since(since, "kind" if by == "kind" else "queue")
    ]
