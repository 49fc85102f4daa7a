"""The one-round-trip writes (an enqueue's row, the writer's batches) keep the store's errors."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from jobs.errors import ServiceUnavailable
from jobs.store import Database
from jobs.store.database import SchemaMissing
from jobs.store.jobs import JobStore, NewJob
from tests.conftest import PG_SERVER
from tests.proxy import TcpProxy

pytestmark = [pytest.mark.integration]


def new_job() -> NewJob:
    return NewJob(id=str(uuid.uuid4()), kind="noop", queue="q.default", payload={"sleep": 0}, max_retries=3)


@pytest.fixture
def empty_database(session_token: str) -> Iterator[str]:
    name = f"conveyor_empty_{session_token}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield f"{PG_SERVER}/{name}"
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def test_a_plain_enqueue_row_takes_the_direct_connection_and_reads_back(db: Database) -> None:
    jobs = JobStore(db)
    job = new_job()
    info, created = jobs.create(job)

    assert created
    assert db.direct is not None
    assert db.direct.connected
    assert db.direct.lock.acquire(blocking=False)  # released after use
    db.direct.lock.release()
    stored = jobs.get(job.id)
    assert (stored.status, stored.payload, stored.attempts) == ("queued", {"sleep": 0}, 0)
    assert stored.created_at == info.created_at


def test_while_the_direct_connection_is_busy_an_enqueue_goes_through_the_pool(db: Database) -> None:
    assert db.direct is not None
    jobs = JobStore(db)
    with db.direct.lock:  # another thread's enqueue holds it
        job = new_job()
        jobs.create(job)
    assert not db.direct.connected
    assert jobs.get(job.id).status == "queued"


def test_a_database_without_schema_says_to_upgrade_it(empty_database: str) -> None:
    db = Database(empty_database)
    try:
        with pytest.raises(SchemaMissing, match="conveyor db upgrade"):
            JobStore(db).create(new_job())
        with pytest.raises(SchemaMissing, match="conveyor db upgrade"):  # through the pool alike
            JobStore(db).get(str(uuid.uuid4()))
    finally:
        db.dispose()


def test_an_outage_is_service_unavailable_and_the_next_write_reconnects(database_url: str) -> None:
    proxy = TcpProxy(5432)
    proxy.start()
    db = Database(database_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"), pre_ping=True)
    jobs = JobStore(db)
    try:
        jobs.create(new_job())
        proxy.cut()
        with pytest.raises(ServiceUnavailable, match="PostgreSQL"):
            jobs.create(new_job())
        proxy.start()
        job = new_job()
        jobs.create(job)
        assert jobs.get(job.id).status == "queued"
    finally:
        db.dispose()
        proxy.cut()
