"""RabbitMQ restarted (stop_app, ~5 s down, start_app) while a producer keeps enqueueing and
workers consume: every job whose enqueue returned succeeds exactly once."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from jobs.errors import ServiceUnavailable
from jobs.settings import Settings
from producers import Client
from tests.chaos.conftest import Record
from tests.chaos.ledger import Ledger
from tests.chaos.procs import enqueue_noops
from tests.chaos.services import restart_rabbitmq
from tests.helpers import WorkerProcess, eventually

pytestmark = pytest.mark.chaos

JOBS = 300
#: Seconds between two enqueues of the producer: 300 jobs take ~12 s, across the outage.
PACE = 0.03
DOWN_FOR = 5.0


class Producer(threading.Thread):
    """Enqueues ``JOBS`` noop jobs one by one; an enqueue that raises counts as not enqueued."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.enqueued: list[str] = []
        self.refused: list[str] = []
        self.errors: list[BaseException] = []
        #: Seconds the slowest enqueue took (a publish retried across the outage).
        self.slowest = 0.0
        self.finished_at: datetime | None = None

    def run(self) -> None:
        try:
            with Client(self.settings) as producer:
                for i in range(JOBS):
                    began = time.monotonic()
                    try:
                        self.enqueued += enqueue_noops(producer, 1, 0.02, 0.2, seed=i)
                    except ServiceUnavailable as exc:
                        self.refused.append(str(exc))
                    self.slowest = max(self.slowest, time.monotonic() - began)
                    time.sleep(PACE)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            self.finished_at = datetime.now(UTC)


@pytest.mark.timeout(180)
def test_a_rabbitmq_restart_while_producing_and_consuming_loses_nothing(
    settings: Settings,
    client: Client,
    start_worker: WorkerProcess.Factory,
    ledger: Ledger,
    chaos_report: Record,
) -> None:
    workers = [start_worker("--processes", "2", "--threads", "4")]
    producer = Producer(settings)
    producer.start()
    eventually(lambda: len(producer.enqueued) >= 60, timeout=30)

    outage = restart_rabbitmq(down_for=DOWN_FOR)
    producer.join(timeout=90)
    assert not producer.is_alive(), "the producer hangs"

    ids = list(producer.enqueued)
    tally = ledger.wait_drained(ids, timeout=60)
    # Jobs whose enqueue raised but whose message had reached RabbitMQ run too (row made on first sight).
    unconfirmed = sorted(ledger.queue_ids(settings.queue_name("default")) - set(ids))
    everything = ledger.wait_drained(ids + unconfirmed, timeout=10)
    chaos_report(
        **tally.summary(),
        fault=outage.as_dict(),
        not_enqueued=len(producer.refused),
        unconfirmed_ran=len(unconfirmed),
        duplicated_all=len(everything.duplicated),
        recover_s=tally.recover_after(outage.restored_at),
        drained_after_last_enqueue_s=tally.recover_after(producer.finished_at),
        slowest_enqueue_s=round(producer.slowest, 2),
        consumer_restarts=sum(w.count("Restarting consumer") for w in workers),
        refused_example=producer.refused[:1],
    )

    assert producer.errors == []
    assert len(ids) + len(producer.refused) == JOBS
    assert tally.drained, tally.describe()
    assert tally.lost == [], tally.describe()
    assert tally.running == []
    assert tally.duplicated == [], tally.describe()
    assert everything.duplicated == [], everything.describe()
    assert everything.running == [], everything.describe()
    for worker in workers:
        assert worker.process.poll() is None, worker.output
        assert worker.count("Restarting consumer") > 0, "the outage should have cut the consumers off"
