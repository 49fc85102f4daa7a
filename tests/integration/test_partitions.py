"""The time partitions of ``jobs`` on PostgreSQL (migration 0017, ``jobs/store/partitions.py``):
where rows land, how retention drops a day whole, and the migration of an existing table."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from jobs.admin.audit import Actor, Auditor
from jobs.admin.prune import prune_jobs
from jobs.admin.retention import Retention
from jobs.ids import id_time, new_job_id
from jobs.settings import Settings
from jobs.store import Database, JobStore, NewJob
from jobs.store.artifacts import ArtifactStore
from jobs.store.migrate import alembic_config, ensure_database, upgrade
from jobs.store.partitions import DEFAULT, PartitionStore, create_day, partition_name
from producers.client import Client
from tests.conftest import PG_SERVER

TODAY = datetime.now(UTC).date()


@pytest.fixture
def own_db(session_token: str) -> Iterator[Database]:
    """A database of this test alone: prunes elsewhere must not drop this test's partitions."""
    name = f"conveyor_test_{session_token}_parts_{secrets.token_hex(3)}"
    url = f"{PG_SERVER}/{name}"
    ensure_database(url)
    db = Database(url)
    yield db
    db.dispose()
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def migrated(own_db: Database) -> Database:
    upgrade(own_db)
    return own_db


def _partition_of(db: Database, job_id: str) -> str:
    with db.engine.connect() as connection:
        return str(
            connection.execute(
                text("SELECT tableoid::regclass FROM jobs WHERE id = :id"), {"id": job_id}
            ).scalar()
        )


def _exists(db: Database, table: str) -> bool:
    with db.engine.connect() as connection:
        return connection.execute(text("SELECT to_regclass(:t)"), {"t": table}).scalar() is not None


def _job(job_id: str, *, key: str | None = None, parent_id: str | None = None) -> NewJob:
    return NewJob(
        id=job_id,
        kind="noop",
        queue="p.noop",
        payload={},
        max_retries=0,
        idempotency_key=key,
        parent_id=parent_id,
    )


def _finish(db: Database, job_ids: list[str], at: datetime, status: str = "succeeded") -> None:
    """Each job ended at ``at`` after one attempt."""
    with db.engine.begin() as connection:
        for job_id in job_ids:
            connection.execute(
                text("UPDATE jobs SET status = :s, finished_at = :at, created_at = :at WHERE id = :id"),
                {"s": status, "at": at, "id": job_id},
            )
            connection.execute(
                text(
                    "INSERT INTO job_attempts (job_id, attempt, worker, host, pid, started_at, "
                    "finished_at, outcome) VALUES (:id, 1, 'w', 'h', 1, :at, :at, :s)"
                ),
                {"id": job_id, "at": at, "s": status},
            )


def _old_day(db: Database, days_ago: int) -> tuple[datetime, list[str]]:
    """A day partition ``days_ago`` days back, made as upkeep would have then; its noon."""
    day = TODAY - timedelta(days=days_ago)
    with db.engine.begin() as connection:
        assert create_day(connection, day)
    noon = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=12)
    return noon, [new_job_id(at=noon + timedelta(seconds=i)) for i in range(5)]


def test_the_client_makes_uuid7_ids_and_their_rows_land_in_the_days_partition(
    settings: Settings, db: Database
) -> None:
    with Client(settings, db=db) as client:
        job = client.enqueue("noop")
    made = id_time(job.id)
    assert made is not None
    assert abs(made - datetime.now(UTC)) < timedelta(minutes=1)
    assert _partition_of(db, job.id) == partition_name(made.date())


def test_other_ids_land_in_the_default_partition(migrated: Database) -> None:
    store = JobStore(migrated)
    foreign = str(uuid.uuid4())
    store.create(_job(foreign))
    assert id_time(foreign) is None
    assert _partition_of(migrated, foreign) == DEFAULT


def test_upgrade_makes_the_days_ahead_and_upkeep_makes_what_is_missing(migrated: Database) -> None:
    names = {p.name for p in PartitionStore(migrated).partitions()}
    wanted = {partition_name(TODAY + timedelta(days=d)) for d in range(-1, 8)}
    assert wanted | {DEFAULT} == names
    made = PartitionStore(migrated).ensure(TODAY, ahead=9)
    assert made == [partition_name(TODAY + timedelta(days=8)), partition_name(TODAY + timedelta(days=9))]
    assert PartitionStore(migrated).ensure(TODAY, ahead=9) == []


def test_a_day_whose_ids_the_default_partition_holds_stays_there(migrated: Database) -> None:
    """An id of a day not yet made goes to the default partition; that day is then not made
    (PostgreSQL would refuse), and its jobs keep landing in the default partition."""
    later = datetime.combine(TODAY + timedelta(days=30), datetime.min.time(), UTC)
    early = new_job_id(at=later)
    store = JobStore(migrated)
    store.create(_job(early))
    assert _partition_of(migrated, early) == DEFAULT
    assert PartitionStore(migrated).ensure(TODAY, ahead=31) == [
        partition_name(TODAY + timedelta(days=d)) for d in (8, *range(9, 30), 31)
    ]
    assert not _exists(migrated, partition_name(TODAY + timedelta(days=30)))
    second = new_job_id(at=later + timedelta(hours=1))
    store.create(_job(second))
    assert _partition_of(migrated, second) == DEFAULT


def test_an_idempotency_key_holds_across_partitions(migrated: Database) -> None:
    store = JobStore(migrated)
    first, created = store.create(_job(new_job_id(), key="order-7"))
    again, created_again = store.create(_job(str(uuid.uuid4()), key="order-7"))
    assert created
    assert not created_again
    assert again.id == first.id
    assert store.find_by_idempotency_key("order-7", kind="noop", queue="p.noop").id == first.id  # type: ignore[union-attr]


def test_prune_drops_a_day_whose_jobs_are_all_past_retention(migrated: Database, tmp_path: Path) -> None:
    store = JobStore(migrated)
    noon, ids = _old_day(migrated, 40)
    for i, job_id in enumerate(ids):
        store.create(_job(job_id, key=f"k{i}"))
    _finish(migrated, ids, noon)
    # A job of today whose parent is in that day, and an output of one of that day's jobs.
    child = new_job_id()
    store.create(_job(child, parent_id=ids[0]))
    ArtifactStore(migrated, f"file://{tmp_path}").put(b"x" * 100, name="out.bin", job_id=ids[1])
    assert [p for p in tmp_path.rglob("*") if p.is_file()]
    result = prune_jobs(migrated, noon + timedelta(days=10))
    assert result.jobs == 5
    assert result.removed.artifacts == 1
    assert not _exists(migrated, partition_name(noon.date()))
    with migrated.engine.connect() as connection:
        for table in ("job_attempts", "job_keys", "artifacts"):
            assert connection.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0, table
        assert (
            connection.execute(text("SELECT parent_id FROM jobs WHERE id = :id"), {"id": child}).scalar()
            is None
        )
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_a_day_with_a_job_that_stays_is_pruned_row_by_row(migrated: Database) -> None:
    store = JobStore(migrated)
    noon, ids = _old_day(migrated, 41)
    for job_id in ids:
        store.create(_job(job_id))
    _finish(migrated, ids[:-1], noon)  # the last one is still queued
    result = prune_jobs(migrated, noon + timedelta(days=10))
    assert result.jobs == 4
    assert _exists(migrated, partition_name(noon.date()))
    with migrated.engine.connect() as connection:
        left = connection.execute(text("SELECT id FROM jobs")).scalars().all()
    assert [str(i) for i in left] == [ids[-1]]


def test_the_migration_keeps_every_row_key_and_reference(own_db: Database) -> None:
    engine = own_db.engine
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0016")
    tomorrow = new_job_id(at=datetime.now(UTC) + timedelta(days=1))  # must leave the old table
    old = [str(uuid.uuid4()) for _ in range(50)] + [tomorrow]
    with engine.begin() as connection:
        for i, job_id in enumerate(old):
            connection.execute(
                text(
                    "INSERT INTO jobs (id, kind, queue, status, payload, attempts, created_at, "
                    "idempotency_key) VALUES (:id, 'noop', 'p.noop', 'succeeded', '{}', 1, now(), :key)"
                ),
                {"id": job_id, "key": f"k{i}" if i % 2 else None},
            )
            connection.execute(
                text(
                    "INSERT INTO job_attempts (job_id, attempt, worker, host, pid, started_at) "
                    "VALUES (:id, 1, 'w', 'h', 1, now())"
                ),
                {"id": job_id},
            )
    upgrade(own_db)
    assert _partition_of(own_db, tomorrow) == partition_name((datetime.now(UTC) + timedelta(days=1)).date())
    assert _partition_of(own_db, old[0]) == DEFAULT
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM jobs")).scalar() == 51
        assert connection.execute(text("SELECT count(*) FROM job_keys")).scalar() == 25
        # The attempts still refer to their jobs through the partitioned table: a delete cascades.
        connection.execute(text("DELETE FROM jobs WHERE id = :id"), {"id": tomorrow})
        assert connection.execute(text("SELECT count(*) FROM job_attempts")).scalar() == 50
        connection.rollback()
    store = JobStore(own_db)
    assert store.find_by_idempotency_key("k1", kind="noop", queue="p.noop").id == old[1]  # type: ignore[union-attr]
    assert not store.create(_job(new_job_id(), key="k1"))[1]


def test_retention_keeps_a_days_jobs_for_their_partition_then_drops_it_whole(migrated: Database) -> None:
    """Scheduled retention deletes a day partition's jobs with their day, once its last job is
    past retention, rather than row by row as each crosses the cutoff (up to a day late)."""
    store = JobStore(migrated)
    noon, ids = _old_day(migrated, 40)
    for job_id in ids:
        store.create(_job(job_id))
    _finish(migrated, ids[:-1], noon)
    _finish(migrated, ids[-1:], noon + timedelta(hours=18))  # the day's last end: 06:00 the day after
    settings = Settings(database_url=migrated.url, namespace="p", retention_days=30)
    retention = Retention(settings, migrated, Auditor(migrated, "p", Actor.scheduler("test")))
    midnight = noon - timedelta(hours=12)
    # 20:00 thirty days on: four jobs are past the cutoff, one is not; none is a day past it.
    assert retention.run(midnight + timedelta(days=30, hours=20)).jobs == 0
    assert _exists(migrated, partition_name(noon.date()))
    # Noon the day after: the whole day is past, and goes at once.
    assert retention.run(midnight + timedelta(days=31, hours=12)).jobs == 5
    assert not _exists(migrated, partition_name(noon.date()))
