"""Finding and erasing one data subject's records (``conveyor gdpr``): jobs, attempts, deliveries,
artifacts, held messages and audit rows that name an e-mail address.

Two ways to find a subject's jobs:

- by keyed hash (``jobs.subjects && ARRAY[…]``, GIN-indexed) when encryption keys are set: the
  query holds hashes only, and payloads may be opaque;
- by text otherwise: a case-insensitive ``LIKE`` on every text column as a coarse filter, each
  candidate then checked in Python (:class:`~jobs.subjects.SubjectMatcher`), so that
  ``bada@example.com`` never counts as ``ada@example.com``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import LargeBinary, String, Text, bindparam, cast, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from jobs.status import Event, sources, target
from jobs.store.artifacts import ArtifactInfo
from jobs.store.database import Database
from jobs.store.jobs import AttemptInfo, JobInfo, as_utc, utcnow
from jobs.store.models import (
    ArtifactRow,
    AttemptRow,
    AuditRow,
    DelayedMessageRow,
    EmailDeliveryRow,
    JobRow,
)
from jobs.store.tables import JobKeys
from jobs.subjects import SubjectMatcher

#: What a waiting job's row keeps once erased: no trace of what it was for.
ERASED_PAYLOAD: dict[str, Any] = {"erased": True}
ERASED_ERROR = "erased at the data subject's request (conveyor gdpr erase)"
#: Job ids per statement.
CHUNK = 500


@dataclass
class SubjectRecords:
    """Everything stored that names one subject."""

    jobs: list[JobInfo] = field(default_factory=list)
    attempts: dict[str, list[AttemptInfo]] = field(default_factory=dict)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[ArtifactInfo] = field(default_factory=list)
    delayed: list[str] = field(default_factory=list)
    audit_ids: list[int] = field(default_factory=list)

    @property
    def job_ids(self) -> list[str]:
        return [job.id for job in self.jobs]


@dataclass
class ErasedRecords:
    """What :meth:`SubjectStore.erase` did, and the artifact files to unlink once committed."""

    jobs_deleted: int = 0
    jobs_redacted: int = 0
    jobs_running: list[str] = field(default_factory=list)
    attempts: int = 0
    deliveries: int = 0
    artifacts: int = 0
    delayed_messages: int = 0
    audit_rows_redacted: int = 0
    files: list[str] = field(default_factory=list)


class SubjectStore:
    """The store's side of ``conveyor gdpr``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------ finding

    def job_ids_by_hash(self, hashes: Sequence[bytes]) -> set[str]:
        """Jobs whose ``subjects`` hold one of ``hashes`` (no plain text in the query)."""
        with self.db.session() as session:
            if self.db.dialect == "postgresql":
                wanted = bindparam("hashes", list(hashes), type_=ARRAY(LargeBinary()))
                query = select(JobRow.id).where(JobRow.subjects.op("&&")(wanted))
                return {str(i) for i in session.scalars(query)}
            hexes = {h.hex() for h in hashes}  # SQLite (the demo): a JSON list of hex strings
            rows = session.execute(select(JobRow.id, JobRow.subjects).where(JobRow.subjects.is_not(None)))
            return {str(i) for i, stored in rows if hexes & set(stored or [])}

    def job_ids_by_text(self, matcher: SubjectMatcher) -> set[str]:
        """Jobs whose row, attempts, delivery or held message names the subject in plain text."""
        with self.db.session() as session:
            candidates = self._text_candidates(session, matcher.spellings)
            return {job_id for job_id in candidates if matcher.found_in(self._texts(session, job_id))}

    def _text_candidates(self, session: Session, spellings: Sequence[str]) -> set[str]:
        def like(column: Any) -> Any:
            return or_(*(column.ilike(f"%{_escape_like(s)}%", escape="\\") for s in spellings))

        # ``escape``, not ``convert_from``: a body that is not UTF-8 (sealed by encryption at
        # rest, or a foreign message) must not fail the whole search. Dramatiq's bodies are ASCII
        # JSON, so an address in them reads the same either way.
        body = (
            func.encode(DelayedMessageRow.body, "escape")
            if self.db.dialect == "postgresql"
            else cast(DelayedMessageRow.body, Text)
        )
        queries = [
            select(JobRow.id).where(
                or_(
                    like(cast(JobRow.payload, Text)),
                    like(cast(JobRow.result, Text)),
                    like(JobRow.error),
                    like(JobRow.idempotency_key),
                )
            ),
            select(AttemptRow.job_id).where(or_(like(AttemptRow.error), like(AttemptRow.traceback))),
            select(EmailDeliveryRow.job_id).where(
                or_(like(cast(EmailDeliveryRow.accepted, Text)), like(cast(EmailDeliveryRow.rejected, Text)))
            ),
            select(DelayedMessageRow.message_id).where(like(body)),
        ]
        return {str(i) for query in queries for i in session.scalars(query)}

    def _texts(self, session: Session, job_id: str) -> list[Any]:
        """Every stored value of one job that may name a subject."""
        texts: list[Any] = []
        row = session.get(JobRow, job_id)
        if row is not None:
            texts += [row.payload, row.result, row.error, row.idempotency_key]
        attempts = session.execute(
            select(AttemptRow.error, AttemptRow.traceback).where(AttemptRow.job_id == job_id)
        )
        texts += [value for pair in attempts for value in pair]
        delivery = session.get(EmailDeliveryRow, job_id)
        if delivery is not None:
            texts += [delivery.accepted, delivery.rejected]
        held = session.get(DelayedMessageRow, job_id)
        if held is not None:
            texts.append(bytes(held.body).decode("utf-8", "replace"))
        return [value for value in texts if value is not None]

    def records(self, job_ids: Iterable[str], matcher: SubjectMatcher) -> SubjectRecords:
        """The jobs (with attempts, deliveries, held messages), their artifacts, and artifacts
        and audit rows that name the subject themselves."""
        ids = sorted(set(job_ids))
        found = SubjectRecords()
        with self.db.session() as session:
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start : start + CHUNK]
                self._read_jobs(session, chunk, found)
            found.artifacts = self._artifacts(session, ids, found.jobs, matcher)
            found.audit_ids = [
                row.id
                for row in session.scalars(select(AuditRow).where(_mentions_at(AuditRow)))
                if matcher.found_in([row.selection, row.details])
            ]
        return found

    def _read_jobs(self, session: Session, chunk: list[str], found: SubjectRecords) -> None:
        jobs = session.scalars(select(JobRow).where(JobRow.id.in_(chunk)).order_by(JobRow.created_at))
        found.jobs += [JobInfo.from_row(row, self.db.sealer) for row in jobs]
        attempts = session.scalars(
            select(AttemptRow).where(AttemptRow.job_id.in_(chunk)).order_by(AttemptRow.attempt)
        )
        for attempt in attempts:
            found.attempts.setdefault(str(attempt.job_id), []).append(
                AttemptInfo.from_row(attempt, self.db.sealer)
            )
        for delivery in session.scalars(select(EmailDeliveryRow).where(EmailDeliveryRow.job_id.in_(chunk))):
            found.deliveries.append(
                {
                    "job_id": str(delivery.job_id),
                    "state": delivery.state,
                    "message_id": delivery.message_id,
                    "accepted": delivery.accepted,
                    "rejected": delivery.rejected,
                    "updated_at": (as_utc(delivery.updated_at) or utcnow()).isoformat(),
                }
            )
        held = select(DelayedMessageRow.message_id).where(DelayedMessageRow.message_id.in_(chunk))
        found.delayed += list(session.scalars(held))

    def _artifacts(
        self, session: Session, job_ids: list[str], jobs: list[JobInfo], matcher: SubjectMatcher
    ) -> list[ArtifactInfo]:
        """Artifacts made by the jobs, given to them (attachments, image sources), or named
        after the subject."""
        wanted = self._unshared_inputs(
            session, job_ids, {i for job in jobs for i in _artifact_refs(job.payload)}
        )
        for start in range(0, len(job_ids), CHUNK):
            query = select(ArtifactRow.id).where(ArtifactRow.job_id.in_(job_ids[start : start + CHUNK]))
            wanted |= {str(i) for i in session.scalars(query)}
        named = session.execute(select(ArtifactRow.id, ArtifactRow.name).where(ArtifactRow.name.like("%@%")))
        # A file name's extension would read as more domain (``ada@example.com.pdf``): try without.
        wanted |= {str(i) for i, name in named if matcher.found_in([name, name.rpartition(".")[0]])}
        rows = session.scalars(select(ArtifactRow).where(ArtifactRow.id.in_(sorted(wanted))))
        return [ArtifactInfo.from_row(row) for row in rows]

    def _unshared_inputs(self, session: Session, job_ids: list[str], refs: set[str]) -> set[str]:
        """Those of ``refs`` (artifacts handed to the subject's jobs) that no other job's payload
        names: a brochure attached to everyone's email stays for the others. (Payloads stored
        encrypted cannot be read here: their references go unseen, and the input is erased.)"""
        if not refs:
            return set()
        mentioned = or_(*(cast(JobRow.payload, Text).like(f"%{ref}%") for ref in sorted(refs)))
        others = select(JobRow.payload).where(JobRow.id.not_in(job_ids), mentioned)
        shared = {ref for payload in session.scalars(others) for ref in _artifact_refs(payload)}
        return refs - shared

    # ------------------------------------------------------------ erasing

    def erase(self, found: SubjectRecords, matcher: SubjectMatcher) -> ErasedRecords:
        """Delete finished jobs (their attempts and deliveries go with them), redact waiting ones
        into ``cancelled`` rows that name nobody (a deleted row would be made again from its
        message, which is still queued), ask running ones to stop (they are left as they are:
        erase again once they have finished); delete the artifacts and held messages; redact
        the audit rows that name the subject. One transaction.

        Raises:
            ServiceUnavailable: the database cannot be reached (nothing is changed).
        """
        done = ErasedRecords()
        now = utcnow()
        with self.db.session() as session:
            ids = found.job_ids
            for start in range(0, len(ids), CHUNK):
                self._erase_jobs(session, ids[start : start + CHUNK], now, done)
            artifact_ids = [a.id for a in found.artifacts]
            done.files = [a.location for a in found.artifacts if a.location]
            done.artifacts = _count(
                session.execute(delete(ArtifactRow).where(ArtifactRow.id.in_(artifact_ids)))
            )
            for row in session.scalars(select(AuditRow).where(AuditRow.id.in_(found.audit_ids))):
                row.selection = _redacted(row.selection, matcher)
                row.details = _redacted(row.details, matcher)
                done.audit_rows_redacted += 1
        return done

    def _erase_jobs(self, session: Session, chunk: list[str], now: Any, done: ErasedRecords) -> None:
        running = session.scalars(
            update(JobRow)
            .where(JobRow.id.in_(chunk), JobRow.status.in_(_values(sources(Event.REQUEST_CANCEL))))
            .values(cancel_requested_at=now)
            .returning(JobRow.id)
        )
        done.jobs_running += [str(i) for i in running]
        settled = [i for i in chunk if i not in set(done.jobs_running)]
        done.attempts += _count(session.execute(delete(AttemptRow).where(AttemptRow.job_id.in_(settled))))
        done.deliveries += _count(
            session.execute(delete(EmailDeliveryRow).where(EmailDeliveryRow.job_id.in_(settled)))
        )
        done.delayed_messages += _count(
            session.execute(delete(DelayedMessageRow).where(DelayedMessageRow.message_id.in_(settled)))
        )
        # Artifacts go in erase(); their rows must not hold the deleted jobs back.
        session.execute(update(ArtifactRow).where(ArtifactRow.job_id.in_(settled)).values(job_id=None))
        # A key may name the person too; the redacted jobs keep no key (deleted ones lose theirs by cascade).
        session.execute(delete(JobKeys).where(JobKeys.job_id.in_(settled)))
        waiting = _values(sources(Event.CANCEL))
        done.jobs_deleted += _count(
            session.execute(delete(JobRow).where(JobRow.id.in_(settled), JobRow.status.not_in(waiting)))
        )
        done.jobs_redacted += _count(
            session.execute(
                update(JobRow)
                .where(JobRow.id.in_(settled), JobRow.status.in_(waiting))
                .values(
                    status=target(Event.CANCEL).value,
                    payload=ERASED_PAYLOAD,
                    result=None,
                    error=ERASED_ERROR,
                    idempotency_key=None,
                    subjects=None,
                    progress=None,
                    finished_at=now,
                )
            )
        )


def _artifact_refs(payload: Any) -> list[str]:
    """The artifact ids a payload hands its job: email ``attachments``, an image's ``source``."""
    if not isinstance(payload, dict):
        return []
    refs = [payload.get("source"), *list(payload.get("attachments") or [])]
    return [ref for ref in refs if isinstance(ref, str)]


def _mentions_at(row: type[AuditRow]) -> Any:
    return or_(cast(row.selection, String).like("%@%"), cast(row.details, String).like("%@%"))


def _redacted(value: Any, matcher: SubjectMatcher) -> Any:
    if isinstance(value, str):
        return matcher.redact(value)
    if isinstance(value, dict):
        return {matcher.redact(str(k)): _redacted(v, matcher) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(item, matcher) for item in value]
    return value


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _values(statuses: Iterable[Any]) -> list[str]:
    return sorted(status.value for status in statuses)


def _count(result: Any) -> int:
    return int(result.rowcount or 0)
