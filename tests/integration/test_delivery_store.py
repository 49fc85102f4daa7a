"""The delivery record behind "never the same email twice", on PostgreSQL and on SQLite (demo)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.store import Database
from jobs.store.deliveries import DeliveryState, DeliveryStore
from jobs.store.jobs import JobStore, NewJob
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


def test_the_first_claim_wins_and_later_ones_see_the_delivery(db: Database) -> None:
    store = DeliveryStore(db)
    job_id = a_job(db)

    assert store.get(job_id) is None
    assert store.claim(job_id, "<m1@example.com>") is None
    earlier = store.claim(job_id, "<m1@example.com>")

    assert earlier is not None
    assert (earlier.state, earlier.message_id) == (DeliveryState.SENDING, "<m1@example.com>")


def test_a_sent_delivery_keeps_its_outcome_and_a_forgotten_one_may_be_claimed_again(db: Database) -> None:
    store = DeliveryStore(db)
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
