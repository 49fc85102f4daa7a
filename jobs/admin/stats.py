"""`conveyor stats`: done, failed, retried, throughput and latency per kind or queue (SQL aggregates)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select

from jobs.status import JobStatus
from jobs.store import Database
from jobs.store.aggregates import percentiles_by, run_seconds, wait_seconds
from jobs.store.jobs import utcnow
from jobs.store.models import AttemptRow, JobRow


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
    """
    column = JobRow.kind if by == "kind" else JobRow.queue
    finished = [JobRow.finished_at >= since]
    minutes = max((utcnow() - since).total_seconds() / 60, 1 / 60)
    with db.session() as session:
        rows = session.execute(
            select(
                column,
                func.sum(case((JobRow.status == JobStatus.SUCCEEDED.value, 1), else_=0)),
                func.sum(case((JobRow.status == JobStatus.FAILED.value, 1), else_=0)),
                func.sum(case((JobRow.attempts > 1, 1), else_=0)),
                func.count(),
            )
            .where(*finished)
            .group_by(column)
            .order_by(column)
        ).all()
        waits = percentiles_by(
            session, db.dialect, wait_seconds(db.dialect), [*finished, AttemptRow.attempt == 1], column
        )
        runs = percentiles_by(session, db.dialect, run_seconds(db.dialect), finished, column)
    empty = dict.fromkeys(("p50", "p95", "p99"))
    return [
        GroupStats(
            group=str(group),
            done=int(done or 0),
            failed=int(failed or 0),
            retried=int(retried or 0),
            per_minute=round(count / minutes, 3),
            wait=waits.get(group, empty),
            run=runs.get(group, empty),
        )
        for group, done, failed, retried, count in rows
    ]
