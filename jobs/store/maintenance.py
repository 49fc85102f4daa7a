"""Deleting old finished jobs (``conveyor prune``) and the artifacts that belong to jobs.

A job's artifacts are its outputs (rows whose ``job_id`` is the job) and its inputs: the
uploaded artifacts its payload names (an image's ``source``, an email's ``attachments``) that no
other job names. The store does not know which payload fields name artifacts: the caller
passes :data:`InputsOf` (the kinds' ``artifact_ids``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Text,
    and_,
    cast,
    delete,
    exists,
    func,
    literal_column,
    not_,
    or_,
    select,
)
from sqlalchemy.orm import Session

from jobs import crypto
from jobs.crypto import Sealer
from jobs.store.database import Database
from jobs.store.models import ArtifactRow, JobRow
from jobs.store.partitions import DEFAULT, Partition, PartitionStore, drop_day, lock_day

#: ``(kind, payload)`` → the ids of the artifacts a job of that kind reads.
InputsOf = Callable[[str, dict[str, Any]], Iterable[str]]
#: Picks some jobs by a condition on a column holding job ids (``jobs.id``, ``artifacts.job_id``).
Chosen = Callable[[Any], ColumnElement[bool]]
#: Candidate inputs checked against other jobs' payloads per query.
_REFERENCE_CHUNK = 200


@dataclass(frozen=True)
class ArtifactsOfJobs:
    """The artifacts that belong to some jobs: their ids and the file locations to unlink."""

    ids: list[str] = field(default_factory=list)
    #: ``file:///…`` of those kept in files (the others are in their rows).
    files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PrunedBatch:
    """What one batch deleted; ``files`` are the locations of its artifacts, to unlink once committed."""

    #: Jobs selected for this batch (0: nothing is left to prune).
    selected: int
    jobs: int
    artifacts: int
    files: list[str]
    #: The deleted jobs (their ``.eml`` copies go too).
    job_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PruneScope:
    """Which jobs, besides age and status: one kind, or all but some kinds; one namespace's queues."""

    kind: str | None = None
    not_kinds: tuple[str, ...] = ()
    #: ``<namespace>.``: the queues of one namespace (retention runs per namespace).
    queue_prefix: str | None = None
    #: Retention's rule on PostgreSQL: a job in a day partition of ``jobs`` goes with its whole
    #: day (:meth:`PruneStore.drop_partitions`), and row by row only once a day past the cutoff
    #: (a day held back by a job that stays). Rows of the default partition go at the cutoff.
    whole_days: bool = False


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
        self,
        older_than: datetime,
        statuses: Sequence[str],
        limit: int,
        inputs_of: InputsOf | None = None,
        scope: PruneScope | None = None,
    ) -> PrunedBatch:
        """Delete up to ``limit`` such jobs (within ``scope``: a kind, a namespace) in one
        transaction, with their artifact rows: outputs, and the inputs no remaining job names
        (attempts go with their job: a trigger deletes them). An empty batch means nothing is left.

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        conditions = [*_prunable(older_than, statuses, scope), *self._held_for_their_day(older_than, scope)]
        with self.db.session() as session:
            ids = [str(i) for i in session.scalars(select(JobRow.id).where(*conditions).limit(limit))]
            if not ids:
                return PrunedBatch(0, 0, 0, [])
            owned = artifacts_of_jobs(
                session, self.db.sealer, ids, inputs_of, others=not_(JobRow.id.in_(ids))
            )
            artifacts = _delete_artifacts(session, owned.ids)
            jobs = session.execute(delete(JobRow).where(JobRow.id.in_(ids))).rowcount  # type: ignore[attr-defined]
        return PrunedBatch(len(ids), int(jobs), artifacts, owned.files, ids)

    def _held_for_their_day(
        self, older_than: datetime, scope: PruneScope | None
    ) -> list[ColumnElement[bool]]:
        """``scope.whole_days``: the jobs of day partitions stay a day past ``older_than``."""
        if scope is None or not scope.whole_days or self.db.dialect != "postgresql":
            return []
        in_default = literal_column("jobs.tableoid") == literal_column(f"'{DEFAULT}'::regclass")
        return [or_(in_default, JobRow.finished_at < older_than - timedelta(days=1))]

    def drop_partitions(
        self,
        older_than: datetime,
        statuses: Sequence[str],
        inputs_of: InputsOf | None = None,
        scope: PruneScope | None = None,
        *,
        with_ids: bool = False,
    ) -> Iterator[PrunedBatch]:
        """Drop whole each day partition of ``jobs`` (PostgreSQL) all of whose jobs
        :meth:`delete_batch` would delete: made before ``older_than``, and none that must stay.
        Their artifacts go as :meth:`delete_batch`'s do; their attempts and other rows go with
        the partition (``jobs/store/partitions.py``). One transaction per partition.

        Yields:
            What each dropped partition held (``job_ids`` only ``with_ids``: a day may hold millions).

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        prunable = and_(*_prunable(older_than, statuses, scope))
        keep = not_(func.coalesce(prunable, False))
        # Days before the cutoff, and before those that partition upkeep makes (yesterday on).
        last = min(
            older_than.astimezone(UTC).date() - timedelta(days=1),
            datetime.now(UTC).date() - timedelta(days=2),
        )
        for partition in PartitionStore(self.db).partitions():
            if partition.day is None or partition.day > last:
                continue
            batch = self._drop_partition(partition, keep, inputs_of, with_ids=with_ids)
            if batch is not None:
                yield batch

    def _drop_partition(
        self, partition: Partition, keep: ColumnElement[bool], inputs_of: InputsOf | None, *, with_ids: bool
    ) -> PrunedBatch | None:
        with self.db.session() as session:
            chosen = _in_range(*lock_day(session, partition))
            if session.scalar(select(exists().where(chosen(JobRow.id), keep))):
                return None  # some job stays: the row-by-row batches deal with the others
            count = int(
                session.scalar(select(func.count()).select_from(JobRow).where(chosen(JobRow.id))) or 0
            )
            ids = (
                [str(i) for i in session.scalars(select(JobRow.id).where(chosen(JobRow.id)))]
                if with_ids
                else []
            )
            owned = artifacts_of_jobs(
                session, self.db.sealer, chosen, inputs_of, others=not_(chosen(JobRow.id))
            )
            artifacts = _delete_artifacts(session, owned.ids)
            drop_day(session, partition)
        return PrunedBatch(count, count, artifacts, owned.files, ids)

    def plan(
        self, older_than: datetime, statuses: Sequence[str], limit: int, inputs_of: InputsOf | None = None
    ) -> Iterable[tuple[list[str], ArtifactsOfJobs]]:
        """What :meth:`delete_batch` would delete, batch by batch, deleting nothing (``--dry-run``).

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        conditions = _prunable(older_than, statuses)
        after = ""
        while True:
            with self.db.session() as session:
                page = [JobRow.id > after] if after else []
                query = select(JobRow.id).where(*conditions, *page).order_by(JobRow.id).limit(limit)
                ids = [str(i) for i in session.scalars(query)]
                if not ids:
                    return
                # Inputs that only other prunable jobs name would go too, in a later batch.
                yield (
                    ids,
                    artifacts_of_jobs(
                        session, self.db.sealer, ids, inputs_of, others=not_(and_(*conditions))
                    ),
                )
            after = ids[-1]


class JobFilesStore:
    """The artifacts of a set of jobs, for whoever removes those jobs' data (``prune``, GDPR erase)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def delete_artifacts(
        self, job_ids: Sequence[str], inputs_of: InputsOf | None = None, *, dry_run: bool = False
    ) -> ArtifactsOfJobs:
        """Delete the artifact rows of ``job_ids`` (outputs, and inputs that no job outside
        ``job_ids`` names); the job rows stay. Returns what was (or, ``dry_run``, would be)
        deleted, with the file locations for the caller to unlink after this commit.

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        ids = [str(i) for i in job_ids]
        if not ids:
            return ArtifactsOfJobs()
        with self.db.session() as session:
            owned = artifacts_of_jobs(
                session, self.db.sealer, ids, inputs_of, others=not_(JobRow.id.in_(ids))
            )
            if not dry_run:
                _delete_artifacts(session, owned.ids)
        return owned


def artifacts_of_jobs(
    session: Session,
    sealer: Sealer,
    job_ids: list[str] | Chosen,
    inputs_of: InputsOf | None,
    *,
    others: ColumnElement[bool],
) -> ArtifactsOfJobs:
    """The artifacts of ``job_ids`` (or of the jobs a :data:`Chosen` picks): their outputs, and
    the inputs their payloads name that are uploads (no job of their own, or one of these jobs)
    and that no job matching ``others`` names. Payloads are read through ``sealer``: an
    encrypted payload names its inputs too."""
    chosen = job_ids if callable(job_ids) else _among(job_ids)
    outputs = session.execute(
        select(ArtifactRow.id, ArtifactRow.location).where(chosen(ArtifactRow.job_id))
    ).all()
    found = {str(artifact_id): location for artifact_id, location in outputs}
    candidates: set[str] = set()
    if inputs_of is not None and _may_have_inputs(session, chosen):
        for job_id, kind, payload in session.execute(
            select(JobRow.id, JobRow.kind, JobRow.payload).where(chosen(JobRow.id))
        ):
            opened = sealer.open_json(payload, crypto.PAYLOAD, str(job_id))
            candidates.update(str(a) for a in inputs_of(kind, opened or {}))
    candidates -= set(found)
    unused = sorted(candidates - _named_by(session, sealer, candidates, others))
    if unused:
        inputs = session.execute(
            select(ArtifactRow.id, ArtifactRow.location).where(
                ArtifactRow.id.in_(unused), or_(ArtifactRow.job_id.is_(None), chosen(ArtifactRow.job_id))
            )
        ).all()
        found.update({str(artifact_id): location for artifact_id, location in inputs})
    return ArtifactsOfJobs(ids=sorted(found), files=sorted(loc for loc in found.values() if loc))


def _named_by(
    session: Session, sealer: Sealer, artifact_ids: set[str], others: ColumnElement[bool]
) -> set[str]:
    """Those of ``artifact_ids`` that the payload of some job matching ``others`` names (an id is
    a UUID: finding it in the payload's text is finding a reference). With encryption on, every
    encrypted payload among ``others`` is opened and searched too: its text hides the ids, and
    missing a reference would delete an input another job still needs."""
    named: set[str] = set()
    wanted = sorted(artifact_ids)
    text = cast(JobRow.payload, Text)
    for start in range(0, len(wanted), _REFERENCE_CHUNK):
        chunk = wanted[start : start + _REFERENCE_CHUNK]
        matches = [text.contains(a) for a in chunk]
        if sealer.enabled:
            matches.append(text.contains(f'"{crypto.ENVELOPE}"'))
        query = select(JobRow.id, JobRow.payload, text.label("payload_text")).where(others, or_(*matches))
        for job_id, payload, payload_text in session.execute(query):
            if crypto.is_envelope(payload):
                payload_text = json.dumps(sealer.open_json(payload, crypto.PAYLOAD, str(job_id)))
            named.update(a for a in chunk if a in (payload_text or ""))
    return named


def _may_have_inputs(session: Session, chosen: Chosen) -> bool:
    """Whether any artifact could be an input of the chosen jobs: an upload (no job of its own) or
    one of theirs. Without one, their payloads are not read (a day's partition holds millions)."""
    could = or_(ArtifactRow.job_id.is_(None), chosen(ArtifactRow.job_id))
    return bool(session.scalar(select(exists().where(could))))


def _among(job_ids: list[str]) -> Chosen:
    return lambda column: column.in_(job_ids)


def _in_range(low: str, high: str) -> Chosen:
    return lambda column: and_(column >= low, column < high)


def _delete_artifacts(session: Session, artifact_ids: list[str]) -> int:
    if not artifact_ids:
        return 0
    result = session.execute(delete(ArtifactRow).where(ArtifactRow.id.in_(artifact_ids)))
    return int(result.rowcount)  # type: ignore[attr-defined]


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
