"""`conveyor prune`: delete old finished jobs, their attempts and their output artifacts, in batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from jobs.status import FINAL_STATUSES
from jobs.store import Database
from jobs.store.maintenance import PruneStore

#: Jobs deleted per transaction: short transactions, no long locks.
BATCH = 1000


def _statuses(statuses: Iterable[str] | None) -> list[str]:
    """The statuses asked for, or every final one: a job still waiting or running is never pruned."""
    return list(statuses or [s.value for s in FINAL_STATUSES])


def count_prunable(db: Database, older_than: datetime, statuses: Iterable[str] | None = None) -> int:
    """How many jobs :func:`prune` would delete."""
    return PruneStore(db).count(older_than, _statuses(statuses))


def prune(
    db: Database,
    older_than: datetime,
    statuses: Iterable[str] | None = None,
    on_batch: Callable[[int], None] = lambda _n: None,
) -> tuple[int, int]:
    """Delete in batches; attempts go with their job.

    Returns:
        Jobs and artifacts deleted.

    Raises:
        ServiceUnavailable: the database cannot be reached (the batches done stay done).
    """
    store, wanted = PruneStore(db), _statuses(statuses)
    jobs_deleted = artifacts_deleted = 0
    while True:
        batch = store.delete_batch(older_than, wanted, BATCH)
        if not batch.selected:
            break
        jobs_deleted += batch.jobs
        artifacts_deleted += batch.artifacts
        # After the commit: a crash leaves a stray file, never a dangling row.
        remove_artifact_files(batch.files)
        on_batch(batch.selected)
    return jobs_deleted, artifacts_deleted


def remove_artifact_files(locations: Iterable[str]) -> int:
    """Unlink artifacts' files (``file:///…`` locations) whose rows are deleted; how many were there."""
    removed = 0
    for location in locations:
        path = Path(unquote(urlsplit(location).path))
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed
