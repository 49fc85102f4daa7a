"""The audit log (``audit_log``): one row per state-changing admin action, and the installation
secret that keys the log's subject hashes."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select

from jobs.store.database import Database
from jobs.store.jobs import as_utc, utcnow
from jobs.store.models import AuditRow, InstallationRow

#: Job ids kept in one row; past this the row keeps the count and the selection alone.
MAX_IDS = 1000


@dataclass(frozen=True)
class AuditEntry:
    """An action as written to, or read from, the audit log."""

    namespace: str
    source: str
    actor: str
    host: str
    action: str
    outcome: str = "ok"
    count: int | None = None
    job_ids: list[str] | None = None
    selection: dict[str, Any] | None = None
    details: dict[str, Any] | None = None
    at: datetime | None = None
    id: int | None = None

    @classmethod
    def from_row(cls, row: AuditRow) -> AuditEntry:
        return cls(
            id=row.id,
            at=as_utc(row.at),
            namespace=row.namespace,
            source=row.source,
            actor=row.actor,
            host=row.host,
            action=row.action,
            outcome=row.outcome,
            count=row.count,
            job_ids=row.job_ids,
            selection=row.selection,
            details=row.details,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the time as ISO 8601."""
        data = asdict(self)
        data["at"] = self.at.isoformat() if self.at else None
        return data


class AuditStore:
    """Append to and read the audit log of one namespace."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, entry: AuditEntry) -> AuditEntry:
        """Write one row (ids past :data:`MAX_IDS` are left out: ``count`` keeps the total).

        Raises:
            ServiceUnavailable: the database cannot be reached.
            SchemaMissing: ``conveyor db upgrade`` has not made the table.
        """
        ids = entry.job_ids
        details = dict(entry.details or {})
        if ids is not None and len(ids) > MAX_IDS:
            details["job_ids_truncated"] = len(ids)
            ids = ids[:MAX_IDS]
        values = {
            **{k: v for k, v in asdict(entry).items() if k not in ("id", "at")},
            "job_ids": ids,
            "details": details or None,
            "at": entry.at or utcnow(),
        }
        with self.db.session() as session:
            new_id = session.scalar(insert(AuditRow).values(**values).returning(AuditRow.id))
        return AuditEntry(**{**values, "id": new_id})

    def find(
        self,
        namespace: str,
        *,
        since: datetime | None = None,
        action: str | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Newest first. ``action`` matches a whole name (``jobs.retry``) or a group (``jobs``)."""
        query = select(AuditRow).where(AuditRow.namespace == namespace)
        if since is not None:
            query = query.where(AuditRow.at >= since)
        if action:
            query = query.where((AuditRow.action == action) | AuditRow.action.startswith(f"{action}."))
        query = query.order_by(AuditRow.at.desc(), AuditRow.id.desc()).limit(limit)
        with self.db.session() as session:
            return [AuditEntry.from_row(row) for row in session.scalars(query)]

    def installation_secret(self) -> bytes:
        """The random secret ``conveyor db upgrade`` made for this installation.

        Raises:
            SchemaMissing: the migration that makes it has not run.
        """
        with self.db.session() as session:
            secret = session.scalar(select(InstallationRow.secret).where(InstallationRow.id == 1))
        if secret is None:  # a row deleted by hand: make a new one (old audit hashes stop matching)
            return self._new_secret()
        return bytes(secret)

    def _new_secret(self) -> bytes:
        secret = os.urandom(32)
        with self.db.session() as session:
            session.add(InstallationRow(id=1, secret=secret, created_at=utcnow()))
        return secret
