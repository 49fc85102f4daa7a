"""Storage of artifacts: the files jobs consume (attachments, source images) and produce."""

from __future__ import annotations

import contextlib
import hashlib
import io
import mimetypes
import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import unquote, urlsplit

from sqlalchemy import insert, select

from jobs import crypto
from jobs.crypto import Sealer
from jobs.defaults import ARTIFACT_CHUNK
from jobs.errors import ArtifactNotFound
from jobs.ids import is_uuid
from jobs.store.database import Database
from jobs.store.jobs import as_utc, utcnow
from jobs.store.tables import Artifacts

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
    #: ``file:///…`` when the bytes are in a file; ``None`` when they are in the database.
    location: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> ArtifactInfo:
        return cls(
            id=str(row.id),
            name=row.name,
            content_type=row.content_type,
            size=row.size,
            sha256=row.sha256,
            job_id=str(row.job_id) if row.job_id else None,
            created_at=as_utc(row.created_at) or utcnow(),
            location=row.location,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return data


class _Sink(Protocol):
    """Where an artifact's bytes go: its file, or a sealer in front of it."""

    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


class ArtifactWriter:
    """A file-like sink for one artifact's bytes: hashed and counted as they are written.

    It has no ``fileno`` on purpose: Pillow then writes through :meth:`write` (with a file
    descriptor it would write past the hash).
    """

    def __init__(self, handle: _Sink | None) -> None:
        self._handle = handle
        self._buffer: list[bytes] = []
        self.digest = hashlib.sha256()
        self.size = 0
        #: The stored artifact, once the ``with`` block has ended without error.
        self.info: ArtifactInfo | None = None

    def write(self, data: bytes) -> int:
        chunk = bytes(data)
        self.digest.update(chunk)
        self.size += len(chunk)
        if self._handle is not None:
            self._handle.write(chunk)
        else:
            self._buffer.append(chunk)
        return len(chunk)

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.flush()

    def buffered(self) -> bytes:
        """What was written, when there is no file (an artifact kept in its row)."""
        return b"".join(self._buffer)


class ArtifactStore:
    """Put and get artifacts: bytes in files under ``file:DIR`` (the default), metadata in the
    database. Artifacts stored in database rows (older releases, or a store made without a
    URL) stay readable.

    Files are written and read in chunks, so that large outputs never sit whole in memory.
    """

    def __init__(self, db: Database, url: str | None = None) -> None:
        self.db = db
        self.folder = Path(unquote(urlsplit(url).path)).absolute() if url else None

    def put(
        self, data: bytes, *, name: str, content_type: str | None = None, job_id: str | None = None
    ) -> ArtifactInfo:
        """Store ``data``; the content type is guessed from ``name`` when not given.

        Raises:
            ValueError: not bytes, or an empty or over-long name.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ValueError(f"an artifact's data must be bytes, not {type(data).__name__}")
        return self.put_stream([data], name=name, content_type=content_type, job_id=job_id)

    def put_stream(
        self,
        chunks: Iterable[bytes],
        *,
        name: str,
        content_type: str | None = None,
        job_id: str | None = None,
    ) -> ArtifactInfo:
        """Store the concatenation of ``chunks``, hashing as they come."""
        with self.create(name=name, content_type=content_type, job_id=job_id) as writer:
            for chunk in chunks:
                writer.write(chunk)
        assert writer.info is not None
        return writer.info

    @contextlib.contextmanager
    def create(
        self, *, name: str, content_type: str | None = None, job_id: str | None = None
    ) -> Iterator[ArtifactWriter]:
        """A writer for a new artifact; stored (file synced and renamed, then its row) when the
        block ends without error, discarded otherwise. ``writer.info`` then describes it.

        Raises:
            ValueError: an empty or over-long name, or one with path separators.
        """
        if not name or len(name) > MAX_NAME or any(c in name for c in "\r\n\0/\\"):
            raise ValueError(f"an artifact's name must be 1..{MAX_NAME} characters, without path separators")
        artifact_id = str(uuid.uuid4())
        location: str | None = None
        if self.folder is None:
            writer = ArtifactWriter(None)
            yield writer
        else:
            with self._file(f"{artifact_id}-{name}") as (handle, final):
                # With encryption on, the file holds sealed segments (jobs/crypto.py), never plaintext.
                sealed = self.db.sealer.seal_file(handle, artifact_id)
                writer = ArtifactWriter(sealed or handle)
                yield writer
                if sealed is not None:
                    sealed.close()
            location = final.as_uri()
        values: dict[str, Any] = {
            "id": artifact_id,
            "name": name,
            "content_type": content_type or mimetypes.guess_type(name)[0] or "application/octet-stream",
            "size": writer.size,
            "sha256": writer.digest.hexdigest(),
            "data": self.db.sealer.seal_bytes(writer.buffered(), crypto.ARTIFACT, artifact_id)
            if location is None
            else None,
            "location": location,
            "job_id": job_id,
            "created_at": utcnow(),
        }
        self._insert(values)
        writer.info = _info(values)

    def _insert(self, values: dict[str, Any]) -> None:
        """The artifact's row: one autocommitted statement on the direct connection when it is
        free (PostgreSQL), else through a pooled session (a round trip each for BEGIN, pre-ping,
        COMMIT and the pool's reset, and the ORM's unit of work: an image job writes one row per
        output, so that is most of what storing a thumbnail costs beside encoding it)."""
        with self.db.free_direct() as connection:
            if connection is not None:
                connection.execute(_INSERT_SQL, values)
                return
        with self.db.transaction() as connection:
            connection.execute(insert(Artifacts).values(**values))

    @contextlib.contextmanager
    def _file(self, filename: str) -> Iterator[tuple[IO[bytes], Path]]:
        """A temporary file in the folder, synced and renamed to ``filename`` on success."""
        assert self.folder is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".part")
        final = self.folder / filename
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle, final
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    @contextlib.contextmanager
    def source(self, artifact_id: str) -> Iterator[tuple[ArtifactInfo, IO[bytes]]]:
        """The artifact and a binary file to read it from (its own file when it has one, so
        that a reader such as Pillow streams from disk).

        Raises:
            ArtifactNotFound: no such artifact, or its file is gone.
        """
        info, location, data = self._lookup(artifact_id)
        if location is None:
            yield info, io.BytesIO(data or b"")
            return
        try:
            handle = _path(location).open("rb")
        except FileNotFoundError:
            raise ArtifactNotFound(f"artifact {artifact_id}: its file {_path(location)} is missing") from None
        with handle, self.db.sealer.open_file(handle, info.id) as readable:
            yield info, readable

    def _lookup(self, artifact_id: str) -> tuple[ArtifactInfo, str | None, bytes | None]:
        """The artifact, its file's location and its row's bytes (opened); one statement on the
        direct connection when it is free, as :meth:`_insert`.

        Raises:
            ArtifactNotFound: no such artifact.
        """
        if not is_uuid(artifact_id):
            raise ArtifactNotFound(f"no artifact {artifact_id!r}")
        with self.db.free_direct() as connection:
            if connection is not None:
                found = connection.execute(_SELECT_SQL, (artifact_id,)).fetchone()
                if found is None:
                    raise ArtifactNotFound(f"no artifact {artifact_id!r}")
                values = dict(zip(_COLUMNS, found, strict=True))
                data = self.db.sealer.open_bytes(values["data"], crypto.ARTIFACT, str(values["id"]))
                return _info(values), values["location"], data
        with self.db.transaction() as session:
            row = self._row(session, artifact_id)
            data = self.db.sealer.open_bytes(row.data, crypto.ARTIFACT, str(row.id))
            return ArtifactInfo.from_row(row), row.location, data

    def open(self, artifact_id: str) -> tuple[ArtifactInfo, Iterator[bytes]]:
        """The artifact and its bytes as chunks (from a file, never whole in memory).

        Raises:
            ArtifactNotFound: no such artifact, or its file is gone.
        """
        info, location, data = self._lookup(artifact_id)
        if location is None:
            return info, iter([bytes(data or b"")])
        path = _path(location)
        if not path.is_file():
            raise ArtifactNotFound(f"artifact {artifact_id}: its file {path} is missing")
        return info, _file_chunks(path, self.db.sealer, info.id)

    def info(self, artifact_id: str) -> ArtifactInfo:
        """Raises ``ArtifactNotFound``."""
        with self.db.transaction() as session:
            return ArtifactInfo.from_row(self._row(session, artifact_id))

    def read(self, artifact_id: str) -> tuple[ArtifactInfo, bytes]:
        """The artifact and its bytes, whole. Raises ``ArtifactNotFound``."""
        info, chunks = self.open(artifact_id)
        return info, b"".join(chunks)

    def recent(self, *, job_id: str | None = None, limit: int = 50) -> list[ArtifactInfo]:
        """Newest first."""
        query = select(Artifacts).order_by(Artifacts.created_at.desc()).limit(limit)
        if job_id is not None:
            query = query.where(Artifacts.job_id == job_id)
        with self.db.transaction() as session:
            return [ArtifactInfo.from_row(row) for row in session.execute(query)]

    def missing(self, artifact_ids: Iterable[str]) -> list[str]:
        """Those of ``artifact_ids`` that do not exist (or are not UUIDs)."""
        wanted = list(dict.fromkeys(artifact_ids))
        if not wanted:
            return []  # most jobs refer to no artifact: no round trip for them
        valid = [a for a in wanted if is_uuid(a)]
        with self.db.transaction() as session:
            found = {str(i) for i in session.scalars(select(Artifacts.id).where(Artifacts.id.in_(valid)))}
        return [a for a in wanted if a not in found]

    def _row(self, session: Any, artifact_id: str) -> Any:
        query = select(Artifacts).where(Artifacts.id == artifact_id)
        row = session.execute(query).first() if is_uuid(artifact_id) else None
        if row is None:
            raise ArtifactNotFound(f"no artifact {artifact_id!r}")
        return row


#: The columns of ``artifacts``, in the order the direct statements name them.
_COLUMNS = ("id", "name", "content_type", "size", "sha256", "data", "location", "job_id", "created_at")
_SELECT_SQL = f"SELECT {', '.join(_COLUMNS)} FROM artifacts WHERE id = %s"
_INSERT_SQL = (
    f"INSERT INTO artifacts ({', '.join(_COLUMNS)}) VALUES ({', '.join(f'%({c})s' for c in _COLUMNS)})"
)


def _info(values: dict[str, Any]) -> ArtifactInfo:
    """An artifact's description from its row's values (as the direct statements read or write them)."""
    return ArtifactInfo(
        id=str(values["id"]),
        name=values["name"],
        content_type=values["content_type"],
        size=values["size"],
        sha256=values["sha256"],
        job_id=str(values["job_id"]) if values["job_id"] else None,
        created_at=as_utc(values["created_at"]) or utcnow(),
        location=values["location"],
    )


def _file_chunks(path: Path, sealer: Sealer, artifact_id: str) -> Iterator[bytes]:
    with path.open("rb") as raw, sealer.open_file(raw, artifact_id) as handle:
        while chunk := handle.read(ARTIFACT_CHUNK):
            yield chunk


def _path(location: str) -> Path:
    return Path(unquote(urlsplit(location).path))
