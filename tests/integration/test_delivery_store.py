"""The delivery record behind "never the same email twice", on PostgreSQL and on SQLite (demo)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from jobs.store import Database
from jobs.store.deliveries import DeliveryState, DeliveryStore
from jobs.store.jobs import JobStore, NewJob, utcnow
from jobs.store.migrate import ensure_database, upgrade

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgresql", "sqlite"])
def db(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> Iterator[Database]:
    url = database_url if request.param == "postgresql" else f"sqlite:///{tmp_path}/jobs.db"
    ensure_database(url)
    database = Database(url)
    upgrade(database)
    yield database
    database.dispose()


def a_job(db: Database) -> str:
    job_id = str(uuid.uuid4())
    JobStore(db).create(NewJob(id=job_id, kind="email", queue="t.email", payload={}, max_retries=0))
    return job_id


@pytest.fixture(params=[False, True], ids=["direct", "batched"])
def store(request: pytest.FixtureRequest, db: Database) -> Iterator[DeliveryStore]:
    deliveries = DeliveryStore(db, batched=request.param)
    yield deliveries
    deliveries.close()


def test_the_first_claim_wins_and_later_ones_see_the_delivery(db: Database, store: DeliveryStore) -> None:
    job_id = a_job(db)

    assert store.get(job_id) is None
    assert store.claim(job_id, "<m1@example.com>") is None
    earlier = store.claim(job_id, "<m1@example.com>")

    assert earlier is not None
    assert (earlier.state, earlier.message_id) == (DeliveryState.SENDING, "<m1@example.com>")


def test_a_sent_delivery_keeps_its_outcome_and_a_forgotten_one_may_be_claimed_again(
    db: Database, store: DeliveryStore
) -> None:
    sent, refused = a_job(db), a_job(db)
    assert store.claim(sent, "<s@example.com>") is None
    assert store.claim(refused, "<r@example.com>") is None

    store.mark_sent(sent, "<s@example.com>", ["ada@example.com"], {"bob@example.com": "550 no"})
    store.forget(refused)

    again = store.claim(sent, "<s@example.com>")
    assert again is not None
    assert again.state is DeliveryState.SENT
    assert (again.accepted, again.rejected) == (["ada@example.com"], {"bob@example.com": "550 no"})
    assert store.get(refused) is None
    assert store.claim(refused, "<r@example.com>") is None


def test_concurrent_claims_of_one_job_let_exactly_one_send(db: Database, store: DeliveryStore) -> None:
    jobs = [a_job(db) for _ in range(20)]
    claims = [(job_id, n) for job_id in jobs for n in range(3)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda claim: store.claim(claim[0], f"<{claim[1]}@example.com>"), claims))

    winners = [claim for claim, earlier in zip(claims, results, strict=True) if earlier is None]
    assert sorted(job_id for job_id, _ in winners) == sorted(jobs)
    for job_id, n in winners:
        found = store.get(job_id)
        assert found is not None
        assert (found.state, found.message_id) == (DeliveryState.SENDING, f"<{n}@example.com>")


def test_a_bad_write_in_a_batch_fails_alone(database_url: str) -> None:
    db = Database(database_url)
    store = DeliveryStore(db, batched=True)
    good = a_job(db)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            unknown = pool.submit(store.claim, str(uuid.uuid4()), "<nope@example.com>")  # no such job
            assert pool.submit(store.claim, good, "<good@example.com>").result() is None
        with pytest.raises(Exception, match="foreign key"):
            unknown.result()
    finally:
        store.close()
        db.dispose()


def test_a_claim_retried_after_its_answer_was_lost_is_still_this_runs(
    db: Database, store: DeliveryStore
) -> None:
    job_id = a_job(db)
    at = utcnow()
    assert store.claim(job_id, "<m@example.com>", at=at) is None  # committed; say its answer was lost

    assert store.claim(job_id, "<m@example.com>", at=at) is None  # the retry: still this run's claim
    other_run = store.claim(job_id, "<m@example.com>")
    assert other_run is not None
    assert other_run.state is DeliveryState.SENDING
