"""The dashboard's overview: charts of the last hour or day, and live counters.

The charts come from PostgreSQL (``jobs/store/overview.py``); the counters add the dead letters
(RabbitMQ's ``.XQ`` queues) and the live worker replicas (Redis heartbeats).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from jobs.kinds import KINDS
from jobs.settings import Settings
from jobs.store import Database
from jobs.store.jobs import utcnow
from jobs.store.overview import FinishedBucket, LatencyBucket, OverviewStore

#: The overview's windows: name → (length, bucket of the charts in seconds).
RANGES: dict[str, tuple[timedelta, int]] = {
    "1h": (timedelta(hours=1), 60),
    "24h": (timedelta(hours=24), 900),
}
#: The window of the "failed" counter.
FAILED_WINDOW = timedelta(hours=1)
#: A bucket that ended this long ago is closed: its jobs' ends are written (the store's writer
#: commits within a second or two), so its figures are kept (:class:`ClosedBuckets`).
SETTLE = timedelta(minutes=2)
#: How long a closed bucket's figures are kept: what a prune of recent jobs leaves stale at most.
KEEP_SECONDS = 600.0


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


#: One closed bucket's figures: its finished jobs and its latency (None: no job had started).
Closed = tuple[FinishedBucket, LatencyBucket | None]


class ClosedBuckets:
    """The figures of closed buckets, kept in this process for :data:`KEEP_SECONDS`.

    A bucket's figures change no more once it is closed (:data:`SETTLE`), so a dashboard that
    reloads the day's charts every few seconds queries only the buckets that are still open, and
    the closed ones it has not seen yet: the day's ~100k jobs are read once, not at every load.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[tuple[str, str, int, int], tuple[float, Closed]] = {}

    def get(self, store: OverviewStore, step: int, starts: range) -> dict[int, Closed]:
        """The buckets of ``starts`` (epoch seconds) that are kept, by start."""
        now = time.monotonic()
        with self._lock:
            found = {at: self._kept.get((*_whose(store), step, at)) for at in starts}
        return {at: kept[1] for at, kept in found.items() if kept and now - kept[0] < KEEP_SECONDS}

    def put(self, store: OverviewStore, step: int, figures: dict[int, Closed]) -> None:
        now = time.monotonic()
        with self._lock:
            for stale in [k for k, (at, _) in self._kept.items() if now - at >= KEEP_SECONDS]:
                del self._kept[stale]
            self._kept.update({(*_whose(store), step, at): (now, closed) for at, closed in figures.items()})


def _whose(store: OverviewStore) -> tuple[str, str]:
    """Whose figures a store reads: its database and namespace."""
    return store.db.url, store.namespace


#: The process's kept buckets (the dashboard's requests share them).
CLOSED = ClosedBuckets()


def charts(db: Database, namespace: str, span: Window) -> dict[str, Any]:
    """Finished jobs per bucket (by outcome) and latency per bucket, with the window's totals.
    The window starts at the start of its first bucket.

    Raises:
        ServiceUnavailable: the database cannot be reached.
    """
    finished, latency = _buckets(OverviewStore(db, namespace), span)
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


def _buckets(store: OverviewStore, span: Window) -> tuple[list[FinishedBucket], list[LatencyBucket]]:
    """Every bucket of the window (empty ones filled in) and the latency of those with jobs:
    closed buckets from :data:`CLOSED` or one query for those not kept, open ones queried."""
    step = span.bucket_seconds
    first = int(span.since.timestamp()) // step * step
    settled = int((span.until - SETTLE).timestamp()) // step * step  # buckets before it are closed
    closed = range(first, max(settled, first), step)
    kept = CLOSED.get(store, step, closed)
    missing = [at for at in closed if at not in kept]
    if missing:
        fetched = _fetch(store, step, missing[0], settled)
        CLOSED.put(store, step, fetched)
        kept.update(fetched)
    fresh = _fetch(store, step, max(settled, first), int(span.until.timestamp()) // step * step + step)
    figures = {**kept, **fresh}
    ordered = [figures[at] for at in sorted(figures)]
    return [f for f, _ in ordered], [lat for _, lat in ordered if lat is not None]


def _fetch(store: OverviewStore, step: int, start: int, end: int) -> dict[int, Closed]:
    """The figures of every bucket in [``start``, ``end``) (epoch seconds), empty ones included."""
    since, until = _moment(start), _moment(end)
    finished = {int(b.at.timestamp()): b for b in store.finished(since, step, until)}
    latency = {int(b.at.timestamp()): b for b in store.latency(since, step, until)}
    return {
        at: (finished.get(at) or FinishedBucket(_moment(at), 0, 0, 0), latency.get(at))
        for at in range(start, end, step)
    }


def _moment(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def job_counters(db: Database, namespace: str, now: datetime | None = None) -> dict[str, int]:
    """Jobs queued and running now, and failed in the last hour (PostgreSQL).

    Raises:
        ServiceUnavailable: the database cannot be reached.
    """
    counts = OverviewStore(db, namespace).counts((now or utcnow()) - FAILED_WINDOW)
    return {"queued": counts.queued, "running": counts.running, "failed_last_hour": counts.failed}


def queue_names(settings: Settings) -> list[str]:
    """The namespace's queues (full names), sorted."""
    return sorted({settings.queue_name(kind.queue) for kind in KINDS.values()})
