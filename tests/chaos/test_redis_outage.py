"""Redis stopped for ~10 s mid-run: processing goes on meanwhile, nothing is lost."""

from __future__ import annotations

import time

import pytest

from producers import Client
from tests.chaos.conftest import Record
from tests.chaos.ledger import Ledger
from tests.chaos.procs import enqueue_noops
from tests.chaos.services import redis_stopped
from tests.helpers import WorkerProcess, eventually

pytestmark = pytest.mark.chaos

JOBS = 400
DOWN_FOR = 10.0


@pytest.mark.timeout(180)
def test_jobs_keep_running_while_redis_is_down(
    client: Client, start_worker: WorkerProcess.Factory, ledger: Ledger, chaos_report: Record
) -> None:
    worker = start_worker("--processes", "2", "--threads", "4")
    ids = enqueue_noops(client, JOBS, 0.1, 0.5)
    eventually(lambda: ledger.count_final(ids) >= 20, timeout=30)

    with redis_stopped() as outage:
        done_at_stop = ledger.count_final(ids)
        time.sleep(DOWN_FOR)
        done_at_restart = ledger.count_final(ids)

    tally = ledger.wait_drained(ids, timeout=60)
    chaos_report(
        **tally.summary(),
        fault=outage.as_dict(),
        finished_while_down=done_at_restart - done_at_stop,
        recover_s=tally.recover_after(outage.restored_at),
    )

    assert done_at_restart - done_at_stop >= 100, "processing should go on while Redis is down"
    assert tally.drained, tally.describe()
    assert tally.lost == [], tally.describe()
    assert tally.running == []
    assert tally.duplicated == [], tally.describe()
    assert worker.process.poll() is None, worker.output
    assert worker.count("died (exit code") == 0, worker.output
