"""`conveyor prune`: delete old finished jobs, their attempts, their artifacts and files, in batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jobs.admin.files import RemovedFiles, inputs_of, remove_email_copies, unlink_artifact_files
from jobs.status import FINAL_STATUSES
from jobs.store import Database
from jobs.store.maintenance import PrunedBatch, PruneScope, PruneStore

#: Jobs deleted per transaction: short transactions, no long locks.
BATCH = 1000


@dataclass(frozen=True)
class PruneResult:
    """What a prune deleted (or, in a dry run, would delete)."""

    jobs: int
    removed: RemovedFiles
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"jobs": self.jobs, **self.removed.to_dict(), "dry_run": self.dry_run}


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
    *,
    outbox: Path | None = None,
) -> tuple[int, int]:
    """Delete in batches (see :func:`prune_jobs`).

    Returns:
        Jobs and artifacts deleted.
    """
    result = prune_jobs(db, older_than, statuses, on_batch, outbox=outbox)
    return result.jobs, result.removed.artifacts


def pruned_batches(
    store: PruneStore,
    older_than: datetime,
    statuses: list[str],
    scope: PruneScope | None = None,
    *,
    with_ids: bool,
) -> Iterator[PrunedBatch]:
    """Deletes as it is iterated: first each day partition of ``jobs`` that can go whole (one
    batch each), then the other prunable jobs row by row, :data:`BATCH` at a time. ``with_ids``:
    a dropped partition's batch lists its jobs (for their ``.eml`` copies)."""
    yield from store.drop_partitions(older_than, statuses, inputs_of, scope, with_ids=with_ids)
    while (batch := store.delete_batch(older_than, statuses, BATCH, inputs_of, scope)).selected:
        yield batch


def prune_jobs(
    db: Database,
    older_than: datetime,
    statuses: Iterable[str] | None = None,
    on_batch: Callable[[int], None] = lambda _n: None,
    *,
    outbox: Path | None = None,
    dry_run: bool = False,
) -> PruneResult:
    """Delete in batches: the jobs, their attempts, their artifacts (outputs, and inputs such as
    source photos and attachments that no remaining job uses) with their files, and their
    ``.eml`` copies in ``outbox``. ``dry_run``: count all that, delete nothing.

    Raises:
        ServiceUnavailable: the database cannot be reached (the batches done stay done).
    """
    store, wanted = PruneStore(db), _statuses(statuses)
    if dry_run:
        jobs, removed = 0, RemovedFiles()
        for ids, owned in store.plan(older_than, wanted, BATCH, inputs_of):
            jobs += len(ids)
            removed += RemovedFiles(
                len(owned.ids),
                unlink_artifact_files(owned.files, dry_run=True),
                remove_email_copies(outbox, ids, dry_run=True),
            )
            on_batch(len(ids))
        return PruneResult(jobs, removed, dry_run=True)
    jobs, removed = 0, RemovedFiles()
    for batch in pruned_batches(store, older_than, wanted, with_ids=outbox is not None):
        # After the commit: a crash leaves a stray file, never a row pointing at a missing one.
        jobs += batch.jobs
        removed += RemovedFiles(
            batch.artifacts, unlink_artifact_files(batch.files), remove_email_copies(outbox, batch.job_ids)
        )
        on_batch(batch.selected)
    return PruneResult(jobs, removed)
