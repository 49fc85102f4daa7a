"""RabbitMQ stopped (stop_app, ~5 s down, start_app) while an application keeps committing jobs with
``enqueue(..., session=S)``: every commit returns at once, the entries wait in PostgreSQL, and once
RabbitMQ is back the workers' relays publish them: every committed job succeeds exactly once."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from jobs.settings import Settings
from producers import Client
from tests.chaos.conftest import Record
from tests.chaos.ledger import Ledger
from tests.chaos.services import restart_rabbitmq
from tests.helpers import WorkerProcess, eventually

pytestmark = pytest.mark.chaos

JOBS = 300
#: Seconds between two commits: 300 commits take ~10 s, across the outage.
PACE = 0.03
DOWN_FOR = 5.0


class Application(threading.Thread):
    """Commits ``JOBS`` transactions of one noop job each, as an application saving its orders would."""

    def __init__(self, client: Client, engine: Engine) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.engine = engine
        self.committed: list[str] = []
        self.errors: list[BaseException] = []
        #: Seconds the slowest commit took (it must not wait for RabbitMQ).
        self.slowest = 0.0
        #: When each commit returned (``time.monotonic()``, as an ``Outage``'s times).
        self.returned: list[float] = []
        self.finished_at: datetime | None = None

    def run(self) -> None:
        try:
            for _ in range(JOBS):
                began = time.monotonic()
                with Session(self.engine) as session, session.begin():
                    job = self.client.enqueue("noop", session=session, sleep=0.01)
                self.committed.append(job.id)
                self.returned.append(time.monotonic())
                self.slowest = max(self.slowest, self.returned[-1] - began)
                time.sleep(PACE)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            self.finished_at = datetime.now(UTC)


@pytest.mark.timeout(180)
def test_commits_go_on_while_rabbitmq_is_down_and_every_committed_job_runs_once(
    settings: Settings,
    client: Client,
    start_worker: WorkerProcess.Factory,
    ledger: Ledger,
    chaos_report: Record,
) -> None:
    workers = [start_worker("--processes", "2", "--threads", "4")]
    engine = create_engine(settings.database_url)
    application = Application(client, engine)
    try:
        application.start()
        eventually(lambda: len(application.committed) >= 60, timeout=30)
        outage = restart_rabbitmq(down_for=DOWN_FOR)
        application.join(timeout=90)
        assert not application.is_alive(), "the application hangs"
    finally:
        engine.dispose()

    ids = list(application.committed)
    tally = ledger.wait_drained(ids, timeout=90)
    chaos_report(
        **tally.summary(),
        fault=outage.as_dict(),
        recover_s=tally.recover_after(outage.restored_at),
        slowest_commit_s=round(application.slowest, 3),
        relay_warnings=sum(w.count("outbox relay") for w in workers),
    )

    assert application.errors == []
    assert len(ids) == JOBS
    # A commit that waited for RabbitMQ would wait until it is back: the first of the outage
    # about all of it. A loaded machine can stall one commit for a second, never for half of it.
    assert application.slowest < DOWN_FOR / 2, "a commit waited for RabbitMQ"
    assert outage.restored is not None
    during = [at for at in application.returned if outage.began < at < outage.restored]
    assert len(during) >= 20, f"only {len(during)} commits while RabbitMQ was down"
    assert tally.drained, tally.describe()
    assert tally.lost == [], tally.describe()
    assert tally.duplicated == [], tally.describe()
    for worker in workers:
        assert worker.process.poll() is None, worker.output
