"""Claims: a short run goes without a ``running`` write, and no copy of it runs meanwhile.

A worker process claims each job with an advisory lock on a connection of its own
(``jobs/store/claims.py``); a job that runs at once gets a claim row, deleted when its run is
recorded. These tests use real PostgreSQL connections for the "processes", and a real worker.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from jobs.settings import Settings
from jobs.status import AttemptOutcome
from jobs.store import AttemptEnd, AttemptStore, Database, JobStore, NewJob, WorkerIdentity
from jobs.store.claims import Claims
from jobs.store.models import ClaimRow
from producers import Client
from tests.helpers import WorkerProcess, eventually, seen_noop

pytestmark = [pytest.mark.integration]

HERE = WorkerIdentity(worker_id="here:1:a", host="here", pid=1)
THERE = WorkerIdentity(worker_id="there:2:b", host="there", pid=2)


@pytest.fixture
def claims(db: Database) -> Iterator[tuple[Claims, Claims]]:
    """Two worker processes' claims: two PostgreSQL sessions."""
    here, there = Claims(db, HERE), Claims(db, THERE)
    yield here, there
    here.close()
    there.close()


def waiting_job(db: Database) -> str:
    job_id = str(uuid.uuid4())
    JobStore(db).create(NewJob(id=job_id, kind="noop", queue="t.default", payload={}, max_retries=1))
    return job_id


def claim_rows(db: Database, job_id: str) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).where(ClaimRow.job_id == job_id)) or 0)


def test_a_job_held_by_one_process_is_refused_to_another_until_released(
    db: Database, claims: tuple[Claims, Claims]
) -> None:
    here, there = claims
    job_id = waiting_job(db)

    first = here.claim(job_id, at_once=True)
    assert (first.held, first.status, first.attempts, first.at_once) == (True, "queued", 0, True)
    assert claim_rows(db, job_id) == 1
    assert not there.claim(job_id, at_once=True).held
    assert not here.claim(job_id, at_once=True).held  # a second copy in the same process too

    here.release(job_id)
    assert eventually(lambda: there.claim(job_id, at_once=False).held)


def test_only_a_waiting_job_asked_to_run_at_once_gets_a_claim_row(
    db: Database, claims: tuple[Claims, Claims]
) -> None:
    here, _ = claims
    waiting, unknown = waiting_job(db), str(uuid.uuid4())

    asked_not = here.claim(waiting, at_once=False)
    no_row = here.claim(unknown, at_once=True)

    assert (asked_not.held, asked_not.at_once) == (True, False)
    assert (no_row.held, no_row.status, no_row.at_once) == (True, None, False)
    assert claim_rows(db, waiting) == claim_rows(db, unknown) == 0


def test_a_dead_processs_claim_is_free_and_its_run_is_recorded_lost(
    db: Database, claims: tuple[Claims, Claims]
) -> None:
    here, there = claims
    job_id = waiting_job(db)
    assert here.claim(job_id, at_once=True).at_once
    here.close()  # the process dies mid-run: PostgreSQL drops its session, and the lock

    claim = eventually(lambda: (c := there.claim(job_id, at_once=True)).held and c)

    assert not claim.at_once
    assert claim.dead_run is not None
    assert claim.dead_run.worker == HERE
    store = AttemptStore(db)
    assert store.record_lost_run(seen_noop("t.default", job_id), claim.dead_run) == 1
    assert claim_rows(db, job_id) == 0
    started = store.start(seen_noop("t.default", job_id), THERE)
    assert started is not None
    assert started.number == 2
    assert [(a.attempt, a.outcome, a.worker) for a in JobStore(db).attempts(job_id)] == [
        (1, "lost", HERE.worker_id),
        (2, None, THERE.worker_id),
    ]


def test_a_recorded_run_deletes_its_claim_row(db: Database, claims: tuple[Claims, Claims]) -> None:
    here, _ = claims
    job_id = waiting_job(db)
    assert here.claim(job_id, at_once=True).at_once

    AttemptStore(db).finish_run(
        seen_noop("t.default", job_id), HERE, 1, datetime.now(UTC), AttemptEnd(AttemptOutcome.SUCCEEDED)
    )

    assert claim_rows(db, job_id) == 0
    assert JobStore(db).get(job_id).status == "succeeded"


def test_a_job_running_longer_than_a_moment_shows_running_with_its_attempt_open(
    client: Client, db: Database, settings: Settings, start_worker: WorkerProcess.Factory
) -> None:
    start_worker("--processes", "1", "--threads", "2")
    client.enqueue("noop").wait(timeout=30)  # the worker is up
    job = client.enqueue("noop", sleep=3)

    running = eventually(lambda: (info := JobStore(db).get(job.id)).status == "running" and info, timeout=20)
    seen_running = datetime.now(UTC)

    assert running.started_at is not None
    # SPEC §6: a job that has run for 1 s shows as running (0.5 s more for a loaded test machine).
    assert (seen_running - running.started_at).total_seconds() <= 1.5
    attempts = JobStore(db).attempts(job.id)
    assert [(a.attempt, a.outcome, a.finished_at) for a in attempts] == [(1, None, None)]
    assert claim_rows(db, job.id) == 0  # its start is written: no claim row stands for it any more
    assert job.wait(timeout=30)["attempt"] == 1
    assert [a.outcome for a in job.history()] == ["succeeded"]


def test_short_jobs_are_recorded_whole_and_leave_no_claim_rows(
    client: Client, db: Database, start_worker: WorkerProcess.Factory
) -> None:
    start_worker("--processes", "1", "--threads", "4")
    jobs = client.enqueue_many("noop", [{} for _ in range(50)])

    for job in jobs:
        job.wait(timeout=60)

    for job in jobs:
        (attempt,) = job.history()
        assert attempt.outcome == "succeeded"
        assert attempt.worker
        assert attempt.finished_at is not None
        assert attempt.started_at <= attempt.finished_at
        assert claim_rows(db, job.id) == 0


def test_releases_that_travel_with_a_claim_let_go_and_a_job_released_and_taken_again_is_held_once(
    db: Database, claims: tuple[Claims, Claims]
) -> None:
    """One round trip carries the claims asked and the releases since the last one (the claimer
    thread sends them together; here the test thread sends them, the claimer being idle)."""
    from jobs.store.claims import _Ask

    here, there = claims
    first, second = waiting_job(db), waiting_job(db)
    asks = [_Ask(first, False)]
    here._round_trip(asks, [])
    assert asks[0].wait().held

    asks = [_Ask(second, False), _Ask(first, False)]
    here._round_trip(asks, [first])  # first: let go and taken again in the same statement
    assert [ask.wait().held for ask in asks] == [True, True]
    assert not there.claim(first, at_once=False).held
    here._round_trip([], [first])  # one release frees it: it was held once, not twice
    assert there.claim(first, at_once=False).held

    asks = [_Ask(first, False)]
    here._round_trip(asks, [second])
    assert not asks[0].wait().held  # `there` holds it now
    assert there.claim(second, at_once=False).held  # the release that travelled with it landed
