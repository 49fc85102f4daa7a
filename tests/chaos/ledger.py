"""Counting from the job store what became of the jobs a chaos test enqueued."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from jobs.status import FINAL_STATUSES, AttemptOutcome, JobStatus
from jobs.store.models import AttemptRow, ClaimRow, JobRow

_FINAL = {status.value for status in FINAL_STATUSES}


@dataclass
class Tally:
    """The jobs of ``ids`` as the store has them."""

    ids: list[str]
    #: Job id → status, for the ids that have a row.
    status: dict[str, str] = field(default_factory=dict)
    #: Job id → its last error, for jobs that did not succeed.
    error: dict[str, str | None] = field(default_factory=dict)
    #: Job id → attempts that ended ``succeeded``.
    succeeded_runs: Counter[str] = field(default_factory=Counter)
    #: Job id → attempts still open (no end recorded).
    open_runs: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    #: The latest ``finished_at`` among the jobs (when every job is final: when the queue drained).
    last_finished: datetime | None = None

    @property
    def missing(self) -> list[str]:
        return [i for i in self.ids if i not in self.status]

    @property
    def unfinished(self) -> dict[str, str]:
        return {i: s for i, s in self.status.items() if s not in _FINAL}

    @property
    def running(self) -> list[str]:
        return [i for i, s in self.status.items() if s == JobStatus.RUNNING.value]

    @property
    def succeeded(self) -> list[str]:
        return [i for i, s in self.status.items() if s == JobStatus.SUCCEEDED.value]

    @property
    def not_succeeded(self) -> dict[str, str]:
        return {i: s for i, s in self.status.items() if s != JobStatus.SUCCEEDED.value}

    @property
    def lost(self) -> list[str]:
        """Jobs missing from the store or not ``succeeded``."""
        return self.missing + sorted(self.not_succeeded)

    @property
    def duplicated(self) -> list[str]:
        """Jobs with more than one attempt that ended ``succeeded``."""
        return sorted(i for i, n in self.succeeded_runs.items() if n > 1)

    @property
    def drained(self) -> bool:
        return not self.missing and not self.unfinished

    @property
    def drained_at(self) -> datetime | None:
        return self.last_finished if self.drained else None

    def recover_after(self, fault_end: datetime | None) -> float | None:
        """Seconds from the end of the fault until the last job finished (0 when it drained before)."""
        if fault_end is None or self.drained_at is None:
            return None
        return round(max(0.0, (self.drained_at - fault_end).total_seconds()), 2)

    def summary(self) -> dict[str, Any]:
        """Figures for the report."""
        return {
            "jobs": len(self.ids),
            "succeeded": len(self.succeeded),
            "lost": len(self.lost),
            "missing": len(self.missing),
            "unfinished": len(self.unfinished),
            "running": len(self.running),
            "duplicated": len(self.duplicated),
            "attempts": sum(self.outcomes.values()),
            "attempt_outcomes": dict(sorted(self.outcomes.items(), key=lambda kv: str(kv[0]))),
        }

    def describe(self, limit: int = 10) -> str:
        """A readable account of what is wrong, for assertion messages."""
        lines = [f"{self.summary()}"]
        for job_id in self.missing[:limit]:
            lines.append(f"  missing: {job_id}")
        for job_id, status in list(self.not_succeeded.items())[:limit]:
            lines.append(f"  {status}: {job_id} {self.error.get(job_id) or ''}")
        for job_id in self.duplicated[:limit]:
            lines.append(f"  succeeded {self.succeeded_runs[job_id]} times: {job_id}")
        return "\n".join(lines)


class Ledger:
    """Reads the job store of one test database, surviving a database restart (no pooled connections)."""

    def __init__(self, database_url: str) -> None:
        self.engine: Engine = create_engine(database_url, poolclass=NullPool)

    def close(self) -> None:
        self.engine.dispose()

    def tally(self, ids: Collection[str]) -> Tally:
        tally = Tally(ids=list(ids))
        if not ids:
            return tally
        id_list = list(ids)
        with self.engine.connect() as connection:
            jobs = connection.execute(
                select(JobRow.id, JobRow.status, JobRow.error, JobRow.finished_at).where(
                    JobRow.id.in_(id_list)
                )
            ).all()
            attempts = connection.execute(
                select(AttemptRow.job_id, AttemptRow.outcome, AttemptRow.finished_at).where(
                    AttemptRow.job_id.in_(id_list)
                )
            ).all()
        for job_id, status, error, finished_at in jobs:
            key = str(job_id)
            tally.status[key] = status
            if status != JobStatus.SUCCEEDED.value:
                tally.error[key] = error
            if finished_at is not None:
                moment = finished_at if finished_at.tzinfo else finished_at.replace(tzinfo=UTC)
                if tally.last_finished is None or moment > tally.last_finished:
                    tally.last_finished = moment
        for job_id, outcome, finished_at in attempts:
            key = str(job_id)
            tally.outcomes[outcome or "open"] += 1
            if outcome == AttemptOutcome.SUCCEEDED.value:
                tally.succeeded_runs[key] += 1
            if finished_at is None:
                tally.open_runs[key] += 1
        return tally

    def wait_drained(self, ids: Collection[str], timeout: float, interval: float = 0.25) -> Tally:
        """Poll until every job of ``ids`` is final, or ``timeout`` seconds passed; the last tally."""
        deadline = time.monotonic() + timeout
        last: Tally | None = None
        while True:
            with contextlib.suppress(DBAPIError):  # the database is down right now: ask again
                last = self.tally(ids)
            if (last is not None and last.drained) or time.monotonic() >= deadline:
                break
            time.sleep(interval)
        return last if last is not None else self.tally(ids)

    def finish_times(self, ids: Collection[str]) -> list[datetime]:
        """When each finished job of ``ids`` finished, in order (UTC)."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(JobRow.finished_at).where(JobRow.id.in_(list(ids)), JobRow.finished_at.is_not(None))
            ).all()
        return sorted(at if at.tzinfo else at.replace(tzinfo=UTC) for (at,) in rows)

    def count_final(self, ids: Collection[str]) -> int:
        """How many of ``ids`` are final (-1 while the database does not answer)."""
        try:
            tally = self.tally(ids)
        except DBAPIError:
            return -1
        return len(tally.status) - len(tally.unfinished)

    def running_pids(self, ids: Iterable[str]) -> dict[int, int]:
        """Pid → runs, for the runs of ``ids`` going on now: attempts still open, and short runs
        whose start is not written yet (their claim rows, ``jobs/store/claims.py``)."""
        wanted = list(ids)
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(AttemptRow.pid).where(AttemptRow.job_id.in_(wanted), AttemptRow.finished_at.is_(None))
            ).all()
            rows += connection.execute(select(ClaimRow.pid).where(ClaimRow.job_id.in_(wanted))).all()
        return dict(Counter(int(pid) for (pid,) in rows))

    def queue_ids(self, queue: str) -> set[str]:
        """Every job id the store has for ``queue``."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(JobRow.id).where(JobRow.queue == queue)).all()
        return {str(job_id) for (job_id,) in rows}


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid`` (None when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])
