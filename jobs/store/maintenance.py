"""Deleting old finished jobs (``conveyor prune``): their rows, attempts and output artifacts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, delete, func, select

from jobs.store.database import Database
from jobs.store.models import ArtifactRow, JobRow


@dataclass(frozen=True)
class PrunedBatch:
    """What one batch deleted; ``files`` are the locations of its artifacts, to unlink once committed."""

    #: Jobs selected for this batch (0: nothing is left to prune).
    selected: int
    jobs: int
    artifacts: int
    files: list[str]


@dataclass(frozen=True)
class PruneScope:
    """Which jobs, besides age and status: one kind, or all but some kinds; one namespace's queues."""

    kind: str | None = None
    not_kinds: tuple[str, ...] = ()
    #: ``<namespace>.``: the queues of one namespace (retention runs per namespace).
    queue_prefix: str | None = None


class PruneStore:
    """Jobs finished before a moment, in the given statuses."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def count(self, older_than: datetime, statuses: Sequence[str], scope: PruneScope | None = None) -> int:
        """How many jobs :meth:`delete_batch` would delete in all.

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        query = select(func.count()).select_from(JobRow).where(*_prunable(older_than, statuses, scope))
        with self.db.session() as session:
            return int(session.scalar(query) or 0)

    def delete_batch(
        self, older_than: datetime, statuses: Sequence[str], limit: int, scope: PruneScope | None = None
    ) -> PrunedBatch:
        """Delete up to ``limit`` such jobs in one transaction, with their artifact rows (attempts
        go with their job: ON DELETE CASCADE). An empty batch means nothing is left.

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        conditions = _prunable(older_than, statuses, scope)
        with self.db.session() as session:
            ids = list(session.scalars(select(JobRow.id).where(*conditions).limit(limit)))
            if not ids:
                return PrunedBatch(0, 0, 0, [])
            located = select(ArtifactRow.location).where(
                ArtifactRow.job_id.in_(ids), ArtifactRow.location.is_not(None)
            )
            files = [location for location in session.scalars(located) if location is not None]
            artifacts = session.execute(delete(ArtifactRow).where(ArtifactRow.job_id.in_(ids))).rowcount  # type: ignore[attr-defined]
            jobs = session.execute(delete(JobRow).where(JobRow.id.in_(ids))).rowcount  # type: ignore[attr-defined]
        return PrunedBatch(len(ids), int(jobs), int(artifacts), files)


def _prunable(
    older_than: datetime, statuses: Sequence[str], scope: PruneScope | None = None
) -> list[ColumnElement[bool]]:
    conditions = [JobRow.finished_at < older_than, JobRow.status.in_(list(statuses))]
    if scope is not None:
        if scope.kind is not None:
            conditions.append(JobRow.kind == scope.kind)
        if scope.not_kinds:
            conditions.append(JobRow.kind.not_in(list(scope.not_kinds)))
        if scope.queue_prefix is not None:
            conditions.append(JobRow.queue.startswith(scope.queue_prefix, autoescape=True))
    return conditions
