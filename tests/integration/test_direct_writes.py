"""The one-round-trip writes (an enqueue's row, the writer's batches) keep the store's errors."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import create_engine, text

from jobs.errors import ServiceUnavailable, StoreConflict
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


#: A transaction through one of the store's two paths: take lock ``a``, meet the other
#: transaction (``met``), wait ``pause`` seconds, then take lock ``b``.
Locker = Callable[[int, int, threading.Barrier, float], None]


def deadlock(victim: Locker, other: Locker) -> list[BaseException]:
    """Two transactions that each hold one advisory lock and wait for the other's. ``victim``
    waits first, so its deadlock check runs first and PostgreSQL aborts it. Returns what the
    victim and the other raised, in that order (None for none)."""
    met = threading.Barrier(2, timeout=10)
    raised: list[BaseException | None] = [None, None]

    def run(n: int, lock: Locker, a: int, b: int, pause: float) -> None:
        try:
            lock(a, b, met, pause)
        except BaseException as exc:  # the caller checks what was raised
            raised[n] = exc

    key = uuid.uuid4().int % 2**62
    threads = [
        threading.Thread(target=run, args=(0, victim, key, key + 1, 0.0)),
        threading.Thread(target=run, args=(1, other, key + 1, key, 0.3)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return raised


def through_the_pool(db: Database) -> Locker:
    def lock(a: int, b: int, met: threading.Barrier, pause: float) -> None:
        with db.transaction() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": a})
            met.wait()
            time.sleep(pause)
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": b})

    return lock


def through_the_direct_connection(db: Database) -> Locker:
    def lock(a: int, b: int, met: threading.Barrier, pause: float) -> None:
        assert db.direct is not None
        with db.direct.connect() as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (a,))
            met.wait()
            time.sleep(pause)
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (b,))

    return lock


@pytest.mark.parametrize("path", ["pool", "direct"])
def test_a_deadlock_is_a_conflict_to_try_again_not_an_outage(db: Database, path: str) -> None:
    pool, direct = through_the_pool(db), through_the_direct_connection(db)
    assert db.direct is not None
    with db.direct.connect() as before:
        pass

    conflict, other = deadlock(pool, direct) if path == "pool" else deadlock(direct, pool)

    assert other is None  # PostgreSQL aborted one transaction; the other went through
    assert isinstance(conflict, StoreConflict), conflict
    assert isinstance(conflict, ServiceUnavailable)  # waited out and tried again like an outage
    assert "rolled back a transaction that conflicted with another: deadlock detected" in str(conflict)
    assert "unreachable" not in str(conflict)
    assert "postgres:***@127.0.0.1" in str(conflict)  # the URL, its password masked
    with db.direct.connect() as after:  # the direct connection was not dropped for it
        assert after is before
        assert after.execute("SELECT 1").fetchone() == (1,)
