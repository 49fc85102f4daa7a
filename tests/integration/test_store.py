"""The job store on real PostgreSQL: migrations equal the models; writes are race-safe."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from jobs.status import AttemptOutcome
from jobs.store import AttemptEnd, AttemptStore, Database, JobStore, NewJob, SeenMessage, WorkerIdentity
from jobs.store.migrate import current_revision, head_revision, include_object
from jobs.store.models import Base

pytestmark = pytest.mark.integration

WORKER = WorkerIdentity(worker_id="test:1:abc", host="test", pid=1)


@pytest.fixture
def db(database_url: str) -> Database:
    database = Database(database_url)
    yield database  # type: ignore[misc]
    database.dispose()


def test_the_migrated_schema_equals_the_models(db: Database) -> None:
    assert current_revision(db) == head_revision()
    with db.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": include_object}
        )
        assert compare_metadata(context, Base.metadata) == []
        indexes = {ix["name"] for ix in inspect(connection).get_indexes("jobs")}
    assert {"ix_jobs_status_created_at", "ix_jobs_kind_created_at"} <= indexes


def _seen(job_id: str) -> SeenMessage:
    return SeenMessage(
        job_id=job_id, kind="noop", queue="x.default", payload={}, max_retries=3, created_at=datetime.now(UTC)
    )


def test_a_worker_seeing_a_job_first_creates_its_row(db: Database) -> None:
    job_id = str(uuid.uuid4())

    attempt = AttemptStore(db).start(_seen(job_id), WORKER)

    assert attempt is not None
    assert attempt.number == 1
    info = JobStore(db).get(job_id)
    assert (info.status, info.attempts, info.kind) == ("running", 1, "noop")


def test_concurrent_first_sights_of_one_job_make_one_row_and_one_run(db: Database) -> None:
    job_id = str(uuid.uuid4())
    store = AttemptStore(db)
    attempts: list[int | None] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait()
        started = store.start(_seen(job_id), WORKER)
        attempts.append(started.number if started else None)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # The others find it running: they must not run it beside the first.
    assert sorted(attempts, key=lambda a: a or 0) == [None, None, None, 1]
    assert JobStore(db).get(job_id).attempts == 1


def test_a_finished_job_is_not_started_again(db: Database) -> None:
    job_id = str(uuid.uuid4())
    store = AttemptStore(db)
    started = store.start(_seen(job_id), WORKER)
    assert started is not None
    store.finish(job_id, started.number, AttemptEnd(AttemptOutcome.SUCCEEDED, result={}))

    assert store.start(_seen(job_id), WORKER) is None
    assert JobStore(db).get(job_id).status == "succeeded"


def test_a_stale_attempt_does_not_overwrite_a_newer_one(db: Database) -> None:
    job_id = str(uuid.uuid4())
    store = AttemptStore(db)
    first = store.start(_seen(job_id), WORKER)
    assert first is not None
    assert store.start(_seen(job_id), WORKER) is None  # running: only taken over when its worker is gone
    second = store.start(_seen(job_id), WORKER, take_over=first.number)
    assert store.start(_seen(job_id), WORKER, take_over=first.number) is None  # taken over already

    moved = store.finish(job_id, first.number, AttemptEnd(AttemptOutcome.RETRYING, error="late"))

    assert moved is False
    assert JobStore(db).get(job_id).status == "running"
    history = JobStore(db).attempts(job_id)
    assert [(a.attempt, a.outcome) for a in history] == [(1, "retrying"), (2, None)]
    assert second is not None
    assert second.number == 2


def test_an_idempotency_key_is_enforced_by_the_database(db: Database) -> None:
    jobs = JobStore(db)
    key = f"k-{uuid.uuid4()}"
    new = [
        NewJob(id=str(uuid.uuid4()), kind="noop", queue="q", payload={}, max_retries=3, idempotency_key=key)
        for _ in range(4)
    ]
    results: list[tuple[str, bool]] = []
    barrier = threading.Barrier(4)

    def create(job: NewJob) -> None:
        barrier.wait()
        info, created = jobs.create(job)
        results.append((info.id, created))

    threads = [threading.Thread(target=create, args=(job,)) for job in new]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len({job_id for job_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
