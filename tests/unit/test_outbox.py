"""The transactional outbox's refusals, on the embedded demo's store (SQLite, in-process broker):
``session=`` needs PostgreSQL and RabbitMQ, and says so before anything is written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from jobs.settings import Settings
from jobs.store import Database, JobStore, NewJob
from jobs.store.migrate import ensure_database, upgrade
from jobs.store.models import JobRow
from jobs.store.outbox import OutboxStore
from producers import Client


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/jobs.db"
    ensure_database(url)
    database = Database(url)
    upgrade(database)
    database.dispose()
    return url


@pytest.fixture
def client(database_url: str) -> Iterator[Client]:
    with Client(Settings(broker_url="memory://", database_url=database_url, namespace="unit")) as c:
        yield c


def rows(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(JobRow)) or 0)
    finally:
        engine.dispose()


def test_the_embedded_setup_refuses_session_and_writes_nothing(client: Client, database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with Session(engine) as session, pytest.raises(ValueError, match="session= needs PostgreSQL"):
            client.enqueue("noop", session=session, sleep=0)
    finally:
        engine.dispose()

    assert rows(database_url) == 0


def test_the_store_refuses_what_is_not_a_session_or_a_connection_and_a_sqlite_session(
    database_url: str,
) -> None:
    db = Database(database_url)
    outbox = OutboxStore(JobStore(db))
    engine = create_engine(database_url)
    job = NewJob(
        id="6b1c3c4e-8f0e-4c4a-9d51-0f3b3f1a2b3c",
        kind="noop",
        queue="unit.default",
        payload={},
        max_retries=0,
    )
    message = None
    try:
        with pytest.raises(TypeError, match="not str"):
            outbox.write("postgresql://elsewhere", job, message, namespace="unit")  # type: ignore[arg-type]
        with engine.connect() as connection, pytest.raises(ValueError, match="on sqlite"):
            outbox.write(connection, job, message, namespace="unit")  # type: ignore[arg-type]
    finally:
        engine.dispose()
        db.dispose()

    assert rows(database_url) == 0
