"""Which key sealed each stored value, and re-sealing them under the current key (``conveyor keys``).

Every encrypted column is listed once in :data:`SEALED` with the field its values are bound to.
A rotation walks each table in primary-key order, a batch per short transaction, and writes
back only the values not yet under the current key (values in the clear included), each with
a compare-and-set (``WHERE column = what was read``): a value a worker rewrote meanwhile is
left alone, since the worker sealed it itself, and is looked at again on the next pass. So a
rotation holds no lock across batches, runs beside workers, and can be stopped and run again
(it skips what is done). Artifact files are re-sealed into a new file renamed over the old one.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import JSON, and_, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import InstrumentedAttribute

from jobs import crypto
from jobs.crypto import Sealer, file_key_id, key_id_of
from jobs.defaults import ARTIFACT_CHUNK
from jobs.store.database import Database
from jobs.store.models import (
    ArtifactRow,
    AttemptRow,
    DelayedMessageRow,
    EmailDeliveryRow,
    JobRow,
    OutboxRow,
)
from jobs.subjects import SubjectHasher

PLAINTEXT = "plaintext"
#: Rows read and written per transaction.
BATCH = 500
#: Passes over a table while workers keep rewriting values under an older key.
MAX_PASSES = 3


@dataclass(frozen=True)
class SealedColumn:
    column: InstrumentedAttribute[Any]
    #: The field its values are bound to (``jobs/crypto.py``).
    field: str
    #: ``json``, ``text`` or ``bytes``.
    form: str


@dataclass(frozen=True)
class SealedTable:
    name: str
    key: InstrumentedAttribute[Any]
    #: The row id a value is bound to (a job's id for its attempts).
    row: InstrumentedAttribute[Any]
    columns: tuple[SealedColumn, ...]


SEALED = (
    SealedTable(
        "jobs",
        JobRow.id,
        JobRow.id,
        (
            SealedColumn(JobRow.payload, crypto.PAYLOAD, "json"),
            SealedColumn(JobRow.result, crypto.RESULT, "json"),
            SealedColumn(JobRow.error, crypto.ERROR, "text"),
        ),
    ),
    SealedTable(
        "job_attempts",
        AttemptRow.id,
        AttemptRow.job_id,
        (
            SealedColumn(AttemptRow.error, crypto.ERROR, "text"),
            SealedColumn(AttemptRow.traceback, crypto.TRACEBACK, "text"),
        ),
    ),
    SealedTable(
        "email_deliveries",
        EmailDeliveryRow.job_id,
        EmailDeliveryRow.job_id,
        (
            SealedColumn(EmailDeliveryRow.accepted, crypto.ACCEPTED, "json"),
            SealedColumn(EmailDeliveryRow.rejected, crypto.REJECTED, "json"),
        ),
    ),
    SealedTable(
        "delayed_messages",
        DelayedMessageRow.message_id,
        DelayedMessageRow.message_id,
        (SealedColumn(DelayedMessageRow.body, crypto.HELD_BODY, "bytes"),),
    ),
    SealedTable(
        "outbox",
        OutboxRow.id,
        OutboxRow.job_id,
        (SealedColumn(OutboxRow.message, crypto.OUTBOX_MESSAGE, "bytes"),),
    ),
    SealedTable(
        "artifacts",
        ArtifactRow.id,
        ArtifactRow.id,
        (SealedColumn(ArtifactRow.data, crypto.ARTIFACT, "bytes"),),
    ),
)
_JSON_OR_NULL = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
#: The name under which artifact files are counted.
FILES = "artifact_files"
#: The name under which the jobs' keyed subject hashes (``jobs.subjects``, GDPR lookups) are counted.
SUBJECTS = "jobs.subjects"


@dataclass
class TableRotation:
    """What a rotation did to one table (or to the artifact files)."""

    #: Values looked at (not NULL).
    values: int = 0
    #: Values written under the current key (``plaintext``: those that were in the clear).
    resealed: Counter[str] = field(default_factory=Counter)
    #: Values already under the current key.
    current: int = 0
    #: Values a worker rewrote while they were being re-sealed (left as the worker wrote them).
    raced: int = 0
    #: Files gone before they could be re-sealed (pruned meanwhile).
    missing: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "values": self.values,
            "resealed": sum(self.resealed.values()),
            "resealed_from": dict(self.resealed),
            "already_current": self.current,
            "raced": self.raced,
            "missing": self.missing,
        }


#: Told ``(table, rows done, rows in the table)`` after each batch.
OnBatch = Callable[[str, int, int], None]


class KeyStore:
    """Counts of stored values per key id, and their rotation to the current key."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def sealer(self) -> Sealer:
        return self.db.sealer

    def row_counts(self) -> dict[str, int]:
        """Rows per table holding sealed columns, and artifacts kept in files."""
        with self.db.session() as session:
            counts = {t.name: int(session.scalar(select(func.count(t.key))) or 0) for t in SEALED}
            counts[FILES] = int(
                session.scalar(select(func.count()).where(ArtifactRow.location.is_not(None))) or 0
            )
        return counts

    def status(self) -> dict[str, dict[str, int]]:
        """Per table and column (``table.column``): how many values each key id sealed, and how
        many are in the clear (``plaintext``); NULLs are not counted. Files under ``artifact_files``."""
        counts: dict[str, Counter[str]] = {}
        for table in SEALED:
            for column in table.columns:
                counts[f"{table.name}.{column.column.key}"] = Counter()
            for rows in self._batches(table):
                for row in rows:
                    for column, value in zip(table.columns, row[2:], strict=True):
                        if value is not None:
                            counts[f"{table.name}.{column.column.key}"][key_id_of(value) or PLAINTEXT] += 1
        files: Counter[str] = Counter()
        for _artifact_id, path in self._files():
            try:
                with path.open("rb") as handle:
                    files[file_key_id(handle) or PLAINTEXT] += 1
            except FileNotFoundError:
                continue
        counts[FILES] = files
        return {name: dict(counter) for name, counter in counts.items()}

    def rotate_table(self, table: SealedTable, on_batch: OnBatch | None = None) -> TableRotation:
        """Re-seal every value of ``table`` not under the current key, a batch per transaction."""
        current = self.sealer.current_id
        if current is None:
            raise ValueError("no encryption keys: set CONVEYOR_ENCRYPTION_KEYS")
        report = TableRotation()
        total = self.row_counts()[table.name]
        for _ in range(MAX_PASSES):
            raced_before = report.raced
            done = 0
            for rows in self._batches(table):
                self._reseal_batch(table, rows, report)
                done += len(rows)
                if on_batch is not None:
                    on_batch(table.name, min(done, total), total)
            if report.raced == raced_before:
                break
        return report

    def _reseal_batch(self, table: SealedTable, rows: list[tuple[Any, ...]], report: TableRotation) -> None:
        current = self.sealer.current_id
        updates: list[dict[str, Any]] = []
        for key, row_id, *values in rows:
            changed = False
            params: dict[str, Any] = {"k": key}
            for i, (column, value) in enumerate(zip(table.columns, values, strict=True)):
                params[f"o{i}"] = params[f"n{i}"] = value
                if value is None:
                    continue
                report.values += 1
                kid = key_id_of(value)
                if kid == current:
                    report.current += 1
                    continue
                params[f"n{i}"] = self._reseal(column, value, str(row_id))
                report.resealed[kid or PLAINTEXT] += 1
                changed = True
            if changed:
                updates.append(params)
        if not updates:
            return
        statement = _compare_and_set(table)
        with self.db.transaction() as connection:
            matched = connection.execute(statement, updates).rowcount
        if matched < len(updates):  # rows a worker rewrote meanwhile: their values stay as written
            report.raced += len(updates) - matched

    def rehash_subjects(self, hasher: SubjectHasher, on_batch: OnBatch | None = None) -> TableRotation:
        """Recompute every job's keyed subject hashes under the current key, so that GDPR lookups
        still find each job once an old key is removed, and find the jobs stored before
        encryption was on (their payloads were in the clear, with no hashes).

        Idempotent: a job whose hashes are already the current key's is not written.
        """
        report, done = TableRotation(), 0
        total = self.row_counts()["jobs"]
        as_hex = self.db.dialect != "postgresql"
        statement = (
            update(JobRow)
            .where(
                JobRow.id == bindparam("k"),
                JobRow.payload.is_not_distinct_from(bindparam("o", type_=_JSON_OR_NULL)),
            )
            .values(subjects=bindparam("n", type_=JobRow.subjects.type))
        )
        for rows in self._subject_batches():
            updates: list[dict[str, Any]] = []
            for job_id, payload, stored in rows:
                report.values += 1
                hashes = hasher.payload_hashes(self.sealer.open_json(payload, crypto.PAYLOAD, str(job_id)))
                new = None if hashes is None else [h.hex() for h in hashes] if as_hex else hashes
                if _hashes_of(stored) == new:
                    report.current += 1
                    continue
                updates.append({"k": job_id, "o": payload, "n": new})
                report.resealed["hashes"] += 1
            if updates:
                with self.db.transaction() as connection:  # guarded: a redacted payload keeps its hashes
                    report.raced += len(updates) - connection.execute(statement, updates).rowcount
            done += len(rows)
            if on_batch is not None:
                on_batch(SUBJECTS, min(done, total), total)
        return report

    def _subject_batches(self) -> Iterator[list[tuple[Any, ...]]]:
        last: Any = None
        while True:
            query = select(JobRow.id, JobRow.payload, JobRow.subjects).order_by(JobRow.id).limit(BATCH)
            if last is not None:
                query = query.where(JobRow.id > last)
            with self.db.session() as session:
                rows = [tuple(row) for row in session.execute(query)]
            if not rows:
                return
            yield rows
            last = rows[-1][0]

    def _reseal(self, column: SealedColumn, value: Any, row_id: str) -> Any:
        s = self.sealer
        if column.form == "json":
            return s.seal_json(s.open_json(value, column.field, row_id), column.field, row_id)
        if column.form == "text":
            return s.seal_text(s.open_text(value, column.field, row_id), column.field, row_id)
        return s.seal_bytes(s.open_bytes(bytes(value), column.field, row_id), column.field, row_id)

    def _batches(self, table: SealedTable) -> Iterator[list[tuple[Any, ...]]]:
        """The table's rows (key, row id, sealed columns…) in key order, a batch per transaction."""
        columns = [c.column for c in table.columns]
        last: Any = None
        while True:
            query = select(table.key, table.row, *columns).order_by(table.key).limit(BATCH)
            if last is not None:
                query = query.where(table.key > last)
            with self.db.session() as session:
                rows = [tuple(row) for row in session.execute(query)]
            if not rows:
                return
            yield rows
            last = rows[-1][0]

    def _files(self) -> Iterator[tuple[str, Path]]:
        """The artifacts kept in files: id and path, in id order, a batch per transaction."""
        last: str | None = None
        while True:
            query = select(ArtifactRow.id, ArtifactRow.location).where(ArtifactRow.location.is_not(None))
            query = query.order_by(ArtifactRow.id).limit(BATCH)
            if last is not None:
                query = query.where(ArtifactRow.id > last)
            with self.db.session() as session:
                rows = [(str(i), str(loc)) for i, loc in session.execute(query)]
            if not rows:
                return
            yield from ((i, Path(unquote(urlsplit(loc).path))) for i, loc in rows)
            last = rows[-1][0]

    def rotate_files(self, on_batch: OnBatch | None = None) -> TableRotation:
        """Re-seal every artifact file not under the current key (into a new file renamed over it)."""
        report = TableRotation()
        total = self.row_counts()[FILES]
        for done, (artifact_id, path) in enumerate(self._files(), start=1):
            try:
                self._reseal_file(artifact_id, path, report)
            except FileNotFoundError:
                report.missing += 1
            if on_batch is not None and (done % 50 == 0 or done == total):
                on_batch(FILES, min(done, total), total)
        return report

    def _reseal_file(self, artifact_id: str, path: Path, report: TableRotation) -> None:
        with path.open("rb") as handle:
            kid = file_key_id(handle)
            report.values += 1
            if kid == self.sealer.current_id:
                report.current += 1
                return
            handle.seek(0)
            fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".rekey")
            try:
                with os.fdopen(fd, "wb") as out, self.sealer.open_file(handle, artifact_id) as plain:
                    writer = self.sealer.seal_file(out, artifact_id)
                    assert writer is not None
                    while chunk := plain.read(ARTIFACT_CHUNK):
                        writer.write(chunk)
                    writer.close()
                    os.fsync(out.fileno())
                # Readers that opened the old file keep reading it; new ones open the new one.
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        report.resealed[kid or PLAINTEXT] += 1


def _hashes_of(stored: Any) -> list[bytes | str] | None:
    """Stored hashes as comparable values (``bytea`` may come back as ``memoryview``)."""
    if stored is None:
        return None
    return [h if isinstance(h, str) else bytes(h) for h in stored]


def _compare_and_set(table: SealedTable) -> Any:
    """``UPDATE`` of one row's sealed columns, only while each still holds what was read."""
    guards = [table.key == bindparam("k")]
    values: dict[str, Any] = {}
    for i, column in enumerate(table.columns):
        # A missing JSON value is SQL NULL (not JSON's null), read and written alike.
        type_ = _JSON_OR_NULL if column.form == "json" else column.column.type
        old = bindparam(f"o{i}", type_=type_)
        guards.append(column.column.is_not_distinct_from(old))
        values[column.column.key] = bindparam(f"n{i}", type_=type_)
    return update(table.key.class_).where(and_(*guards)).values(values)
