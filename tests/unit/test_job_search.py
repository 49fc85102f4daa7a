"""The dashboard's job search on a throw-away SQLite store (the demo's): filters, keyset pages
without gaps or repeats, payload containment checked row by row, bounded error search."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from jobs.keyring import keyring_of
from jobs.store import Database, JobStore, NewJob
from jobs.store import search as search_module
from jobs.store.migrate import ensure_database, upgrade
from jobs.store.models import JobRow
from jobs.store.search import JobQuery, SearchStore

START = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path}/jobs.db"
    ensure_database(url)
    database = Database(url)
    upgrade(database)
    yield database
    database.dispose()


def add(db: Database, minute: int, *, kind: str = "noop", error: str | None = None, **payload: object) -> str:
    """A job created ``minute`` minutes after START (several may share a minute)."""
    job_id = str(uuid.uuid4())
    JobStore(db).create(NewJob(job_id, kind, f"ns.{kind}", dict(payload), max_retries=3))
    status = "failed" if error else "queued"
    with db.session() as session:  # typed, so that SQLite stores the time as the store writes it
        session.execute(
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(created_at=START + timedelta(minutes=minute), error=error, status=status)
        )
    return job_id


def every_page(store: SearchStore, query: JobQuery) -> list[list[str]]:
    pages: list[list[str]] = []
    while True:
        page = store.page(query)
        pages.append([job.id for job in page.jobs])
        if page.next is None:
            return pages
        query = JobQuery(**{**query.__dict__, "before": page.next})


def test_keyset_pages_cover_every_job_once_newest_first_also_with_equal_times(db: Database) -> None:
    ids = [add(db, minute // 3) for minute in range(23)]  # three jobs a minute: ties on created_at

    pages = every_page(SearchStore(db), JobQuery(limit=5))

    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    flat = [i for page in pages for i in page]
    assert sorted(flat) == sorted(ids)
    order = {i: n for n, i in enumerate(ids)}
    assert [order[i] // 3 for i in flat] == sorted((order[i] // 3 for i in flat), reverse=True)


def test_filters_narrow_the_listing(db: Database) -> None:
    email = add(db, 1, kind="email", to="ada@example.com")
    failed = add(db, 2, error="PermanentError: boom")
    add(db, 3)

    store = SearchStore(db)

    assert [j.id for j in store.page(JobQuery(kind="email")).jobs] == [email]
    assert [j.id for j in store.page(JobQuery(status="failed")).jobs] == [failed]
    assert [j.id for j in store.page(JobQuery(queue="ns.email")).jobs] == [email]
    assert [j.id for j in store.page(JobQuery(job_id=failed)).jobs] == [failed]
    window = JobQuery(since=START + timedelta(minutes=2), until=START + timedelta(minutes=3))
    assert [j.id for j in store.page(window).jobs] == [failed]


def test_payload_containment_is_checked_row_by_row_on_sqlite(db: Database) -> None:
    ada = add(db, 1, kind="email", to="ada@example.com", context={"name": "Ada", "n": 1})
    listed = add(db, 2, kind="email", to=["carol@example.com", "bob@example.com"], context={"name": "Bob"})

    store = SearchStore(db)

    assert [j.id for j in store.page(JobQuery(payload=({"to": "ada@example.com"},))).jobs] == [ada]
    assert [j.id for j in store.page(JobQuery(payload=({"context": {"name": "Ada"}},))).jobs] == [ada]
    assert store.page(JobQuery(payload=({"context": {"n": "1"}},))).jobs == []
    either = JobQuery(payload=({"to": "bob@example.com"}, {"to": ["bob@example.com"]}))
    assert [j.id for j in store.page(either).jobs] == [listed]


def test_error_search_is_case_insensitive_and_takes_like_characters_literally(db: Database) -> None:
    hit = add(db, 1, error="SMTPDataError: 550 100% full_box")
    add(db, 2, error="SMTPDataError: 550 1000 fullxbox")

    store = SearchStore(db)

    assert [j.id for j in store.page(JobQuery(error="100% FULL_")).jobs] == [hit]
    assert len(store.page(JobQuery(error="smtpdataerror")).jobs) == 2


def test_a_bounded_error_search_says_it_stopped_and_continues_from_where_it_did(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_module, "SCAN_LIMIT", 4)
    old = add(db, 1, error="ValueError: needle")
    for minute in range(2, 8):
        add(db, minute, error="ValueError: hay")
    store = SearchStore(db)

    first = store.page(JobQuery(error="needle"))
    second = store.page(JobQuery(error="needle", before=first.next))

    assert first.jobs == []
    assert first.truncated
    assert first.next is not None
    assert [j.id for j in second.jobs] == [old]
    assert not second.truncated
    assert second.next is None


def test_payload_search_is_refused_when_payloads_are_encrypted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/sealed.db"
    ensure_database(url)
    key = "k1:" + base64.b64encode(b"k" * 32).decode()
    sealed = Database(url, keyring=keyring_of(key))
    try:
        upgrade(sealed)
        with pytest.raises(ValueError, match="encrypted"):
            SearchStore(sealed).page(JobQuery(payload=({"to": "ada@example.com"},)))
    finally:
        sealed.dispose()
