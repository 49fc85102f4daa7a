"""``conveyor gdpr export|erase --subject ADDRESS``: everything stored about one e-mail address.

Found: jobs whose payload, result, error, attempts (errors, tracebacks), delivery (accepted,
rejected) or held message name the address; the artifacts those jobs made or were given, and
artifacts named after it; the ``.eml`` copies of the file outbox; audit rows that quote it.
With encryption keys set, jobs are found by keyed hash only (``jobs.subjects``).

The audit row of an export or an erasure keeps an HMAC of the address (keyed with the
installation secret), never the address.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from jobs.admin.audit import Auditor
from jobs.admin.files import unlink_artifact_files
from jobs.settings import Settings
from jobs.store import Database
from jobs.store.audit import AuditStore
from jobs.store.subjects import SubjectRecords, SubjectStore
from jobs.subjects import SubjectHasher, SubjectMatcher, keyed_hash


@dataclass(frozen=True)
class Found:
    """A subject's records in the store, and the outbox files that name it."""

    records: SubjectRecords
    outbox_files: list[Path]
    #: How the jobs were found: ``hash`` (encryption keys set) or ``text``.
    lookup: str

    def counts(self) -> dict[str, int]:
        r = self.records
        return {
            "jobs": len(r.jobs),
            "attempts": sum(len(a) for a in r.attempts.values()),
            "deliveries": len(r.deliveries),
            "artifacts": len(r.artifacts),
            "delayed_messages": len(r.delayed),
            "outbox_files": len(self.outbox_files),
            "audit_rows": len(r.audit_ids),
        }

    def to_dict(self) -> dict[str, Any]:
        """The export document (JSON-ready)."""
        r = self.records
        return {
            "lookup": self.lookup,
            "counts": self.counts(),
            "jobs": [
                {**job.to_dict(), "attempts": [a.to_dict() for a in r.attempts.get(job.id, [])]}
                for job in r.jobs
            ],
            "deliveries": r.deliveries,
            "artifacts": [a.to_dict() for a in r.artifacts],
            "delayed_messages": r.delayed,
            "outbox_files": [str(path) for path in self.outbox_files],
            "audit_rows": r.audit_ids,
        }


@dataclass(frozen=True)
class Receipt:
    """What an erasure removed, per kind of record."""

    subject_hash: str
    counts: dict[str, int]
    #: Jobs running now: asked to stop, left as they are; erase again once they have finished.
    running: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.running

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "complete": self.complete}


class Subjects:
    """Export and erase the records of one data subject in one deployment."""

    def __init__(self, settings: Settings, db: Database, auditor: Auditor) -> None:
        self.settings = settings
        self.store = SubjectStore(db)
        self.auditor = auditor
        self.hasher = SubjectHasher.from_keys(settings.encryption_keys)

    def subject_hash(self, subject: str) -> str:
        """The audit log's name for a subject: HMAC-SHA256 keyed with the installation secret."""
        canonical = SubjectMatcher(subject).subject
        return keyed_hash(AuditStore(self.store.db).installation_secret(), canonical).hex()

    def find(self, subject: str) -> Found:
        """Everything stored that names ``subject``.

        Raises:
            ValueError: ``subject`` is not an e-mail address.
        """
        matcher = SubjectMatcher(subject)
        if self.hasher is not None:
            job_ids, lookup = self.store.job_ids_by_hash(self.hasher.lookup_hashes(subject)), "hash"
        else:
            job_ids, lookup = self.store.job_ids_by_text(matcher), "text"
        records = self.store.records(job_ids, matcher)
        return Found(records, self._outbox_files(records.job_ids, matcher), lookup)

    def export(self, subject: str) -> tuple[Found, str]:
        """:meth:`find`, recorded in the audit log (an export reads personal data).

        Returns:
            What was found, and the subject's hash as the audit log names it.
        """
        with self.auditor.action("gdpr.export") as record:
            found = self.find(subject)
            subject_hash = self.subject_hash(subject)
            record.count = len(found.records.jobs)
            record.details.update(subject_hash=subject_hash, counts=found.counts())
        return found, subject_hash

    def erase(self, found: Found, subject: str) -> Receipt:
        """Erase what :meth:`find` found: see :meth:`jobs.store.subjects.SubjectStore.erase`;
        then the artifacts' files and the outbox copies. One audit row with the receipt."""
        matcher = SubjectMatcher(subject)
        subject_hash = self.subject_hash(subject)
        with self.auditor.action("gdpr.erase", job_ids=found.records.job_ids) as record:
            record.details["subject_hash"] = subject_hash
            done = self.store.erase(found.records, matcher)
            files = unlink_artifact_files(done.files)  # after the commit: never a dangling row
            outbox = 0
            for path in found.outbox_files:
                if path.exists():
                    path.unlink()
                    outbox += 1
            counts = {
                "jobs_deleted": done.jobs_deleted,
                "jobs_redacted": done.jobs_redacted,
                "jobs_running": len(done.jobs_running),
                "attempts": done.attempts,
                "deliveries": done.deliveries,
                "artifacts": done.artifacts,
                "artifact_files": files,
                "delayed_messages": done.delayed_messages,
                "outbox_files": outbox,
                "audit_rows_redacted": done.audit_rows_redacted,
            }
            record.count = done.jobs_deleted + done.jobs_redacted
            record.details["receipt"] = counts
        return Receipt(subject_hash, counts, done.jobs_running)

    def _outbox_files(self, job_ids: list[str], matcher: SubjectMatcher) -> list[Path]:
        """The ``.eml`` copies of the jobs, and any other that names the subject (sent by a job
        pruned since): only with ``CONVEYOR_SMTP_URL=file://…`` on this host."""
        folder = outbox_folder(self.settings.smtp_url)
        if folder is None or not folder.is_dir():
            return []
        wanted = {folder / f"{job_id}.eml" for job_id in job_ids}
        found = {path for path in wanted if path.is_file()}
        for path in folder.glob("*.eml"):
            if path not in found and _eml_names(path, matcher):
                found.add(path)
        return sorted(found)


def outbox_folder(smtp_url: str) -> Path | None:
    """The folder of ``file://DIR`` (as the worker reads it), or ``None`` for SMTP."""
    parts = urlsplit(smtp_url)
    if parts.scheme != "file":
        return None
    return Path(unquote(parts.netloc + parts.path)).expanduser()


def _eml_names(path: Path, matcher: SubjectMatcher) -> bool:
    """Whether a saved message names the subject: raw, or in a decoded header or text part."""
    try:
        raw = path.read_bytes()
    except OSError:
        return False
    if matcher.found_in(raw.decode("utf-8", "replace")):
        return True
    message = email.message_from_bytes(raw, policy=email.policy.default)
    texts: list[str] = [str(value) for value in message.values()]
    if isinstance(message, EmailMessage):
        for part in message.walk():
            if part.get_content_maintype() == "text":
                try:
                    texts.append(str(part.get_content()))
                except (LookupError, ValueError):
                    continue
    return matcher.found_in(texts)
