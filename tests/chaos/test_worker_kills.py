"""Worker processes killed with SIGKILL mid-run, three times: the supervisors replace them and
RabbitMQ redelivers what they held; every job succeeds exactly once."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime

import pytest

from producers import Client
from tests.chaos.conftest import Record
from tests.chaos.ledger import Ledger
from tests.chaos.procs import enqueue_noops, pick_victim
from tests.helpers import WorkerProcess, eventually

pytestmark = pytest.mark.chaos

JOBS = 300
KILLS = 3
#: Seconds between two kills.
KILL_EVERY = 1.5


@pytest.mark.timeout(180)
def test_three_worker_processes_killed_mid_run_lose_nothing(
    client: Client, start_worker: WorkerProcess.Factory, ledger: Ledger, chaos_report: Record
) -> None:
    replicas = [start_worker("--processes", "2", "--threads", "4") for _ in range(2)]
    ids = enqueue_noops(client, JOBS, 0.2, 0.6)

    killed: list[int] = []
    for n in range(KILLS):
        time.sleep(KILL_EVERY if n else 0.5)
        pid = eventually(lambda: pick_victim(ledger, ids, replicas, spare=killed), timeout=20)
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
    fault_end = datetime.now(UTC)

    tally = ledger.wait_drained(ids, timeout=60)
    deaths = sum(replica.count("died (exit code -9)") for replica in replicas)
    chaos_report(
        **tally.summary(),
        fault={"kills": len(killed), "pids": killed},
        recover_s=tally.recover_after(fault_end),
        replaced=deaths,
    )

    assert tally.drained, tally.describe()
    assert tally.lost == [], tally.describe()
    assert tally.running == []
    assert tally.duplicated == [], tally.describe()
    assert tally.outcomes["lost"] >= KILLS, "each kill should have cut at least one job short"
    assert deaths == KILLS, "\n".join(r.output for r in replicas)
    # The supervisors replace every killed process (after a restart delay).
    for replica in replicas:
        assert replica.process.poll() is None
    eventually(lambda: sum(replica.count(" ready: ") for replica in replicas) == 4 + KILLS, timeout=30)
