"""Searching jobs for the dashboard: filters, a search by id, error text or payload, and keyset
pagination (newest first, ``(created_at, id)`` below a cursor), fast on millions of rows.

- By id: the primary key.
- By payload: ``payload @> :document`` (or several documents, any of which matches) on
  PostgreSQL, served by the GIN ``jsonb_path_ops`` index of migration 0012; on SQLite (the
  demo) containment is checked here, row by row.
- By error text: a substring, case-insensitive. No index serves ``ILIKE '%…%'`` without
  ``pg_trgm``, so one page reads at most :data:`SCAN_LIMIT` candidate rows (newest first, after
  the other filters and the cursor): when they hold fewer matches than a page, the page says so
  and its cursor continues from the last row read. Encrypted errors are opened and searched here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, null, or_, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB

from jobs import crypto
from jobs.store.database import Database
from jobs.store.jobs import JobInfo, as_utc, escape_like
from jobs.store.models import JobRow

#: Jobs on one page.
PAGE_SIZE = 50
#: Candidate rows one page of an error-text (or, on SQLite, payload) search reads at most.
SCAN_LIMIT = 5_000
#: A position in the newest-first listing: the last row shown, ``(created_at, id)``.
Cursor = tuple[datetime, str]


@dataclass(frozen=True)
class JobQuery:
    """Which jobs the dashboard lists: filters, at most one search, and where the page starts."""

    status: str | None = None
    kind: str | None = None
    queue: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    #: Exactly this job (a canonical UUID).
    job_id: str | None = None
    #: A substring of the error, case-insensitive.
    error: str | None = None
    #: JSON objects the payload must contain one of (``@>``); empty: no payload search.
    payload: tuple[dict[str, Any], ...] = ()
    #: Only jobs older than this position (the previous page's last row).
    before: Cursor | None = None
    limit: int = PAGE_SIZE


@dataclass(frozen=True)
class JobPage:
    """One page: its jobs, newest first, and the cursor of the next (older) page, if any."""

    jobs: list[JobInfo]
    next: Cursor | None
    #: True when a bounded search read :data:`SCAN_LIMIT` rows without filling the page (its
    #: ``next`` then goes on from the last row read).
    truncated: bool = False


def contains(document: Any, part: Any) -> bool:
    """PostgreSQL's ``@>`` on JSON values: objects contain sub-objects, arrays contain the
    elements of the array asked for (in any order), scalars are equal."""
    if isinstance(part, dict):
        return isinstance(document, dict) and all(
            key in document and contains(document[key], value) for key, value in part.items()
        )
    if isinstance(part, list):
        if not isinstance(document, list):
            return False
        return all(any(contains(item, wanted) for item in document) for wanted in part)
    if isinstance(document, list):  # a top-level array contains a scalar it holds
        return any(item == part and type(item) is type(part) for item in document)
    return document == part and type(document) is type(part)


class SearchStore:
    """The dashboard's job listing."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def page(self, query: JobQuery) -> JobPage:
        """A page of ``query``'s jobs, newest first.

        Raises:
            ValueError: a payload search on encrypted payloads (they cannot be searched).
            ServiceUnavailable: the database cannot be reached.
        """
        if query.payload and self.db.sealer.enabled:
            raise ValueError(
                "payloads are stored encrypted (CONVEYOR_ENCRYPTION_KEYS): they cannot be searched"
            )
        needs_scan = query.error is not None or (bool(query.payload) and self.db.dialect != "postgresql")
        if needs_scan:
            return self._scanned(query)
        statement = self._filtered(select(JobRow), query).limit(query.limit + 1)
        with self.db.session() as session:
            jobs = [JobInfo.from_row(row, self.db.sealer) for row in session.scalars(statement)]
        more = len(jobs) > query.limit
        jobs = jobs[: query.limit]
        return JobPage(jobs, _cursor(jobs[-1]) if more and jobs else None)

    def _filtered(self, statement: Select[Any], query: JobQuery) -> Select[Any]:
        """``statement`` with every filter but the error text, the cursor and the order."""
        for column, value in (
            (JobRow.status, query.status),
            (JobRow.kind, query.kind),
            (JobRow.queue, query.queue),
            (JobRow.id, query.job_id),
        ):
            if value is not None:
                statement = statement.where(column == value)
        if query.since is not None:
            statement = statement.where(JobRow.created_at >= query.since)
        if query.until is not None:
            statement = statement.where(JobRow.created_at < query.until)
        if query.payload and self.db.dialect == "postgresql":
            stored = type_coerce(JobRow.payload, JSONB)
            statement = statement.where(or_(*(stored.contains(document) for document in query.payload)))
        if query.before is not None:
            moment, ident = query.before
            # `created_at <= c` first: an index on created_at serves it; the tie-break by id after.
            statement = statement.where(
                and_(JobRow.created_at <= moment, or_(JobRow.created_at < moment, JobRow.id < ident))
            )
        return statement.order_by(JobRow.created_at.desc(), JobRow.id.desc())

    def _scanned(self, query: JobQuery) -> JobPage:
        """A bounded search: at most :data:`SCAN_LIMIT` candidates read, matched here."""
        statement = self._filtered(select(JobRow.id, JobRow.created_at, *self._tested(query)), query)
        if query.error is not None:
            statement = statement.where(JobRow.error.is_not(None))
        found: list[str] = []
        last: Cursor | None = None
        read = 0
        with self.db.translated(), self.db.engine.connect() as connection:
            rows = connection.execution_options(stream_results=True, yield_per=1000).execute(
                statement.limit(SCAN_LIMIT)
            )
            try:
                for ident, created_at, error, payload in rows:
                    read += 1
                    last = (as_utc(created_at) or created_at, str(ident))
                    if self._matches(query, str(ident), error, payload):
                        found.append(str(ident))
                        if len(found) > query.limit:
                            break
            finally:  # a page filled early closes the server-side cursor here
                rows.close()
        page = found[: query.limit]
        jobs = _in_order(self._by_ids(page), page)
        if len(found) > query.limit:
            return JobPage(jobs, _cursor(jobs[-1]) if jobs else last)
        exhausted = read >= SCAN_LIMIT  # the next page goes on after the last row read
        return JobPage(jobs, last if exhausted else None, truncated=exhausted and len(jobs) < query.limit)

    def _tested(self, query: JobQuery) -> tuple[Any, Any]:
        """The two columns a scanned row is matched on: whether its error matches (computed by
        the database, unless errors are encrypted: then the sealed text), and its payload (only
        where the database cannot test containment)."""
        if query.error is None:
            error: Any = null()
        elif self.db.sealer.enabled:
            error = JobRow.error
        else:
            error = JobRow.error.ilike(f"%{escape_like(query.error)}%", escape="\\")
        payload = JobRow.payload if query.payload and self.db.dialect != "postgresql" else null()
        return error, payload

    def _matches(self, query: JobQuery, ident: str, error: Any, payload: Any) -> bool:
        """Whether a scanned row (see :meth:`_tested`) matches the search."""
        if query.error is not None:
            if isinstance(error, str):  # sealed: opened and searched here
                text = self.db.sealer.open_text(error, crypto.ERROR, ident) or ""
                if (query.error or "").casefold() not in text.casefold():
                    return False
            elif not error:
                return False
        return not query.payload or any(contains(payload, document) for document in query.payload)

    def _by_ids(self, ids: Iterable[str]) -> list[JobInfo]:
        wanted = list(ids)
        if not wanted:
            return []
        with self.db.session() as session:
            rows = session.scalars(select(JobRow).where(JobRow.id.in_(wanted)))
            return [JobInfo.from_row(row, self.db.sealer) for row in rows]


def _cursor(job: JobInfo) -> Cursor:
    return job.created_at, job.id


def _in_order(jobs: list[JobInfo], ids: list[str]) -> list[JobInfo]:
    by_id = {job.id: job for job in jobs}
    return [by_id[i] for i in ids if i in by_id]
