"""Artifacts: bytes in files, metadata in the database; rows that hold their bytes stay readable."""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.errors import ArtifactNotFound
from jobs.store import Database
from jobs.store.artifacts import ArtifactStore
from jobs.store.jobs import utcnow
from jobs.store.models import ArtifactRow
from producers import Client

pytestmark = pytest.mark.integration


def test_a_put_writes_a_file_and_keeps_no_bytes_in_the_row(db: Database, tmp_path: Path) -> None:
    store = ArtifactStore(db, f"file://{tmp_path}")
    info = store.put(b"hello" * 1000, name="hello.txt")
    with db.session() as session:
        row = session.get(ArtifactRow, info.id)
        assert row is not None
        assert row.data is None
        assert row.location == info.location
    assert info.location is not None
    assert info.location.startswith(f"file://{tmp_path}/")
    assert Path(info.location.removeprefix("file://")).read_bytes() == b"hello" * 1000
    assert (info.size, info.sha256) == (5000, hashlib.sha256(b"hello" * 1000).hexdigest())
    with store.source(info.id) as (found, handle):
        assert (found, handle.read()) == (info, b"hello" * 1000)


def test_an_artifact_stored_in_its_row_is_still_read(client: Client, db: Database) -> None:
    artifact_id = str(uuid.uuid4())
    with db.session() as session:
        session.add(
            ArtifactRow(
                id=artifact_id,
                name="old.bin",
                content_type="application/octet-stream",
                size=3,
                sha256=hashlib.sha256(b"old").hexdigest(),
                data=b"old",
                location=None,
                job_id=None,
                created_at=utcnow(),
            )
        )
    assert client.get_artifact(artifact_id) == b"old"
    with client.artifacts.source(artifact_id) as (info, handle):
        assert (info.size, handle.read()) == (3, b"old")


def test_a_failed_write_leaves_neither_file_nor_row(db: Database, tmp_path: Path) -> None:
    store = ArtifactStore(db, f"file://{tmp_path}")

    def write_then_fail() -> None:
        with store.create(name="broken.txt") as writer:
            writer.write(b"half")
            raise RuntimeError("the job failed while writing")

    with pytest.raises(RuntimeError):
        write_then_fail()
    assert list(tmp_path.iterdir()) == []
    assert all(a.name != "broken.txt" for a in store.recent(limit=500))


def test_a_missing_file_is_reported(db: Database, tmp_path: Path) -> None:
    store = ArtifactStore(db, f"file://{tmp_path}")
    info = store.put(b"x", name="gone.txt")
    assert info.location is not None
    Path(info.location.removeprefix("file://")).unlink()
    with pytest.raises(ArtifactNotFound, match="missing"), store.source(info.id):
        pass


@contextlib.contextmanager
def path_taken(db: Database, path: str) -> Iterator[None]:
    """``direct``: the direct connection is free; ``pool``: another thread holds it, so that the
    store goes through a pooled session."""
    assert db.direct is not None
    if path == "direct":
        yield
        return
    with db.direct.lock:
        yield


@pytest.mark.parametrize("path", ["direct", "pool"])
def test_an_artifact_is_stored_and_found_alike_on_the_direct_connection_or_the_pool(
    db: Database, tmp_path: Path, path: str
) -> None:
    store = ArtifactStore(db, f"file://{tmp_path}")
    with path_taken(db, path):
        info = store.put(b"thumbnail", name="t.jpg", job_id=None)
        with store.source(info.id) as (found, handle):
            assert (found, handle.read()) == (info, b"thumbnail")
    assert db.direct is not None
    assert db.direct.connected is (path == "direct")
    assert store.info(info.id) == info  # the ORM's reading of the row the other path wrote
    assert (info.content_type, info.size, info.job_id) == ("image/jpeg", 9, None)
    assert info.created_at.tzinfo is not None


@pytest.mark.parametrize("path", ["direct", "pool"])
def test_an_unknown_artifact_is_not_found_on_either_path(db: Database, tmp_path: Path, path: str) -> None:
    store = ArtifactStore(db, f"file://{tmp_path}")
    with path_taken(db, path):
        for missing in (str(uuid.uuid4()), "not-a-uuid"):
            with pytest.raises(ArtifactNotFound, match="no artifact"), store.source(missing):
                pass


@pytest.mark.parametrize("path", ["direct", "pool"])
def test_an_artifact_in_its_row_is_read_on_either_path(db: Database, path: str) -> None:
    store = ArtifactStore(db)  # no folder: the bytes go to the row
    with path_taken(db, path):
        info = store.put(b"in the row", name="row.bin")
        assert info.location is None
        assert store.read(info.id) == (info, b"in the row")
