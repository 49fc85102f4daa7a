"""The dashboard's overview: charts of the last hour or day, and live counters.

The charts come from PostgreSQL (``jobs/store/overview.py``); the counters add the dead letters
(RabbitMQ's ``.XQ`` queues) and the live worker replicas (Redis heartbeats).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from jobs.kinds import KINDS
from jobs.settings import Settings
from jobs.store import Database
from jobs.store.jobs import utcnow
from jobs.store.overview import FinishedBucket, OverviewStore

#: The overview's windows: name → (length, bucket of the charts in seconds).
RANGES: dict[str, tuple[timedelta, int]] = {
    "1h": (timedelta(hours=1), 60),
    "24h": (timedelta(hours=24), 900),
}
#: The window of the "failed" counter.
FAILED_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class Window:
    """A chart window: its name (``1h``), start, end and bucket length in seconds."""

    name: str
    since: datetime
    until: datetime
    bucket_seconds: int


def window(name: str, now: datetime | None = None) -> Window:
    """The window called ``name`` (``1h`` or ``24h``), ending now.

    Raises:
        ValueError: an unknown name.
    """
    if name not in RANGES:
        raise ValueError(f"range must be one of {', '.join(RANGES)}, not {name!r}")
    length, bucket = RANGES[name]
    until = now or utcnow()
    return Window(name, until - length, until, bucket)


def charts(db: Database, span: Window) -> dict[str, Any]:
    """Finished jobs per minute (by outcome) and latency per bucket, with the window's totals.

    Raises:
        ServiceUnavailable: the database cannot be reached.
    """
    store = OverviewStore(db)
    finished = _every_bucket(store.finished(span.since, span.bucket_seconds), span)
    latency = store.latency(span.since, span.bucket_seconds)
    minutes = span.bucket_seconds / 60
    succeeded = sum(b.succeeded for b in finished)
    failed = sum(b.failed for b in finished)
    total = sum(b.succeeded + b.failed + b.other for b in finished)
    return {
        "range": span.name,
        "since": span.since.isoformat(),
        "until": span.until.isoformat(),
        "bucket_seconds": span.bucket_seconds,
        "totals": {
            "finished": total,
            "succeeded": succeeded,
            "failed": failed,
            "per_minute": round(total / ((span.until - span.since).total_seconds() / 60), 3),
        },
        "throughput": [
            {**b.to_dict(), "per_minute": round((b.succeeded + b.failed + b.other) / minutes, 3)}
            for b in finished
        ],
        "latency": [b.to_dict() for b in latency],
    }


def _every_bucket(buckets: list[FinishedBucket], span: Window) -> list[FinishedBucket]:
    """``buckets`` with the empty buckets of the window filled in (zero jobs), oldest first."""
    step = span.bucket_seconds
    start = int(span.since.timestamp()) // step * step
    end = int(span.until.timestamp())
    seen = {int(b.at.timestamp()): b for b in buckets}
    return [
        seen.get(at) or FinishedBucket(datetime.fromtimestamp(at, UTC), 0, 0, 0)
        for at in range(start, end + 1, step)
    ]


def job_counters(db: Database, now: datetime | None = None) -> dict[str, int]:
    """Jobs queued and running now, and failed in the last hour (PostgreSQL).

    Raises:
        ServiceUnavailable: the database cannot be reached.
    """
    counts = OverviewStore(db).counts((now or utcnow()) - FAILED_WINDOW)
    return {"queued": counts.queued, "running": counts.running, "failed_last_hour": counts.failed}


def queue_names(settings: Settings) -> list[str]:
    """The namespace's queues (full names), sorted."""
    return sorted({settings.queue_name(kind.queue) for kind in KINDS.values()})
