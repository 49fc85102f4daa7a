"""The store methods the admin views, DLQ, prune, scheduler and reports read through, on SQLite
(the demo's store; PostgreSQL runs them in the integration tests)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from jobs.errors import SchemaMissing, ServiceUnavailable
from jobs.store import Database
from jobs.store.dead_letters import DeadJobStore
from jobs.store.maintenance import PruneStore
from jobs.store.migrate import ensure_database, upgrade
from jobs.store.models import AttemptRow, JobRow
from jobs.store.reporting import JobsReportStore
from jobs.store.schedule import AdvisoryLock, TickStore
from jobs.store.stats import StatsStore

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path}/jobs.db"
    ensure_database(url)
    database = Database(url)
    upgrade(database)
    yield database
    database.dispose()


def add_job(
    db: Database,
    status: str,
    *,
    kind: str = "noop",
    attempts: int = 1,
    error: str | None = None,
    age: float = 60,
) -> str:
    """A job created ``age`` seconds ago; a finished one ran its attempts for 2 s each, ending 10 s ago."""
    job_id = str(uuid.uuid4())
    created = NOW - timedelta(seconds=age)
    final = status in ("succeeded", "failed", "cancelled")
    with db.session() as session:
        session.add(
            JobRow(
                id=job_id,
                kind=kind,
                queue=f"unit.{kind}",
                status=status,
                payload={},
                attempts=attempts,
                error=error,
                created_at=created,
                finished_at=NOW - timedelta(seconds=10) if final else None,
            )
        )
        session.flush()
        for number in range(1, attempts + 1):
            start = created + timedelta(seconds=1 + 3 * (number - 1))
            session.add(
                AttemptRow(
                    job_id=job_id,
                    attempt=number,
                    worker="host:7:abc",
                    host="host",
                    pid=7,
                    started_at=start,
                    finished_at=start + timedelta(seconds=2) if final else None,
                    outcome=status if final else None,
                )
            )
    return job_id


def test_finished_jobs_are_counted_per_kind_with_their_latencies(db: Database) -> None:
    add_job(db, "succeeded")
    add_job(db, "failed", attempts=2, error="boom")
    add_job(db, "succeeded", kind="email")
    add_job(db, "running")

    (email, noop) = StatsStore(db).finished_since(NOW - timedelta(hours=1), "kind")

    assert (email.group, email.succeeded, email.failed, email.total) == ("email", 1, 0, 1)
    assert (noop.group, noop.succeeded, noop.failed, noop.retried, noop.total) == ("noop", 1, 1, 1, 2)
    assert noop.wait["p50"] == pytest.approx(1.0, abs=0.01)
    assert noop.run["p99"] == pytest.approx(2.0, abs=0.01)
    with pytest.raises(ValueError, match="kind or queue"):
        StatsStore(db).finished_since(NOW, "host")


def test_queue_figures_and_worker_activity_come_from_the_rows(db: Database) -> None:
    add_job(db, "running")
    add_job(db, "queued", age=30)
    add_job(db, "queued", age=90)

    figures = StatsStore(db).queue_figures(["unit.noop", "unit.email"], datetime.now(UTC))
    (seen,) = StatsStore(db).worker_activity(NOW - timedelta(hours=1))

    assert figures.running == {"unit.noop": 1}
    assert figures.oldest_waiting == {"unit.noop": NOW - timedelta(seconds=90)}
    assert (seen.host, seen.pid, seen.attempts) == ("host", 7, 3)


def test_prune_deletes_only_the_finished_jobs_asked_for_in_batches(db: Database) -> None:
    kept = add_job(db, "running")
    for _ in range(3):
        add_job(db, "succeeded")
    store = PruneStore(db)

    assert store.count(NOW, ["succeeded"]) == 3
    first = store.delete_batch(NOW, ["succeeded"], limit=2)
    second = store.delete_batch(NOW, ["succeeded"], limit=2)

    assert (first.selected, first.jobs, second.selected, second.jobs) == (2, 2, 1, 1)
    assert store.delete_batch(NOW, ["succeeded"], limit=2).selected == 0
    with db.session() as session:
        assert set(session.scalars(select(JobRow.id))) == {kept}


def test_a_dead_job_reopens_only_from_a_requeuable_status_and_the_undo_puts_it_back(db: Database) -> None:
    failed = add_job(db, "failed", error="boom")
    done = add_job(db, "succeeded")
    store = DeadJobStore(db)

    assert store.rows([failed, done, str(uuid.uuid4())]).keys() == {failed, done}
    refused = store.reopen(done)
    before = store.reopen(failed)

    assert refused is not None
    assert not refused.reopened
    assert before is not None
    assert (before.status, before.error, before.reopened) == ("failed", "boom", True)
    assert store.rows([failed])[failed].status == "queued"
    store.undo_reopen(failed, before)
    assert (store.rows([failed])[failed].status, store.rows([failed])[failed].error) == ("failed", "boom")
    assert store.reopen(str(uuid.uuid4())) is None


def test_a_purged_job_fails_keeping_its_own_error(db: Database) -> None:
    queued = add_job(db, "queued")
    failed = add_job(db, "failed", error="boom")
    store = DeadJobStore(db)

    store.fail(queued, "purged")
    store.fail(failed, "purged")

    rows = store.rows([queued, failed])
    assert (rows[queued].status, rows[queued].error) == ("failed", "purged")
    assert (rows[failed].status, rows[failed].error) == ("failed", "boom")


def test_the_report_reads_its_window_and_streams_its_rows(db: Database) -> None:
    add_job(db, "succeeded")
    add_job(db, "failed", attempts=2, error="boom")
    store = JobsReportStore(db)
    since, until = NOW - timedelta(hours=1), NOW + timedelta(seconds=1)

    with store.window(since, until) as reader:
        counts, errors, rate, total = (
            reader.counts(),
            reader.top_errors(10),
            reader.retry_rate(),
            reader.row_count(),
        )
        hours = reader.finished_per_hour()

    assert counts == [("noop", "failed", 1), ("noop", "succeeded", 1)]
    assert (errors, rate, total) == ([("boom", 1)], 0.5, 2)
    assert sum(done for done, _ in hours.values()) == 2
    assert all(moment.tzinfo is not None and moment.minute == 0 for moment in hours)
    assert [row[1] for row in store.rows(since, until, ["id", "status"], batch=1)] == ["succeeded", "failed"]
    with pytest.raises(ValueError, match="no column nope"):
        list(store.rows(since, until, ["nope"], batch=1))


def test_ticks_only_move_forward(db: Database) -> None:
    ticks = TickStore(db, "unit")

    assert ticks.start("tick", NOW) == NOW
    assert ticks.start("tick", NOW + timedelta(hours=1)) == NOW  # the row's own tick wins
    ticks.advance("tick", NOW + timedelta(minutes=2))
    ticks.advance("tick", NOW + timedelta(minutes=1))

    assert ticks.last_ticks() == {"tick": NOW + timedelta(minutes=2)}


def test_a_store_without_schema_says_how_to_make_it(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/empty.db")
    try:
        with pytest.raises(SchemaMissing, match="conveyor db upgrade"):
            TickStore(db, "unit").last_ticks()
    finally:
        db.dispose()


def test_an_unreachable_lock_database_is_service_unavailable_not_a_driver_error() -> None:
    lock = AdvisoryLock("postgresql+psycopg://postgres@127.0.0.1:1/none", key=1, application_name="unit")
    try:
        with pytest.raises(ServiceUnavailable, match="PostgreSQL is unreachable at"):
            lock.try_acquire()
    finally:
        lock.release()
