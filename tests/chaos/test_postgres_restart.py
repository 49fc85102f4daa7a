"""PostgreSQL restarted with jobs in flight: workers hold their messages until they can
record the outcomes; every job succeeds exactly once and none stays `running`."""

from __future__ import annotations

import pytest

from producers import Client
from tests.chaos.conftest import Record
from tests.chaos.ledger import Ledger
from tests.chaos.procs import enqueue_noops
from tests.chaos.services import postgres_restarted
from tests.helpers import WorkerProcess, eventually

pytestmark = pytest.mark.chaos

JOBS = 300
DOWN_FOR = 5.0


@pytest.mark.timeout(180)
def test_a_postgres_restart_with_jobs_in_flight_loses_nothing(
    client: Client, start_worker: WorkerProcess.Factory, ledger: Ledger, chaos_report: Record
) -> None:
    worker = start_worker("--processes", "2", "--threads", "4")
    ids = enqueue_noops(client, JOBS, 0.05, 0.3)
    eventually(lambda: ledger.count_final(ids) >= 40 and ledger.running_pids(ids), timeout=30)

    with postgres_restarted(down_for=DOWN_FOR) as outage:
        pass
    done_before = ledger.count_final(ids)

    tally = ledger.wait_drained(ids, timeout=60)
    chaos_report(
        **tally.summary(),
        fault=outage.as_dict(),
        final_right_after_restart=done_before,
        recover_s=tally.recover_after(outage.restored_at),
        store_waits=worker.count("PostgreSQL is unreachable"),
    )

    assert tally.drained, tally.describe()
    assert tally.lost == [], tally.describe()
    assert tally.running == []
    assert tally.duplicated == [], tally.describe()
    assert worker.process.poll() is None, worker.output
    assert worker.count("died (exit code") == 0, worker.output
