"""Storage of artifacts: the files jobs consume (attachments, source images) and produce."""

from __future__ import annotations

import hashlib
import mimetypes
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from jobs.errors import ArtifactNotFound
from jobs.ids import is_uuid
from jobs.store.database import Database
from jobs.store.jobs import as_utc, utcnow
from jobs.store.models import ArtifactRow

#: Bytes: the longest artifact name kept (the column's size).
MAX_NAME = 255


@dataclass(frozen=True)
class ArtifactInfo:
    """An artifact's description, without its bytes."""

    id: str
    name: str
    content_type: str
    size: int
    sha256: str
    job_id: str | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: ArtifactRow) -> ArtifactInfo:
        return cls(
            id=str(row.id),
            name=row.name,
            content_type=row.content_type,
            size=row.size,
            sha256=row.sha256,
            job_id=str(row.job_id) if row.job_id else None,
            created_at=as_utc(row.created_at) or utcnow(),
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return data


class ArtifactStore:
    """Put and get artifacts (bytes kept in the database)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def put(
        self, data: bytes, *, name: str, content_type: str | None = None, job_id: str | None = None
    ) -> ArtifactInfo:
        """Store ``data``; the content type is guessed from ``name`` when not given.

        Raises:
            ValueError: not bytes, or an empty or over-long name.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ValueError(f"an artifact's data must be bytes, not {type(data).__name__}")
        if not name or len(name) > MAX_NAME or any(c in name for c in "\r\n\0/\\"):
            raise ValueError(f"an artifact's name must be 1..{MAX_NAME} characters, without path separators")
        payload = bytes(data)
        row = ArtifactRow(
            id=str(uuid.uuid4()),
            name=name,
            content_type=content_type or mimetypes.guess_type(name)[0] or "application/octet-stream",
            size=len(payload),
            sha256=hashlib.sha256(payload).hexdigest(),
            data=payload,
            job_id=job_id,
            created_at=utcnow(),
        )
        with self.db.session() as session:
            session.add(row)
        return ArtifactInfo.from_row(row)

    def info(self, artifact_id: str) -> ArtifactInfo:
        """Raises ``ArtifactNotFound``."""
        with self.db.session() as session:
            return ArtifactInfo.from_row(self._row(session, artifact_id))

    def read(self, artifact_id: str) -> tuple[ArtifactInfo, bytes]:
        """The artifact and its bytes. Raises ``ArtifactNotFound``."""
        with self.db.session() as session:
            row = self._row(session, artifact_id)
            return ArtifactInfo.from_row(row), bytes(row.data or b"")

    def missing(self, artifact_ids: Iterable[str]) -> list[str]:
        """Those of ``artifact_ids`` that do not exist (or are not UUIDs)."""
        wanted = list(dict.fromkeys(artifact_ids))
        valid = [a for a in wanted if is_uuid(a)]
        with self.db.session() as session:
            found = {str(i) for i in session.scalars(select(ArtifactRow.id).where(ArtifactRow.id.in_(valid)))}
        return [a for a in wanted if a not in found]

    def _row(self, session: Any, artifact_id: str) -> ArtifactRow:
        row = session.get(ArtifactRow, artifact_id) if is_uuid(artifact_id) else None
        if row is None:
            raise ArtifactNotFound(f"no artifact {artifact_id!r}")
        return row  # type: ignore[no-any-return]
