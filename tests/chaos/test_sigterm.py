"""SIGTERM with long jobs in flight: the replica exits after its shutdown timeout (or at once on
a second SIGTERM), the unfinished messages go back to RabbitMQ, and a second replica finishes
them: every job succeeds exactly once."""

from __future__ import annotations

import signal
import subprocess
import time
from datetime import UTC, datetime

import pytest

from jobs.settings import Settings
from producers import Client
from tests.chaos.conftest import Record
from tests.chaos.ledger import Ledger
from tests.chaos.procs import enqueue_noops, kill_replica
from tests.helpers import WorkerProcess, eventually, message_count

pytestmark = pytest.mark.chaos

SHORT_JOBS = 200
LONG_JOBS = 8


def _running(ledger: Ledger, ids: list[str]) -> int:
    return sum(ledger.running_pids(ids).values())


def _stopped_in(worker: WorkerProcess, timeout: float) -> float | None:
    """Seconds until ``worker`` exited, or None when it is still running after ``timeout``."""
    began = time.monotonic()
    try:
        worker.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    return round(time.monotonic() - began, 2)


@pytest.mark.timeout(180)
def test_sigterm_with_long_jobs_in_flight_hands_them_back_after_the_shutdown_timeout(
    client: Client,
    settings: Settings,
    start_worker: WorkerProcess.Factory,
    ledger: Ledger,
    chaos_report: Record,
) -> None:
    first = start_worker("--processes", "1", "--threads", "4", "--shutdown-timeout", "2")
    long_ids = [client.enqueue("noop", sleep=5).id for _ in range(LONG_JOBS)]
    short_ids = enqueue_noops(client, SHORT_JOBS, 0.02, 0.1)
    ids = long_ids + short_ids
    eventually(lambda: _running(ledger, long_ids) >= 4, timeout=20)

    first.signal(signal.SIGTERM)
    exited_in = _stopped_in(first, timeout=20)
    if exited_in is None:
        kill_replica(first)
    fault_end = datetime.now(UTC)
    unfinished = len(ledger.tally(ids).unfinished)
    back_in_queue = message_count(settings.queue_name("default"))

    second = start_worker("--processes", "2", "--threads", "4")
    tally = ledger.wait_drained(ids, timeout=60)
    chaos_report(
        **tally.summary(),
        fault={"signal": "SIGTERM", "shutdown_timeout": 2, "exited_in_s": exited_in},
        exit_code=first.process.returncode,
        unfinished_at_exit=unfinished,
        back_in_queue=back_in_queue,
        recover_s=tally.recover_after(fault_end),
    )

    assert exited_in is not None, "the worker did not exit within 20 s of SIGTERM:\n" + first.output
    assert exited_in < 2 + 6, first.output
    assert first.process.returncode == 0, first.output
    assert back_in_queue == unfinished > 0
    assert tally.drained, tally.describe() + "\n" + second.output
    assert tally.lost == [], tally.describe()
    assert tally.running == []
    assert tally.duplicated == [], tally.describe()


@pytest.mark.timeout(180)
def test_a_second_sigterm_stops_at_once_and_loses_nothing(
    client: Client,
    settings: Settings,
    start_worker: WorkerProcess.Factory,
    ledger: Ledger,
    chaos_report: Record,
) -> None:
    first = start_worker("--processes", "1", "--threads", "4", "--shutdown-timeout", "30")
    long_ids = [client.enqueue("noop", sleep=20).id for _ in range(4)]
    short_ids = enqueue_noops(client, SHORT_JOBS, 0.02, 0.1)
    ids = long_ids + short_ids
    eventually(lambda: _running(ledger, long_ids) >= 4, timeout=20)

    first.signal(signal.SIGTERM)
    time.sleep(1.0)
    still_finishing = first.process.poll() is None
    first.signal(signal.SIGTERM)
    exited_in = _stopped_in(first, timeout=10)
    if exited_in is None:
        kill_replica(first)
    fault_end = datetime.now(UTC)
    unfinished = len(ledger.tally(ids).unfinished)
    back_in_queue = message_count(settings.queue_name("default"))

    second = start_worker("--processes", "2", "--threads", "4")
    tally = ledger.wait_drained(ids, timeout=60)
    chaos_report(
        **tally.summary(),
        fault={"signal": "SIGTERM x2", "shutdown_timeout": 30, "exited_in_s": exited_in},
        exit_code=first.process.returncode,
        unfinished_at_exit=unfinished,
        back_in_queue=back_in_queue,
        recover_s=tally.recover_after(fault_end),
    )

    assert still_finishing, "the first SIGTERM should let the 20 s jobs finish:\n" + first.output
    assert exited_in is not None, "a second SIGTERM did not stop the worker within 10 s:\n" + first.output
    assert exited_in < 5, first.output
    assert back_in_queue == unfinished > 0
    assert tally.drained, tally.describe() + "\n" + second.output
    assert tally.lost == [], tally.describe()
    assert tally.running == []
    assert tally.duplicated == [], tally.describe()
