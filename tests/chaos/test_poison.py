"""A poison message among 200 good ones, on two replicas: each run of the `crash` job kills its
worker process; after max_retries + 1 such runs it is `failed` with WorkerLost and dead-lettered
once, and every good job (some cut short when the process died under them) succeeds exactly once."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from jobs.settings import Settings
from jobs.store.models import AttemptRow
from producers import Client, JobStatus
from tests.chaos.conftest import Record
from tests.chaos.ledger import Ledger
from tests.chaos.procs import enqueue_noops
from tests.helpers import WorkerProcess, eventually, message_count

pytestmark = pytest.mark.chaos

GOOD_JOBS = 200
#: The crash job's retries: it may be run (and kill its worker) this many times + 1.
MAX_RETRIES = 1
PROCESSES = 2


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("crash_kind")
def test_a_poison_job_among_good_ones_is_dead_lettered_after_its_tries_and_the_rest_succeed_once(
    client: Client,
    settings: Settings,
    start_worker: WorkerProcess.Factory,
    ledger: Ledger,
    chaos_report: Record,
) -> None:
    queue = settings.queue_name("default")
    replicas = [
        start_worker("--processes", str(PROCESSES), "--threads", "4", "--include", "tests.poison")
        for _ in range(2)
    ]
    good = enqueue_noops(client, GOOD_JOBS // 2, 0.02, 0.15, seed=11)
    poison = client.enqueue("crash", max_retries=MAX_RETRIES)
    enqueued = time.monotonic()
    good += enqueue_noops(client, GOOD_JOBS - len(good), 0.02, 0.15, seed=12)

    # Dead-lettered: the job is final and its message reached the XQ.
    eventually(lambda: poison.refresh().status.is_final, timeout=90, interval=0.1)
    failed_in = time.monotonic() - enqueued
    eventually(lambda: message_count(f"{queue}.XQ") >= 1, timeout=20, interval=0.1)
    dead_lettered_in = time.monotonic() - enqueued
    fault_end = datetime.now(UTC)

    tally = ledger.wait_drained(good, timeout=60)
    time.sleep(1.0)  # a second dead-lettering, if any, would have landed by now
    outcomes = [attempt.outcome for attempt in poison.history()]
    in_xq = message_count(f"{queue}.XQ")
    left_in_queue = message_count(queue)
    deaths = sum(replica.count("died (exit code 17)") for replica in replicas)
    other_deaths = sum(replica.count(" died (exit code ") for replica in replicas) - deaths
    good_cut_short = sorted(job_id for job_id, n in _lost_attempts(ledger, good).items() if n)
    chaos_report(
        **tally.summary(),
        poison={
            "status": poison.status.value,
            "error": poison.error,
            "attempts": outcomes,
            "lost_runs": outcomes.count("lost"),
            "failed_s": round(failed_in, 2),
            "dead_lettered_s": round(dead_lettered_in, 2),
        },
        worker_deaths=deaths,
        other_deaths=other_deaths,
        good_jobs_cut_short=len(good_cut_short),
        in_xq=in_xq,
        left_in_queue=left_in_queue,
        recover_s=tally.recover_after(fault_end),
    )

    logs = "\n\n".join(replica.output for replica in replicas)
    assert poison.status is JobStatus.FAILED, logs
    assert (poison.error or "").startswith("WorkerLost"), poison.error
    # Exactly max_retries + 1 runs, each killing its worker; the next delivery is failed unrun.
    assert outcomes == ["lost"] * (MAX_RETRIES + 1) + ["failed"], outcomes
    assert deaths == MAX_RETRIES + 1, logs
    assert other_deaths == 0, logs
    assert in_xq == 1, f"{in_xq} messages dead-lettered for one poison job"
    assert left_in_queue == 0
    assert tally.drained, tally.describe() + "\n" + logs
    assert tally.lost == [], tally.describe()
    assert tally.running == []
    assert tally.duplicated == [], tally.describe()
    assert tally.error == {}, tally.describe()
    # Both replicas go on, their dead processes replaced.
    for replica in replicas:
        assert replica.process.poll() is None, replica.output
    eventually(
        lambda: sum(replica.count(" ready: ") for replica in replicas) == 2 * PROCESSES + deaths, timeout=30
    )


def _lost_attempts(ledger: Ledger, ids: list[str]) -> dict[str, int]:
    """Job id → attempts that ended ``lost`` (a good job run by a process that died under it)."""
    with ledger.engine.connect() as connection:
        rows = connection.execute(
            select(AttemptRow.job_id, func.count())
            .where(AttemptRow.job_id.in_(ids), AttemptRow.outcome == "lost")
            .group_by(AttemptRow.job_id)
        ).all()
    return {str(job_id): int(count) for job_id, count in rows}
