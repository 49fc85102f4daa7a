"""~100 emails to a real SMTP server (aiosmtpd), a worker process killed with SIGKILL mid-run:
no email arrives twice. The documented exception: a worker that died mid-DATA leaves its job
`failed` with DeliveryUncertain instead of sending again (counted apart; at most one per thread
of the killed process)."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from producers import Client
from tests.chaos.conftest import Record
from tests.chaos.ledger import Ledger
from tests.chaos.procs import pick_victim
from tests.helpers import WorkerProcess, eventually
from tests.smtp import SmtpServer

pytestmark = pytest.mark.chaos

EMAILS = 100
#: Seconds the server takes to answer DATA (its event loop blocks): sends overlap the kill.
DATA_DELAY = 0.03
THREADS = 4


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.mark.timeout(180)
def test_a_worker_killed_while_sending_sends_no_email_twice(
    client: Client,
    smtp: SmtpServer,
    start_worker: WorkerProcess.Factory,
    ledger: Ledger,
    chaos_report: Record,
) -> None:
    def slow_accept(message: EmailMessage) -> None:
        time.sleep(DATA_DELAY)

    smtp.handler.behaviour.after_accept = slow_accept
    worker = start_worker("--processes", "2", "--threads", str(THREADS), env={"CONVEYOR_SMTP_URL": smtp.url})
    ids = [
        client.send_email(f"user{i}@example.com", "welcome", {"name": f"User {i}"}).id for i in range(EMAILS)
    ]

    eventually(lambda: len(smtp.received) >= EMAILS // 4, timeout=30)
    victim = eventually(lambda: pick_victim(ledger, ids, [worker]), timeout=20)
    os.kill(victim, signal.SIGKILL)
    fault_end = datetime.now(UTC)

    tally = ledger.wait_drained(ids, timeout=60)
    time.sleep(0.5)  # a last message in flight at the server
    delivered = Counter(str(received.message["Message-ID"]) for received in smtp.received)
    per_job = {job_id: delivered.pop(f"<{job_id}@localhost>", 0) for job_id in ids}
    uncertain = {i for i, e in tally.error.items() if "DeliveryUncertain" in (e or "")}
    twice = sorted(i for i, n in per_job.items() if n > 1)
    chaos_report(
        **{
            **tally.summary(),
            "lost": len(set(tally.lost) - uncertain),
            "duplicated": len(set(twice) | set(tally.duplicated)),
        },
        fault={"kills": 1, "pids": [victim]},
        emails_received=len(smtp.received),
        emails_twice=len(twice),
        uncertain=len(uncertain),
        uncertain_delivered=sum(per_job[i] for i in uncertain),
        unknown_messages=sum(delivered.values()),
        recover_s=tally.recover_after(fault_end),
    )

    assert worker.count("died (exit code -9)") == 1, worker.output
    assert tally.drained, tally.describe()
    assert tally.running == []
    assert twice == [], f"sent more than once: {[(i, per_job[i]) for i in twice]}"
    assert delivered == Counter(), f"messages of no job of this test: {delivered}"
    assert tally.duplicated == [], tally.describe()
    not_delivered = {i: s for i, s in tally.not_succeeded.items() if i not in uncertain}
    assert not_delivered == {}, tally.describe()
    # Only jobs in DATA when their process died may be uncertain: at most one per thread of it.
    assert len(uncertain) <= THREADS, tally.describe()
    for job_id in tally.succeeded:
        assert per_job[job_id] == 1, f"{job_id} succeeded but arrived {per_job[job_id]} times"
