"""`conveyor prune`: delete old finished jobs, their attempts and their output artifacts, in batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy import delete, func, select
from sqlalchemy.sql import ColumnElement

from jobs.status import FINAL_STATUSES
from jobs.store import Database
from jobs.store.models import ArtifactRow, JobRow

#: Jobs deleted per transaction: short transactions, no long locks.
BATCH = 1000


def prunable(older_than: datetime, statuses: Iterable[str] | None = None) -> list[ColumnElement[bool]]:
    finals = list(statuses or [s.value for s in FINAL_STATUSES])
    return [JobRow.finished_at < older_than, JobRow.status.in_(finals)]


def count_prunable(db: Database, older_than: datetime, statuses: Iterable[str] | None = None) -> int:
    with db.session() as session:
        return int(
            session.scalar(select(func.count()).select_from(JobRow).where(*prunable(older_than, statuses)))
            or 0
        )


def prune(
    db: Database,
    older_than: datetime,
    statuses: Iterable[str] | None = None,
    on_batch: Callable[[int], None] = lambda _n: None,
) -> tuple[int, int]:
    """Delete in batches; attempts go with their job (ON DELETE CASCADE).

    Returns:
        Jobs and artifacts deleted.
    """
    conditions = prunable(older_than, list(statuses) if statuses else None)
    jobs_deleted = artifacts_deleted = 0
    while True:
        with db.session() as session:
            ids = list(session.scalars(select(JobRow.id).where(*conditions).limit(BATCH)))
            if not ids:
                break
            files = list(
                session.scalars(
                    select(ArtifactRow.location).where(
                        ArtifactRow.job_id.in_(ids), ArtifactRow.location.is_not(None)
                    )
                )
            )
            artifacts_deleted += session.execute(
                delete(ArtifactRow).where(ArtifactRow.job_id.in_(ids))
            ).rowcount  # type: ignore[attr-defined]
            jobs_deleted += session.execute(delete(JobRow).where(JobRow.id.in_(ids))).rowcount  # type: ignore[attr-defined]
        for location in files:  # after the commit: a crash leaves a stray file, never a dangling row
            Path(unquote(urlsplit(location).path)).unlink(missing_ok=True)
        on_batch(len(ids))
    return jobs_deleted, artifacts_deleted
