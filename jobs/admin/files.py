"""Removing the files that belong to jobs: their artifacts (outputs, and inputs such as source
photos or attachments that no other job uses) and the ``.eml`` copies of the file outbox.

:func:`remove_job_files` serves any command that removes some jobs' data (``conveyor prune``,
a GDPR erase): it deletes those jobs' artifacts and files, and leaves the job rows to the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from jobs.email.transport import FileOutbox
from jobs.kinds import KINDS
from jobs.settings import Settings
from jobs.store import Database
from jobs.store.maintenance import JobFilesStore

logger = logging.getLogger("conveyor.admin")


@dataclass(frozen=True)
class RemovedFiles:
    """What removing some jobs' files removed (or, in a dry run, would remove)."""

    #: Artifact rows (outputs, and inputs no other job uses).
    artifacts: int = 0
    #: Artifact files unlinked (artifacts kept in their rows have none).
    files: int = 0
    #: ``<job id>.eml`` copies of the file outbox.
    emails: int = 0

    def __add__(self, other: RemovedFiles) -> RemovedFiles:
        return RemovedFiles(
            self.artifacts + other.artifacts, self.files + other.files, self.emails + other.emails
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def inputs_of(kind: str, payload: dict[str, Any]) -> list[str]:
    """The artifacts a job of ``kind`` reads (an image's source, an email's attachments); none for
    an unknown kind or a payload its kind cannot read."""
    job_kind = KINDS.get(kind)
    if job_kind is None:
        return []
    try:
        return [str(a) for a in job_kind.artifact_ids(payload)]
    except (TypeError, ValueError, AttributeError):  # a malformed payload names nothing we can trust
        return []


def outbox_folder(settings: Settings) -> Path | None:
    """The folder of the ``.eml`` copies when ``CONVEYOR_SMTP_URL`` is ``file://DIR`` (a relative
    DIR is resolved against the current folder, as the worker does against its own)."""
    if urlsplit(settings.smtp_url).scheme != "file":
        return None
    return FileOutbox.from_url(settings.smtp_url).folder


def unlink_artifact_files(locations: Iterable[str], *, dry_run: bool = False) -> int:
    """Unlink the artifact files at ``locations`` (``file:///…``); how many existed."""
    removed = 0
    for location in locations:
        path = Path(unquote(urlsplit(location).path))
        removed += _unlink(path, dry_run)
    return removed


def remove_email_copies(folder: Path | None, job_ids: Iterable[str], *, dry_run: bool = False) -> int:
    """Unlink the outbox's ``<job id>.eml`` copy of each job; how many existed."""
    if folder is None:
        return 0
    return sum(_unlink(folder / f"{job_id}.eml", dry_run) for job_id in job_ids)


def remove_job_files(
    db: Database, settings: Settings, job_ids: Sequence[str], *, dry_run: bool = False
) -> RemovedFiles:
    """Delete the artifacts of ``job_ids`` (outputs, and inputs that no other job names), their
    files, and the jobs' ``.eml`` copies; the job rows stay for the caller to delete or redact.
    Rows go first, files once that is committed: a crash leaves a stray file, never a row
    pointing at a missing one.

    Raises:
        ServiceUnavailable: the database cannot be reached.
    """
    owned = JobFilesStore(db).delete_artifacts(job_ids, inputs_of, dry_run=dry_run)
    return RemovedFiles(
        artifacts=len(owned.ids),
        files=unlink_artifact_files(owned.files, dry_run=dry_run),
        emails=remove_email_copies(outbox_folder(settings), job_ids, dry_run=dry_run),
    )


def _unlink(path: Path, dry_run: bool) -> int:
    try:
        if dry_run:
            return int(path.is_file())
        path.unlink()
        return 1
    except FileNotFoundError:
        return 0
    except OSError as exc:  # one file that cannot go must not stop the others
        logger.warning("could not remove %s: %s", path, exc.strerror or exc)
        return 0
